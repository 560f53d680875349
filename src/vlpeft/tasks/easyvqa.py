"""Built-in tasks over easy-VQA (the `easy-vqa` pip package: coloured shapes, unlike the scenes).

The package has train and test only: val = 10% of the train *images*, chosen by a fixed seeded
permutation, with all their questions (the caption and VQA tasks carve the same images). Image ids
are prefixed by the package split ("train-12", "test-12"), whose numbers overlap. Captions are made
from the labels (`vlpeft.data.easyvqa.easy_vqa_captions`).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from vlpeft.data.easyvqa import easy_vqa_captions, load_easy_vqa
from vlpeft.data.images import ImageCache, decode_file
from vlpeft.tasks.base import LoadContext, TaskData, TaskDef, get_kind, register_task
from vlpeft.tasks.splits import by_image, image_ids, image_sources, seeded_image_split, split_sizes

EASYVQA_VAL_FRACTION = 0.1
SPLIT_SEED = 0  # fixed: the val carve is part of the task's definition


def load_easyvqa(task: TaskDef, ctx: LoadContext, loader) -> TaskData:
    """The splits of an easy-VQA task; `loader(package split)` reads its examples (questions or captions)."""
    from importlib.metadata import PackageNotFoundError, version

    from vlpeft.data.easyvqa import easy_vqa_image_paths

    def prefixed(examples: list, split: str) -> list:
        return [replace(e, image_id=f"{split}-{e.image_id}") for e in examples]

    package_train = prefixed(loader("train"), "train")
    test = prefixed(loader("test"), "test")
    train_images = [f"train-{i}" for i in easy_vqa_image_paths("train")]  # every image, captioned or not
    n_val = round(EASYVQA_VAL_FRACTION * len(train_images))
    val_images, kept_images = seeded_image_split(train_images, n_val, SPLIT_SEED)
    splits = {"train": by_image(package_train, kept_images), "val": by_image(package_train, val_images), "test": test}
    answers = get_kind(task.kind).answer_list(splits["train"] + splits["val"])
    try:
        package_version = version("easy-vqa")
    except PackageNotFoundError:  # pragma: no cover - loaders above would have failed
        package_version = "unknown"
    details: dict[str, Any] = {
        "task": task.name,
        "source": f"easy-vqa {package_version} (pip package)",
        "splits": {
            "train": f"package train, less the val images ({len(kept_images)} images)",
            "val": f"{EASYVQA_VAL_FRACTION:.0%} of the package's train images ({len(val_images)}), "
                   f"seeded permutation (seed {SPLIT_SEED}), with all their examples",
            "test": "package test",
        },
        "split_seed": SPLIT_SEED,
        "image_ids": "'<package split>-<package image id>'",
        "sizes": split_sizes(splits),
        "answers": len(answers),
    }
    n_images = len(train_images) + len(easy_vqa_image_paths("test"))
    details["images_without_examples_dropped"] = n_images - len(image_ids(package_train + test))
    sources = image_sources(splits["train"] + splits["val"] + splits["test"], task.name)
    return TaskData(task, splits["train"], splits["val"], splits["test"], answers,
                    ImageCache(sources, decode_file), f"easy-vqa {package_version}", details)


register_task(TaskDef(
    "easyvqa-caption", "caption", "easyvqa", "new data, same task",
    "Captioning easy-VQA images (colours and shapes unseen in pre-training), captions from labels.",
    functools.partial(load_easyvqa, loader=easy_vqa_captions),
))
register_task(TaskDef(
    "easyvqa-vqa", "vqa", "easyvqa", "new data, new task",
    "easy-VQA questions (colour, shape, yes/no) about images unlike the pre-training scenes.",
    functools.partial(load_easyvqa, loader=load_easy_vqa),
))
