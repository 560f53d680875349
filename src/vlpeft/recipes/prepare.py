"""A fine-tuning run's inputs, checked before any training or writing: the model's parts and text
room, the task and its options, the data size, the method's config (`check_cell`, without the
model's weights: shared with a study's check of its cells), then the subsets and their images
(`prepare` -> `Prepared`); the device (`resolve_device`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

import vlpeft
from vlpeft.data.subsets import resolve_size
from vlpeft.errors import UserError
from vlpeft.model.checkpoint import scene_seed_of
from vlpeft.peft.budget import method_config
from vlpeft.recipes.config import FinetuneConfig
from vlpeft.tasks import cached_task, check_paths, get_kind, get_task, task_options


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("finetune: device 'cuda' asked for, but no CUDA device is available")
    return torch.device(name)


@dataclass
class Checked:
    """A run's inputs checked without the model's weights (`check_cell`): what `prepare` and a study's
    `resolve_cells` both need."""

    task: Any  # vlpeft.tasks.TaskDef
    kind: Any  # vlpeft.tasks.TaskKind
    options: Any  # the kind's options (e.g. CaptionOptions)
    data: Any  # vlpeft.tasks.TaskData
    n: int  # training examples
    scene_seed: int
    resolved: dict  # vlpeft.peft.budget.resolve's record
    method_cfg: Any


class CellError(UserError):
    """A failed check of `check_cell`, with the `stage` it failed at, so a caller can name the input:
    "task" (its paths, options, data or the model parts it needs), "text" (the text room), "size" (the
    data size) or "method" (the method's config and budget)."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    try:
        yield
    except CellError:
        raise
    except UserError as e:
        raise CellError(name, str(e)) from None


def check_cell(cfg: FinetuneConfig, model_cfg, pretrain: dict | None, tokenizer, size_name: str | None = None
               ) -> Checked:
    """The one check of a run before anything is loaded onto a device or trained: the task (paths,
    options, the model parts its kind runs), the text room (`tokenizer` None: a checkpoint still to be
    pre-trained, only its positions are checked), the scene seed, the data size against the task's pool
    (`size_name` names it in the error, default "task T data_size"), the method's config at its budget
    (built here, once). Errors are CellErrors naming their stage."""
    task = get_task(cfg.task)
    kind = get_kind(task.kind)
    with _stage("task"):
        options = task_options(task, cfg.task_options, f"task {task.name}: task_options")
        check_paths(task, cfg.paths)
        for part in kind.parts:
            if not getattr(model_cfg, part, True):
                raise UserError(f"{cfg.model}: task {task.name} needs a {part}, which this checkpoint lacks")
    with _stage("text"):
        check_text_room(cfg.max_text_len, cfg.model, kind, options, model_cfg, tokenizer, f"task {task.name}")
    scene_seed = scene_seed_of(pretrain, cfg.scene_seed)
    with _stage("task"):
        data = cached_task(task.ref, scene_seed=scene_seed, paths=cfg.paths)
    with _stage("size"):
        n = resolve_size(cfg.data_size, len(data.train), size_name or f"task {task.name} data_size")
    with _stage("method"):
        resolved, method_cfg = method_config(model_cfg, cfg.method, cfg.budget, cfg.method_options, kind.parts,
                                             f"task {task.name}")
    return Checked(task, kind, options, data, n, scene_seed, resolved, method_cfg)


@dataclass
class Prepared(Checked):
    """Everything a run needs, validated and loaded before any training or writing: its `Checked`
    inputs, the loaded model and the drawn subsets."""

    loaded: Any  # vlpeft.model.checkpoint.LoadedModel
    train: list
    val: list
    test: list


def prepare(cfg: FinetuneConfig, loaded=None, check_images: bool = True) -> Prepared:
    """`check_cell` on the loaded model (loaded here if not given), the subsets drawn, and the images
    the run uses decoded once (`check_images`), so bad data stops the run before any training."""
    if loaded is None:
        loaded = vlpeft.load_model(cfg.model)
    c = check_cell(cfg, loaded.model.cfg, loaded.pretrain, loaded.tokenizer)
    train, val, test = c.data.select(c.n, cfg.subset_seed, cfg.val_limit, cfg.test_limit)
    if check_images:
        c.data.check_images([ex.image_id for ex in train + val + test])
    return Prepared(**vars(c), loaded=loaded, train=train, val=val, test=test)


def check_text_room(max_text_len: int, model: str, kind, options, model_cfg, tokenizer, where: str) -> None:
    """Before any work: the text length fits the checkpoint's positions, and what the kind gives the
    decoder before its target (a caption prompt: [DEC] prompt) leaves room for at least 2 target
    tokens, in training (max_text_len) and in generation (the positions). `tokenizer` None (a
    checkpoint not made yet): the positions only. `where` prefixes the room's error."""
    positions = model_cfg.text.max_positions
    if max_text_len > positions:
        raise UserError(f"max_text_len {max_text_len}: more than the checkpoint's {positions} text positions "
                        f"({model})")
    if tokenizer is None:
        return
    given = kind.given_tokens(tokenizer, options)
    room = min(max_text_len, positions) - 1 - given - 1  # [DEC]/[CLS], the given tokens, [SEP]
    if given and room < 2:
        raise UserError(f"{where}: the prompt is {given} tokens, which leaves {max(room, 0)} of the "
                        f"{min(max_text_len, positions)} text positions for the caption; shorten it")
