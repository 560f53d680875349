"""How long a fine-tuning run trains and when it is evaluated: the optimiser steps of a run (the exact
length of a fixed policy, the cap of `converge`), its evaluation steps, its warm-up and learning-rate
factor. The policies and why the rate is constant under `converge`: recipes/defaults.py."""

from __future__ import annotations

import math

from vlpeft.recipes.config import FinetuneConfig
from vlpeft.recipes.training import warmup_cosine


def train_steps(cfg: FinetuneConfig, n_train: int) -> int:
    """Optimiser steps for a training subset of n_train examples under cfg.length_policy: the exact
    length of a fixed policy, the cap of `converge` (max_steps, and max_epochs passes when set)."""
    per_epoch = math.ceil(n_train / cfg.batch_size)
    if cfg.length_policy == "converge":
        return min(cfg.max_steps, max(1, math.ceil(cfg.max_epochs * per_epoch))) if cfg.max_epochs else cfg.max_steps
    if cfg.length_policy == "steps":
        return cfg.steps
    if cfg.length_policy == "epochs":
        return cfg.epochs * per_epoch
    return max(cfg.epochs * per_epoch, cfg.min_steps)


def stop_floor(cfg: FinetuneConfig, n_train: int) -> int:
    """Under converge, the step before which a run does not stop: `min_steps`, and `min_epochs` passes
    over a subset of n_train examples but at most half the cap (a large subset, whose passes the cap
    does not allow, can still be judged converged before its cap)."""
    passes = math.ceil(cfg.min_epochs * math.ceil(n_train / cfg.batch_size))
    return max(cfg.min_steps, min(passes, train_steps(cfg, n_train) // 2))


def eval_steps(cfg: FinetuneConfig, steps: int) -> list[int]:
    """The steps after which validation is evaluated (step 0, before training, comes besides): every
    `eval_every` steps and at the cap under converge; `evals` evenly spaced ones for a fixed length."""
    if not steps:
        return []
    if cfg.length_policy == "converge":
        at, step = [], 0
        while step < steps:  # intervals of eval_every, growing with the run (a window of `patience` evaluations
            step = min(steps, max(step + cfg.eval_every, round(step * cfg.eval_growth)))  # spans a fixed ratio)
            at.append(step)
        return at
    return sorted({max(1, round(steps * (i + 1) / cfg.evals)) for i in range(cfg.evals)})


def lr_factor(cfg: FinetuneConfig, step: int, steps: int) -> float:
    """The learning-rate factor at `step` (0-based): linear warm-up, then cosine decay to 0 over a fixed
    length, or constant under converge (whose length is decided as it goes: see recipes/defaults.py)."""
    if cfg.length_policy == "converge":
        return min(1.0, (step + 1) / warmup_steps(cfg, steps))
    return warmup_cosine(step, steps, warmup_steps(cfg, steps))


def warmup_steps(cfg: FinetuneConfig, steps: int) -> int:
    """Linear warm-up steps of a run of `steps` (the cap under converge): `warmup_steps` if given, else
    `warmup_ratio` of the run (under converge, of min_steps: the length is not known in advance)."""
    if cfg.warmup_steps:
        return cfg.warmup_steps
    base = min(cfg.min_steps, steps) if cfg.length_policy == "converge" else steps
    return max(1, int(base * cfg.warmup_ratio))
