"""The downstream tasks a study fine-tunes on, and how each is split into train / val / test.

Tian et al. compare a downstream task consistent with pre-training with one that is not. Here:

| task              | data                                   | relation to the tiny BLIP's pre-training |
|-------------------|----------------------------------------|------------------------------------------|
| scenes-caption    | held-out synthetic scenes              | same data, same task                     |
| scenes-vqa        | questions about those scenes           | same data, new task                      |
| easyvqa-caption   | easy-VQA images, label-derived captions| new data, same task                      |
| easyvqa-vqa       | easy-VQA questions                     | new data, new task                       |
| coco-caption      | COCO, Karpathy split (files you give)  | same data, same task (for a real BLIP)   |
| vqav2             | VQAv2 (files you give)                 | same images, new task (for a real BLIP)  |

Splits (no image is ever in two splits of a task):
- scenes: the tiny BLIP pre-trains on stream "train" of the generator with seed `scene_seed`;
  downstream train = stream "val" scenes [0, 4000), val = stream "val" [4000, 4500),
  test = stream "test" [0, 1000). VQA examples are every question of those scenes. Image ids are
  scene ids; `image_path` is "" (pixels come from the generator through `TaskData.image`).
- easy-VQA: the package has train and test only; val = 10% of the train *images*, chosen by a
  fixed seeded permutation, with all their questions (caption and VQA tasks carve the same images).
  Image ids are prefixed by the package split ("train-12", "test-12"), whose numbers overlap.
- COCO: Karpathy train (+restval) / val / test.
- VQAv2: official train for train; the official val split in halves *by image* (seeded) for val
  and test, because test-dev answers are not public. Optional test-dev questions come back in
  `TaskData.submission`, for a file to send to the evaluation server.

VQA candidate answers (`TaskData.answers`, what BLIP's rank inference scores): every distinct
normalised answer of train + val for the small tasks; for VQAv2 the 3,128 most frequent normalised
answers of train (the usual list size), counting every human answer. Most frequent first, ties
alphabetical.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vlpeft.data.records import CaptionExample, VQAExample
from vlpeft.errors import UserError, did_you_mean
from vlpeft.tasks.metrics import normalize_vqa_answer

Example = CaptionExample | VQAExample

SPLIT_NAMES = ("train", "val", "test")
SCENES_TRAIN = 4000  # stream "val" [0, 4000)
SCENES_VAL = 500  # stream "val" [4000, 4500)
SCENES_TEST = 1000  # stream "test" [0, 1000)
EASYVQA_VAL_FRACTION = 0.1
SPLIT_SEED = 0  # fixed: the val/test carve of easy-VQA and VQAv2 is part of the task's definition
VQAV2_ANSWER_LIST_SIZE = 3128
IMAGE_CACHE_BYTES = 2 * 1024**3  # decoded images kept in memory; every built-in task fits (< 100 MB)


@dataclass(frozen=True)
class TaskInfo:
    """What a task is: its kind, data, relation to pre-training and primary metric."""

    name: str = field(metadata={"help": "task name, as written in a study spec"})
    kind: str = field(metadata={"help": "'caption' or 'vqa'"})
    data: str = field(metadata={"help": "'scenes', 'easyvqa', 'coco' or 'vqav2'"})
    relation: str = field(metadata={"help": "relation to the pre-training, e.g. 'same data, same task'"})
    metric: str = field(metadata={"help": "primary metric: 'cider_d' (captions) or 'vqa_accuracy'"})
    description: str = field(metadata={"help": "one sentence for reports"})
    paths: tuple[str, ...] = field(default=(), metadata={"help": "keys the task needs in `paths`"})
    optional_paths: tuple[str, ...] = field(default=(), metadata={"help": "keys the task may take in `paths`"})


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its three splits, VQA candidate answers, images, and how it was made."""

    info: TaskInfo = field(metadata={"help": "the task's TaskInfo"})
    train: list[Example] = field(metadata={"help": "training examples"})
    val: list[Example] = field(metadata={"help": "validation examples (model selection)"})
    test: list[Example] = field(metadata={"help": "test examples (reported figures)"})
    answers: tuple[str, ...] = field(metadata={"help": "VQA candidate answers, most frequent first; () for captions"})
    image: Callable[[str], np.ndarray] = field(
        repr=False, metadata={"help": "image_id -> read-only uint8 (H, W, 3), decoded once and cached"}
    )
    details: dict[str, Any] = field(metadata={"help": "JSON-able record of sources, seeds, split rules and sizes"})
    submission: list[Example] = field(
        default_factory=list, metadata={"help": "questions without public answers (VQAv2 test-dev), if given"}
    )

    def split(self, name: str) -> list[Example]:
        if name not in SPLIT_NAMES:
            raise UserError(f"task {self.info.name}: unknown split {name!r}{did_you_mean(name, SPLIT_NAMES)}")
        return getattr(self, name)


