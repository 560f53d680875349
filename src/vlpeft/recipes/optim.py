"""What pre-training and fine-tuning share: AdamW and its parameter groups."""

from __future__ import annotations

import torch
from torch import nn


def adamw(model: nn.Module, weight_decay: float, lr: float, **kwargs) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, weight_decay)`, fused: one kernel over all tensors instead of a
    loop over them (measured 2.6 vs 12.1 ms per step for the whole tiny model on the 2-core CPU)."""
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
