"""The task protocol: what a task *is* (`TaskDef`), what each kind of task *does* (`TaskKind`), a
loaded task (`TaskData`), and the two registries (kinds, built-in tasks).

A kind (captioning, VQA) owns everything that differs between kinds: the model parts it runs, how
a training batch is built, the loss, prediction, scoring, its baselines, the stratum of an example
for stratified data subsets, and its own options (caption prompt, beams, VQA inference mode),
validated by the kind. Recipes, the study runner and the analysis call these functions and never
branch on a kind's name.

A task names its kind and a loader: built-in tasks are registered by one module per data source
(`tasks/scenes.py`, `easyvqa.py`, `coco.py`, `vqav2.py`); a user's own data is a task file read by
`tasks/files.py`. Every loader returns a `TaskData` with three splits that share no image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vlpeft.data.records import CaptionExample, VQAExample
from vlpeft.errors import UserError, did_you_mean
from vlpeft.validate import from_mapping

Example = CaptionExample | VQAExample
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Batch:
    """A training batch: `pixels` (B, 3, S, S), or None when the image states come from the feature
    cache; kinds add their text tensors. `to(device)` moves every tensor (the one place that does)."""

    image_ids: tuple[str, ...]
    pixels: torch.Tensor | None

    def to(self, device: torch.device | str) -> "Batch":
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)


@dataclass(frozen=True)
class TaskKind:
    """One kind of downstream task. Signatures (`data` is a TaskData, `loaded` a LoadedModel,
    `opts` an instance of `options`):

    batch(examples, data, loaded, opts, max_len, rng, pixels) -> Batch
    loss(model, batch, label_smoothing, image_states) -> scalar tensor (image_states (B, N, D) or None)
    predict(model, examples, data, loaded, opts, max_len, encode_images) -> one string per example
    score(predictions, examples) -> dict holding `metric` and secondary scores
    baselines(data, examples) -> dict of reference scores any model should clear (may be empty)
    stratum(example) -> hashable, the key data subsets keep in proportion (None: plain nested subsets)
    candidates(examples, limit) -> the candidate answers, most frequent first (None: the kind has none)
    from_rows(records, rows) -> examples from a user's table rows (`fields`: the row fields it reads,
        besides image, image_id and split; `rows` is a tasks.rows.Rows)
    describe(examples) -> dict of per-split figures for `vlpeft tasks check` (with "per_example", what
        is counted per example, e.g. "captions per image", and "per_example_range", [min, max])
    ceiling: the metric's largest value (VQA accuracy: 100), or None where it has no useful one
        (CIDEr-D); bounds the claims' margin before any run (`study --dry-run`'s noise check)
    given_tokens(tok, opts) -> how many tokens the kind puts before the decoder's target (a caption
        prompt); checked against the text length before any work
    held_out(examples) -> (predictions, examples): each example's first reference as the prediction,
        the examples keeping only their other references (those with one reference left out): scored
        with `score`, the references' agreement, a score within reach where the metric has no ceiling
        (`study --dry-run` sizes δ with it on a task the frozen model cannot do yet); None: not defined
    """

    name: str
    metric: str
    parts: tuple[str, ...]
    options: type
    example: type
    batch: Callable[..., Batch]
    loss: Callable[..., torch.Tensor]
    predict: Callable[..., list[str]]
    score: Callable[..., dict[str, Any]]
    baselines: Callable[..., dict[str, Any]]
    describe: Callable[..., dict[str, Any]]
    stratum: Callable[[Any], Any] | None
    candidates: Callable[..., tuple[str, ...]] | None
    fields: tuple[str, ...]
    from_rows: Callable[..., list]
    summary: str
    ceiling: float | None = None
    given_tokens: Callable[[Any, Any], int] = lambda tok, opts: 0
    held_out: Callable[[Sequence[Any]], tuple[list[str], list]] | None = None

    def answer_list(self, examples: Sequence[Any], limit: int | None = None) -> tuple[str, ...]:
        """The candidate answers of `examples` (train + val), or () for a kind without them."""
        return self.candidates(examples, limit) if self.candidates is not None else ()


@dataclass(frozen=True)
class TaskDef:
    """What a task is: its name, kind, data source and loader, relation to pre-training, and the
    paths and option defaults it takes."""

    name: str = field(metadata={"help": "task name, as written in a study spec and in cell ids"})
    kind: str = field(metadata={"help": "a registered kind: 'caption' or 'vqa'"})
    source: str = field(metadata={"help": "where the data comes from (scenes, easyvqa, coco, vqav2, or a file format)"})
    relation: str = field(metadata={"help": "relation to the pre-training, e.g. 'same data, same task'"})
    description: str = field(metadata={"help": "one sentence for reports"})
    load: Callable[["TaskDef", "LoadContext"], "TaskData"] = field(
        repr=False, metadata={"help": "the loader: (task, context) -> TaskData"})
    paths: tuple[str, ...] = field(default=(), metadata={"help": "keys the task needs in `paths`"})
    optional_paths: tuple[str, ...] = field(default=(), metadata={"help": "keys the task may take in `paths`"})
    path_help: dict = field(default_factory=dict, metadata={"help": "path key -> what file it names"})
    options: dict = field(default_factory=dict, metadata={"help": "defaults of the kind's options for this task"})
    file: str | None = field(default=None, metadata={"help": "the task file it was read from (None: built in)"})
    settings: dict = field(default_factory=dict, metadata={"help": "the task file's data settings (JSON-able)"})

    @property
    def metric(self) -> str:
        return get_kind(self.kind).metric

    @property
    def ref(self) -> str:
        """How a config names this task: the built-in name, or the task file's path."""
        return self.file or self.name