_PATH_HELP = {
    "karpathy_json": "Karpathy's dataset_coco.json, or a folder holding LAVIS coco_karpathy_{train,val,test}.json",
    "image_root": "the folder holding the COCO images",
    "train_questions": "v2_OpenEnded_mscoco_train2014_questions.json",
    "train_annotations": "v2_mscoco_train2014_annotations.json",
    "val_questions": "v2_OpenEnded_mscoco_val2014_questions.json",
    "val_annotations": "v2_mscoco_val2014_annotations.json",
    "test_questions": "v2_OpenEnded_mscoco_test-dev2015_questions.json (optional)",
}

TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in (
        TaskInfo(
            "scenes-caption", "caption", "scenes", "same data, same task", "cider_d",
            "Captioning held-out synthetic scenes, the data and task of the tiny BLIP's pre-training.",
        ),
        TaskInfo(
            "scenes-vqa", "vqa", "scenes", "same data, new task", "vqa_accuracy",
            "Questions about held-out synthetic scenes (colour, shape, count, existence, spatial).",
        ),
        TaskInfo(
            "easyvqa-caption", "caption", "easyvqa", "new data, same task", "cider_d",
            "Captioning easy-VQA images (colours and shapes unseen in pre-training), captions from labels.",
        ),
        TaskInfo(
            "easyvqa-vqa", "vqa", "easyvqa", "new data, new task", "vqa_accuracy",
            "easy-VQA questions (colour, shape, yes/no) about images unlike the pre-training scenes.",
        ),
        TaskInfo(
            "coco-caption", "caption", "coco", "same data, same task", "cider_d",
            "COCO captioning on the Karpathy split, as in BLIP and Tian et al.",
            paths=("karpathy_json", "image_root"),
        ),
        TaskInfo(
            "vqav2", "vqa", "vqav2", "same images, new task", "vqa_accuracy",
            "VQAv2: official train; official val halved by image into val and test.",
            paths=("train_questions", "train_annotations", "val_questions", "val_annotations", "image_root"),
            optional_paths=("test_questions",),
        ),
    )
}


def task_info(name: str) -> TaskInfo:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}{did_you_mean(name, TASKS)}; built-in tasks: {', '.join(TASKS)}")
    return TASKS[name]


def load_task(name: str, *, scene_seed: int = 0, paths: dict[str, str] | None = None) -> TaskData:
    """Load a task by name: its splits, candidate answers, image reader and a record of how.

    `scene_seed` is the synthetic-scene generator seed of the pre-training (scenes tasks only);
    `paths` names the files of the coco-caption and vqav2 tasks (see TASKS[name].paths)."""
    info = task_info(name)
    given = _check_paths(info, paths)
    start = time.perf_counter()
    if info.data == "scenes":
        data = _load_scenes(info, scene_seed)
    elif info.data == "easyvqa":
        data = _load_easyvqa(info)
    elif info.data == "coco":
        data = _load_coco(info, given)
    else:
        data = _load_vqav2(info, given)
    for split in SPLIT_NAMES:
        if not data.split(split):
            raise UserError(f"task {name}: the {split} split is empty")
    data.details["load_seconds"] = round(time.perf_counter() - start, 3)
    return data


