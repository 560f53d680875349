"""LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022).

A frozen linear layer W (out x in) gets a trainable low-rank update:
    y = W x + b + (alpha / r) * B A dropout(x),   A: r x in (Kaiming-uniform), B: out x r (zeros)
so the adapted model starts as the base model. `merge_lora` folds (alpha / r) B A into W for
inference (no extra latency). Trainable parameters per wrapped layer: r * (in + out).

Targets are projection names inside each block of the placed towers: "q", "k", "v", "o" (in every
attention: self and cross), or qualified "self_attn.q", "cross_attn.v", "attn.q" (vision), "mlp.fc1",
"mlp.fc2". Default: query and value of every attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vlpeft.errors import UserError
from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, placed_towers, register

ATTENTIONS = ("attn", "self_attn", "cross_attn")


@dataclass(frozen=True)
class LoraConfig(PeftCommon):
    rank: int = field(default=8, metadata={"help": "rank r of the update (the knob)"})
    alpha: float = field(default=16.0, metadata={"help": "scale numerator: the update is multiplied by alpha / r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch input"})
    targets: tuple[str, ...] = field(
        default=("q", "v"),
        metadata={
            "help": "projections to adapt: q, k, v, o (every attention), or self_attn.q, cross_attn.v, attn.q, "
            "mlp.fc1, mlp.fc2"
        },
    )

    def __post_init__(self):
        check_placement(self.placement, "lora")
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("targets names no layer")


class LoraLinear(nn.Module):
    """nn.Linear plus a low-rank update. Keeps the base `weight`/`bias` under their original names."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same (frozen) tensors, same names
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(
            torch.empty(rank, base.in_features, dtype=base.weight.dtype, device=base.weight.device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, rank, dtype=base.weight.dtype, device=base.weight.device)
        )
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear / HF peft
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x):  # (..., in) -> (..., out)
        return (
            F.linear(x, self.weight, self.bias) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        )

    def merged(self) -> nn.Linear:
        """A plain nn.Linear with W + (alpha / r) B A."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight + self.scaling * (self.lora_B @ self.lora_A))
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        lin.requires_grad_(False)
        return lin


def target_layers(model: nn.Module, placement, targets) -> list[tuple[str, nn.Module, str]]:
    """(qualified name, parent module, attribute) for every linear layer the targets select."""
    found, used = [], set()
    for part, tower in placed_towers(model, placement):
        for i, block in enumerate(tower.blocks):
            for target in targets:
                if "." in target:
                    owner_name, attr = target.rsplit(".", 1)
                    owners = [owner_name] if owner_name in ATTENTIONS + ("mlp",) else []
                else:
                    owners, attr = [a for a in ATTENTIONS], target
                for owner_name in owners:
                    owner = getattr(block, owner_name, None)
                    if owner is not None and isinstance(getattr(owner, attr, None), (nn.Linear, LoraLinear)):
                        found.append((f"{part}.blocks.{i}.{owner_name}.{attr}", owner, attr))
                        used.add(target)
    unused = [t for t in targets if t not in used]
    if unused:
        raise UserError(f"lora: target {unused[0]!r} matches no layer in {', '.join(placement)} "
                        f"(use q, k, v, o, self_attn.q, cross_attn.v, attn.q, mlp.fc1, mlp.fc2)")
    return found


def apply(model: nn.Module, cfg: LoraConfig) -> None:
    for _, owner, attr in target_layers(model, cfg.placement, cfg.targets):
        setattr(owner, attr, LoraLinear(getattr(owner, attr), cfg.rank, cfg.alpha, cfg.dropout))


def merge_lora(model: nn.Module) -> int:
    """Replace every LoraLinear by its merged nn.Linear (inference form; LoRA weights no longer separate)."""
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoraLinear):
                setattr(module, name, child.merged())
                n += 1
    return n


SPEC = register(MethodSpec("lora", LoraConfig, apply))