@dataclass(frozen=True)
class LoadContext:
    """What a loader may need beyond the task itself."""

    paths: dict[str, str] = field(default_factory=dict)  # the task's path keys -> files
    scene_seed: int = 0  # the synthetic-scene generator seed of the checkpoint's pre-training


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its three splits, VQA candidate answers, images, and how it was made."""

    task: TaskDef = field(metadata={"help": "the task's definition"})
    train: list = field(metadata={"help": "training examples"})
    val: list = field(metadata={"help": "validation examples (model selection)"})
    test: list = field(metadata={"help": "test examples (reported figures)"})
    answers: tuple[str, ...] = field(metadata={"help": "VQA candidate answers, most frequent first; () for captions"})
    image: Callable[[str], np.ndarray] = field(
        repr=False,
        metadata={"help": "image_id -> read-only uint8 (H, W, 3), decoded once and cached (data.images.ImageCache)"},
    )
    image_source: str = field(metadata={"help": "identifies the images behind the ids (the feature cache's key); "
                                                "tasks over the same images share it"})
    details: dict[str, Any] = field(metadata={"help": "JSON-able record of sources, seeds, split rules and sizes"})
    submission: list = field(
        default_factory=list, metadata={"help": "questions without public answers (VQAv2 test-dev), if given"})
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def kind(self) -> TaskKind:
        return get_kind(self.task.kind)

    def split(self, name: str) -> list:
        if name not in SPLIT_NAMES:
            raise UserError(f"task {self.task.name}: unknown split {name!r}{did_you_mean(name, SPLIT_NAMES)}")
        return getattr(self, name)

    def train_strata(self) -> list | None:
        """The kind's stratum of every training example (None when the kind has none), computed once
        per loaded task: a study worker draws many subsets of one task."""
        if "strata" not in self._memo:
            stratum = self.kind.stratum
            self._memo["strata"] = None if stratum is None else [stratum(ex) for ex in self.train]
        return self._memo["strata"]

    def select(self, n: int, subset_seed: int, val_limit: int, test_limit: int) -> tuple[list, list, list]:
        """(train, val, test) of one run: n training examples (the nested subset of `subset_seed`,
        kept stratified by the kind's stratum when it has one), the first `val_limit` validation and
        `test_limit` test examples of a fixed draw (0 = all)."""
        from vlpeft.data.subsets import nested_subset, stratified_nested_subset

        strata = self.train_strata()
        if strata is not None:
            chosen = stratified_nested_subset(range(len(self.train)), n, subset_seed, key=strata.__getitem__)
            train = [self.train[i] for i in chosen]
        else:
            train = nested_subset(self.train, n, subset_seed)
        val = nested_subset(self.val, min(val_limit or len(self.val), len(self.val)), 0)
        test = self.test if not test_limit else nested_subset(self.test, min(test_limit, len(self.test)), 0)
        return train, val, test

    def check_images(self, image_ids: Sequence[str]) -> None:
        """Decode every image of `image_ids` now (they stay cached): a missing or corrupt file is a
        one-line UserError before any training, not a crash in the middle of it."""
        for image_id in dict.fromkeys(image_ids):
            self.image(image_id)


def pixel_encoder(model, data: TaskData, loaded):
    """image ids -> image states (B, N, D): decode, preprocess, move to the model's device, encode."""
    from vlpeft.data.images import preprocess

    def encode(ids: Sequence[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        return model.encode_image(preprocess([data.image(i) for i in ids], loaded.preprocess).to(device))

    return encode


# ---------------------------------------------------------------------------------------------
# Registries

KINDS: dict[str, TaskKind] = {}
TASKS: dict[str, TaskDef] = {}


def register_kind(kind: TaskKind) -> TaskKind:
    if kind.name in KINDS:
        raise ValueError(f"task kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> TaskKind:
    import vlpeft.tasks  # noqa: F401  (registers the kinds and the built-in tasks)

    if name not in KINDS:
        raise UserError(f"unknown task kind {name!r}{did_you_mean(name, KINDS)}; kinds: {', '.join(KINDS)}")
    return KINDS[name]


def register_task(task: TaskDef) -> TaskDef:
    """Add a built-in task; a second task of the same name is refused."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    if task.kind not in KINDS:
        raise ValueError(f"task {task.name!r}: unknown kind {task.kind!r}")
    TASKS[task.name] = task
    return task


def task_options(task: TaskDef, given: dict | None = None, where: str | None = None) -> Any:
    """The kind's options for `task`: its options dataclass from the task's defaults updated by
    `given` (e.g. a run's `task_options`), validated by the kind."""
    kind = get_kind(task.kind)
    return from_mapping(kind.options, {**task.options, **(given or {})}, where or f"task {task.name} options")


def task_paths(task: TaskDef, paths: dict | None) -> dict[str, str]:
    """The entries of a (study-wide) `paths` mapping that `task` takes: each task takes the keys it knows."""
    known = task.paths + task.optional_paths
    return {str(k): str(v) for k, v in (paths or {}).items() if k in known}


def check_paths(task: TaskDef, paths: dict | None) -> dict[str, str]:
    """`paths` as given for `task` alone: unknown keys and missing required keys are UserErrors."""
    paths = {str(k): str(v) for k, v in (paths or {}).items()}
    allowed = task.paths + task.optional_paths
    for key in paths:
        if key not in allowed:
            if not allowed:
                raise UserError(f"task {task.name}: takes no paths, got {sorted(paths)}")
            raise UserError(
                f"task {task.name}: unknown path key {key!r}{did_you_mean(key, allowed)}; it takes {list(allowed)}")
    for key in task.paths:
        if key not in paths:
            help_ = task.path_help.get(key)
            raise UserError(f"task {task.name}: paths lacks {key!r}{f' ({help_})' if help_ else ''}")
    return paths