def _check_paths(info: TaskInfo, paths: dict[str, str] | None) -> dict[str, str]:
    paths = {str(k): str(v) for k, v in (paths or {}).items()}
    allowed = info.paths + info.optional_paths
    for key in paths:
        if key not in allowed:
            if not allowed:
                raise UserError(f"task {info.name}: takes no paths, got {sorted(paths)}")
            raise UserError(
                f"task {info.name}: unknown path key {key!r}{did_you_mean(key, allowed)}; it takes {list(allowed)}"
            )
    for key in info.paths:
        if key not in paths:
            raise UserError(f"task {info.name}: paths lacks {key!r} ({_PATH_HELP[key]})")
    return paths


# ---------------------------------------------------------------------------------------------
# Images


class ImageCache:
    """image_id -> read-only uint8 (H, W, 3), decoded by `decode(source)` on first use and kept;
    beyond `max_bytes` the least recently used images are dropped (and decoded again if asked)."""

    def __init__(
        self, sources: dict[str, Any], decode: Callable[[Any], np.ndarray], max_bytes: int = IMAGE_CACHE_BYTES
    ):
        self._sources = sources
        self._decode = decode
        self._max_bytes = max_bytes
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._sources

    def __len__(self) -> int:
        return len(self._sources)

    def __call__(self, image_id: str) -> np.ndarray:
        with self._lock:
            if image_id in self._cache:
                self._cache.move_to_end(image_id)
                return self._cache[image_id]
        if image_id not in self._sources:
            raise KeyError(f"no image with id {image_id!r} in this task")
        array = np.ascontiguousarray(self._decode(self._sources[image_id]), dtype=np.uint8)
        array.flags.writeable = False  # shared by every caller: nobody may draw on it
        with self._lock:
            if image_id not in self._cache:
                self._cache[image_id] = array
                self._bytes += array.nbytes
                while self._bytes > self._max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._bytes -= old.nbytes
        return array


def _decode_file(path: str) -> np.ndarray:
    from vlpeft.data.images import load_image

    return np.asarray(load_image(path))  # (H, W, 3) uint8


def _image_sources(examples: Iterable[Example], task: str) -> dict[str, str]:
    """image_id -> image_path over all splits; one id must not name two files."""
    sources: dict[str, str] = {}
    for e in examples:
        known = sources.setdefault(e.image_id, e.image_path)
        if known != e.image_path:
            raise UserError(f"task {task}: image id {e.image_id} names two files, {known} and {e.image_path}")
    return sources


# ---------------------------------------------------------------------------------------------
# Shared helpers


def candidate_answers(examples: Iterable[VQAExample], limit: int | None = None) -> tuple[str, ...]:
    """Distinct normalised answers, most frequent first (every human answer counts), ties alphabetical."""
    counts = Counter(normalize_vqa_answer(a) for e in examples for a in e.answers)
    counts.pop("", None)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return tuple(ranked[:limit] if limit is not None else ranked)


def _answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def _split_sizes(splits: dict[str, list[Example]]) -> dict[str, dict[str, int]]:
    return {k: {"examples": len(v), "images": len({e.image_id for e in v})} for k, v in splits.items()}


def _seeded_image_split(image_ids: Sequence[str], n_first: int, seed: int) -> tuple[set[str], set[str]]:
    """(n_first images, the rest), from a seeded permutation of `image_ids` (given in a fixed order)."""
    perm = np.random.default_rng(np.random.SeedSequence([seed, len(image_ids)])).permutation(len(image_ids))
    first = {image_ids[i] for i in perm[:n_first].tolist()}
    return first, set(image_ids) - first


def _by_image(examples: Iterable[Example], image_ids: set[str]) -> list[Example]:
    return [e for e in examples if e.image_id in image_ids]


def _numeric_first(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))


