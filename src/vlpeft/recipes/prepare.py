"""A fine-tuning run's inputs, checked before any training or writing: the device, the model and its
text room, the task and its options, the subsets, the method's config (`prepare` -> `Prepared`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
class Prepared:
    """Everything a run needs, validated and loaded before any training or writing."""

    loaded: Any  # vlpeft.model.checkpoint.LoadedModel
    task: Any  # vlpeft.tasks.TaskDef
    kind: Any  # vlpeft.tasks.TaskKind
    data: Any  # vlpeft.tasks.TaskData
    options: Any  # the kind's options (e.g. CaptionOptions)
    train: list
    val: list
    test: list
    method_cfg: Any
    resolved: dict
    scene_seed: int


def prepare(cfg: FinetuneConfig, loaded=None, check_images: bool = True) -> Prepared:
    """Model, task, options, subsets and method, each checked; the images the run uses decoded once
    (`check_images`), so bad data stops the run before any training."""
    task = get_task(cfg.task)
    kind = get_kind(task.kind)
    options = task_options(task, cfg.task_options, f"task {task.name}: task_options")
    check_paths(task, cfg.paths)
    if loaded is None:
        loaded = vlpeft.load_model(cfg.model)
    model = loaded.model
    for part in kind.parts:
        if getattr(model, part) is None:
            raise UserError(f"{cfg.model}: task {task.name} needs a {part}, which this checkpoint lacks")
    check_text(cfg, kind, options, loaded, task.name)
    scene_seed = scene_seed_of(loaded.pretrain, cfg.scene_seed)
    data = cached_task(task.ref, scene_seed=scene_seed, paths=cfg.paths)
    n = resolve_size(cfg.data_size, len(data.train), f"task {task.name} data_size")
    train, val, test = data.select(n, cfg.subset_seed, cfg.val_limit, cfg.test_limit)
    resolved, method_cfg = method_config(model.cfg, cfg.method, cfg.budget, cfg.method_options, kind.parts,
                                         f"task {task.name}")
    if check_images:
        data.check_images([ex.image_id for ex in train + val + test])
    return Prepared(loaded, task, kind, data, options, train, val, test, method_cfg, resolved, scene_seed)


def check_text(cfg: FinetuneConfig, kind, options, loaded, task: str) -> None:
    """Before any work: the text length fits the checkpoint's positions, and what the kind gives the
    decoder before its target (a caption prompt: [DEC] prompt) leaves room for at least 2 target
    tokens, in training (max_text_len) and in generation (the positions)."""
    check_text_room(cfg.max_text_len, cfg.model, kind, options, loaded, f"task {task}")


def check_text_room(max_text_len: int, model: str, kind, options, loaded, where: str) -> None:
    """check_text's rule for a text length and a checkpoint (`where` prefixes the error)."""
    positions = loaded.model.cfg.text.max_positions
    if max_text_len > positions:
        raise UserError(f"max_text_len {max_text_len}: more than the checkpoint's {positions} text positions "
                        f"({model})")
    given = kind.given_tokens(loaded.tokenizer, options)
    room = min(max_text_len, positions) - 1 - given - 1  # [DEC]/[CLS], the given tokens, [SEP]
    if given and room < 2:
        raise UserError(f"{where}: the prompt is {given} tokens, which leaves {max(room, 0)} of the "
                        f"{min(max_text_len, positions)} text positions for the caption; shorten it")
