"""The training step pre-training and fine-tuning share: AdamW and its parameter groups, the
learning-rate schedule (linear warm-up, cosine decay), and one optimiser step with gradient clipping
and the divergence checks.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


class Diverged(RuntimeError):
    """The loss or the gradients stopped being finite: the run fails with the step and reason."""


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.0) -> float:
    """The learning-rate factor at `step` (0-based) of `total`: linear warm-up over `warmup` steps to 1,
    then cosine decay to `floor`:  f(s) = (s + 1) / W for s < W, else
    floor + (1 - floor) * (1 + cos(pi * (s - W) / (total - W))) / 2."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: Iterable[torch.Tensor],
                   grad_clip: float, step: int) -> float:
    """Backward, gradient-norm clip (`grad_clip` <= 0: no clip, the norm is still checked), AdamW step.
    Raises Diverged on a non-finite loss or gradient norm, before the weights change. -> the loss."""
    if not torch.isfinite(loss):
        raise Diverged(f"loss is {loss.item()} at step {step}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(params), grad_clip if grad_clip > 0 else float("inf"))
    if not torch.isfinite(norm):
        raise Diverged(f"gradient norm is {norm.item()} at step {step}")
    opt.step()
    return loss.item()


def adamw(model: nn.Module, weight_decay: float, lr: float, **kwargs) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, weight_decay)`, fused: one kernel over all tensors instead of a
    loop over them (docs/notes/2026-11-29-speed.md)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, fused=True, **kwargs)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the parameters that require grad: weight decay on the weight matrices of
    linear and convolution layers (LoRA's A and B included), none on biases, norms, embeddings,
    position/[CLS] vectors, prompts and prefixes (decaying those pulls them towards zero tokens).
    A tensor shared by two modules (BLIP base ties the LM head to the word embeddings) is listed once,
    under the first module that holds it (the embedding: no decay)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            matrix = p.ndim >= 2 and (isinstance(module, (nn.Linear, nn.Conv2d)) and name == "weight"
                                      or name in ("lora_A", "lora_B"))
            (decay if matrix else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