# ---------------------------------------------------------------------------------------------
# Synthetic scenes


def _load_scenes(info: TaskInfo, seed: int) -> TaskData:
    from vlpeft.data.scenes import generate_scenes, scenes_recipe

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"task {info.name}: scene_seed must be an integer >= 0, got {seed!r}")
    val_stream = generate_scenes(SCENES_TRAIN + SCENES_VAL, seed=int(seed), split="val")
    scenes = {
        "train": val_stream[:SCENES_TRAIN],
        "val": val_stream[SCENES_TRAIN:],
        "test": generate_scenes(SCENES_TEST, seed=int(seed), split="test"),
    }
    splits: dict[str, list[Example]] = {}
    for split, chunk in scenes.items():
        if info.kind == "caption":
            splits[split] = [CaptionExample(s.scene_id, "", s.captions) for s in chunk]
        else:
            splits[split] = [
                VQAExample(
                    question_id=f"{s.scene_id}-q{k}", image_id=s.scene_id, image_path="", question=qa.question,
                    answers=(qa.answer,), question_type=qa.qtype, answer_type=_answer_type(qa.answer),
                )
                for s in chunk
                for k, qa in enumerate(s.qa)
            ]
    by_id = {s.scene_id: s for chunk in scenes.values() for s in chunk}
    answers = candidate_answers(splits["train"] + splits["val"]) if info.kind == "vqa" else ()
    details = {
        "task": info.name,
        "source": "vlpeft.data.scenes (synthetic, generated on load)",
        "scene_seed": int(seed),
        "splits": {
            "train": f"stream 'val', scenes [0, {SCENES_TRAIN})",
            "val": f"stream 'val', scenes [{SCENES_TRAIN}, {SCENES_TRAIN + SCENES_VAL})",
            "test": f"stream 'test', scenes [0, {SCENES_TEST})",
            "pretraining": "stream 'train' (never used here)",
        },
        "sizes": _split_sizes(splits),
        "answers": len(answers),
        "generator": scenes_recipe(int(seed), {"val": SCENES_TRAIN + SCENES_VAL, "test": SCENES_TEST}),
    }
    return TaskData(info, splits["train"], splits["val"], splits["test"], answers,
                    ImageCache(by_id, lambda scene: scene.image), details)


# ---------------------------------------------------------------------------------------------
# easy-VQA


def _load_easyvqa(info: TaskInfo) -> TaskData:
    from importlib.metadata import PackageNotFoundError, version

    from vlpeft.data.easyvqa import easy_vqa_captions, easy_vqa_image_paths, load_easy_vqa

    def prefixed(examples: list[Example], split: str) -> list[Example]:
        return [replace(e, image_id=f"{split}-{e.image_id}") for e in examples]

    loader = load_easy_vqa if info.kind == "vqa" else easy_vqa_captions
    package_train = prefixed(loader("train"), "train")
    test = prefixed(loader("test"), "test")
    train_images = [f"train-{i}" for i in easy_vqa_image_paths("train")]  # every image, captioned or not
    n_val = round(EASYVQA_VAL_FRACTION * len(train_images))
    val_images, kept_images = _seeded_image_split(train_images, n_val, SPLIT_SEED)
    splits = {"train": _by_image(package_train, kept_images), "val": _by_image(package_train, val_images), "test": test}
    answers = candidate_answers(splits["train"] + splits["val"]) if info.kind == "vqa" else ()
    try:
        package_version = version("easy-vqa")
    except PackageNotFoundError:  # pragma: no cover - loaders above would have failed
        package_version = "unknown"
    details: dict[str, Any] = {
        "task": info.name,
        "source": f"easy-vqa {package_version} (pip package)",
        "splits": {
            "train": f"package train, less the val images ({len(kept_images)} images)",
            "val": f"{EASYVQA_VAL_FRACTION:.0%} of the package's train images ({len(val_images)}), "
                   f"seeded permutation (seed {SPLIT_SEED}), with all their examples",
            "test": "package test",
        },
        "split_seed": SPLIT_SEED,
        "image_ids": "'<package split>-<package image id>'",
        "sizes": _split_sizes(splits),
        "answers": len(answers),
    }
    if info.kind == "caption":
        n_images = len(train_images) + len(easy_vqa_image_paths("test"))
        details["images_without_captions_dropped"] = n_images - len(package_train) - len(test)
    sources = _image_sources(splits["train"] + splits["val"] + splits["test"], info.name)
    return TaskData(info, splits["train"], splits["val"], splits["test"], answers,
                    ImageCache(sources, _decode_file), details)


