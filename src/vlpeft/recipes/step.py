"""One training step and one evaluation of a prepared run: the kind's batch and loss, the frozen-image
cache, precision (autocast) and compilation, the optimiser step, scores of a split. Used by
`finetune` and by the benchmarks, which time exactly these."""

from __future__ import annotations

import json
from typing import Any

import torch

from vlpeft.recipes.prepare import Prepared
from vlpeft.recipes.training import optimizer_step


def make_batch(prep: Prepared, cfg, examples, rng, pixels: bool = True):
    """The kind's training batch of `examples` (on the CPU; `.to(device)` moves it)."""
    return prep.kind.batch(examples, prep.data, prep.loaded, prep.options, cfg.max_text_len, rng, pixels)


def task_loss(prep: Prepared, model, batch, cfg, image_states=None) -> torch.Tensor:
    return prep.kind.loss(model, batch, cfg.label_smoothing, image_states=image_states)


def frozen_image_encoder(prep: Prepared, cfg, model):
    """Cached image encoding when the method leaves the vision encoder untouched, else None."""
    from vlpeft.recipes import features

    if not cfg.feature_cache or features.cache_limit_bytes() <= 0 or not features.vision_untouched(model):
        return None
    # The images and their preprocessing; the checkpoint is identified by its vision weights' digest.
    source = json.dumps([prep.data.image_source, repr(prep.loaded.preprocess),
                         precision_on(cfg, next(model.parameters()).device)], sort_keys=True)
    return features.image_encoder(model, prep.data, prep.loaded.preprocess, source,
                                  cache_dir=cfg.feature_cache_dir, disk_cap_mb=cfg.feature_cache_disk_mb)


def precision_on(cfg, device) -> str:
    """The precision a run uses on `device`: cfg.precision, with 'auto' = bf16 on a CUDA device that
    supports it (tensor cores), fp32 elsewhere (on a CPU without AMX bf16 was slower: docs/speed.md)."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(cfg, device):
    """bf16 autocast of forward passes when the run's precision is bf16 (a no-op context for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_on(cfg, device) == "bf16")


# Device types on which `compile: auto` compiles: where benchmarks/bench.py's compile_speedup measured
# a whole cell, compile included, faster than eager. None so far: on the CPUs measured a compiled step
# is 13-17 % faster but its compile (and a recompile per batch shape) costs more than a cell saves
# (docs/speed.md); not yet measured on CUDA.
COMPILE_PAYS: frozenset[str] = frozenset()


def compile_on(cfg, device) -> bool:
    """Whether a run compiles its loss on `device` (cfg.compile, 'auto' per COMPILE_PAYS)."""
    return cfg.compile == "on" or (cfg.compile == "auto" and device.type in COMPILE_PAYS)


def loss_function(prep: Prepared, cfg, model, device):
    """The training loss as a function of (batch, image_states): the kind's loss, compiled with
    `torch.compile` (dynamic shapes: text lengths vary batch to batch) when `compile_on`."""

    def loss(batch, image_states=None):
        return task_loss(prep, model, batch, cfg, image_states)

    return torch.compile(loss, dynamic=True) if compile_on(cfg, device) else loss


def train_step(prep: Prepared, cfg, model, opt, batch, image_states=None, step: int = 0, loss_fn=None) -> float:
    """One optimiser step on a prepared batch: forward (autocast per cfg.precision) through `loss_fn`
    (default: the kind's loss, uncompiled), backward, gradient-norm clip, AdamW step. Raises Diverged
    on a non-finite loss or gradient norm. -> loss."""
    model.train()
    with autocast(cfg, next(model.parameters()).device):
        if loss_fn is None:
            loss = task_loss(prep, model, batch, cfg, image_states)
        else:
            loss = loss_fn(batch, image_states)
    return optimizer_step(loss, opt, [p for g in opt.param_groups for p in g["params"]], cfg.grad_clip, step)


def evaluate_split(prep: Prepared, cfg, model, examples, encode_images=None) -> dict[str, Any]:
    """Scores of `model` on `examples` (primary metric under "score")."""
    model.eval()
    with autocast(cfg, next(model.parameters()).device):
        preds = prep.kind.predict(model, examples, prep.data, prep.loaded, prep.options, cfg.max_text_len,
                                  encode_images=encode_images)
    scores = prep.kind.score(preds, examples)
    scores["score"] = scores[prep.kind.metric]
    scores["score_se"] = scores.get(f"{prep.kind.metric}_se", 0.0)  # the score's own noise (standard error)
    scores["examples"] = [
        {"id": getattr(ex, "question_id", ex.image_id), "prediction": p} for ex, p in zip(examples[:5], preds[:5])
    ]
    return scores