# ---------------------------------------------------------------------------------------------
# COCO Karpathy


def _load_coco(info: TaskInfo, paths: dict[str, str]) -> TaskData:
    from vlpeft.data.coco import load_coco_karpathy

    source, root = Path(paths["karpathy_json"]), paths["image_root"]
    if source.is_dir():
        files = {split: source / f"coco_karpathy_{split}.json" for split in SPLIT_NAMES}
        splits = {split: load_coco_karpathy(files[split], root, split) for split in SPLIT_NAMES}
        layout = f"LAVIS files {', '.join(str(f) for f in files.values())}"
    else:
        splits = {split: load_coco_karpathy(source, root, split) for split in SPLIT_NAMES}
        layout = f"Karpathy file {source}"
    sources = _image_sources(splits["train"] + splits["val"] + splits["test"], info.name)
    details = {
        "task": info.name,
        "source": layout,
        "image_root": root,
        "splits": {"train": "Karpathy train + restval", "val": "Karpathy val", "test": "Karpathy test"},
        "sizes": _split_sizes(splits),
    }
    images = ImageCache(sources, _decode_file)
    return TaskData(info, splits["train"], splits["val"], splits["test"], (), images, details)


# ---------------------------------------------------------------------------------------------
# VQAv2


def _load_vqav2(info: TaskInfo, paths: dict[str, str]) -> TaskData:
    from vlpeft.data.vqav2 import load_vqav2

    root = paths["image_root"]
    train = load_vqav2(paths["train_questions"], root, paths["train_annotations"])
    official_val = load_vqav2(paths["val_questions"], root, paths["val_annotations"])
    overlap = {e.image_id for e in train} & {e.image_id for e in official_val}
    if overlap:
        raise UserError(
            f"{paths['val_questions']}: {len(overlap)} images are also in {paths['train_questions']} "
            f"(e.g. {sorted(overlap)[0]}); give the official train and val files"
        )
    val_images = _numeric_first({e.image_id for e in official_val})
    half, other_half = _seeded_image_split(val_images, len(val_images) // 2, SPLIT_SEED)
    splits = {"train": train, "val": _by_image(official_val, half), "test": _by_image(official_val, other_half)}
    submission = load_vqav2(paths["test_questions"], root) if "test_questions" in paths else []
    answers = candidate_answers(train, limit=VQAV2_ANSWER_LIST_SIZE)
    sources = _image_sources(splits["train"] + splits["val"] + splits["test"] + submission, info.name)
    details = {
        "task": info.name,
        "source": {k: paths[k] for k in sorted(paths)},
        "splits": {
            "train": "official train",
            "val": f"half of the official val images ({len(half)}), seeded permutation (seed {SPLIT_SEED})",
            "test": f"the other half ({len(other_half)} images): test-dev answers are not public",
            "submission": f"{len(submission)} questions without answers" if submission else "none given",
        },
        "split_seed": SPLIT_SEED,
        "sizes": _split_sizes(splits),
        "answers": f"{len(answers)} most frequent normalised answers of train (at most {VQAV2_ANSWER_LIST_SIZE})",
    }
    return TaskData(info, splits["train"], splits["val"], splits["test"], answers,
                    ImageCache(sources, _decode_file), details, submission)


def image_ids(examples: Iterable[Example]) -> set[str]:
    """The distinct image ids of `examples`."""
    return {e.image_id for e in examples}
