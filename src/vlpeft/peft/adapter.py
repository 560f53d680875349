"""Bottleneck adapters: sequential (Houlsby et al., "Parameter-Efficient Transfer Learning for NLP",
ICML 2019) and parallel (He et al., "Towards a Unified View of Parameter-Efficient Transfer
Learning", ICLR 2022; used by MAM).

Sequential, after a sub-layer f:   h = f(x);  h <- h + W_up act(W_down h)
Parallel, beside a sub-layer f:    h = f(x) + s * W_up act(W_down x)
W_down: D -> r, W_up: r -> D. W_up starts at zero, so an adapted model starts as the base model.
Trainable parameters per adapter: 2 * D * r + r + D.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import nn

from vlpeft.errors import did_you_mean
from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, placed_towers, register

SLOTS = ("attn", "cross", "mlp")


class Bottleneck(nn.Module):
    """An adapter slot module (see `vlpeft.model.layers`): `forward(sub_in, sub_out) -> new sub_out`."""

    def __init__(self, width: int, bottleneck: int, parallel: bool = False, scale: float = 1.0):
        super().__init__()
        self.parallel, self.scale = parallel, scale
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # identity at initialisation
        nn.init.zeros_(self.up.bias)

    def forward(self, sub_in, sub_out):  # (B, L, D), (B, L, D) -> (B, L, D)
        source = sub_in if self.parallel else sub_out
        return sub_out + self.scale * self.up(F.gelu(self.down(source)))


def check_slots(slots: tuple[str, ...], where: str) -> None:
    if not slots:
        raise ValueError(f"{where}: slots names no sub-layer (use any of {', '.join(SLOTS)})")
    for s in slots:
        if s not in SLOTS:
            raise ValueError(f"{where}: unknown slot {s!r}{did_you_mean(s, SLOTS)} (use any of {', '.join(SLOTS)})")


def add_adapters(model: nn.Module, placement, slots, bottleneck: int, parallel: bool, scale: float) -> None:
    """One adapter in each named slot of every block of the placed towers ('cross' only where the
    block has cross-attention)."""
    for _, tower in placed_towers(model, placement):
        for block in tower.blocks:
            for slot in slots:
                if slot == "cross" and getattr(block, "cross_attn", None) is None:
                    continue
                block.adapters[slot] = Bottleneck(tower.cfg.width, bottleneck, parallel, scale)


@dataclass(frozen=True)
class AdapterConfig(PeftCommon):
    bottleneck: int = field(default=16, metadata={"help": "bottleneck width r (the knob)"})
    slots: tuple[str, ...] = field(
        default=("attn", "mlp"),
        metadata={
            "help": "sub-layers followed by an adapter: attn (self-attention), cross (cross-attention), mlp; "
            "Houlsby: attn, mlp"
        },
    )

    def __post_init__(self):
        check_placement(self.placement, "adapter")
        check_slots(self.slots, "adapter")
        if self.bottleneck <= 0:
            raise ValueError(f"bottleneck must be positive, got {self.bottleneck}")


def apply(model: nn.Module, cfg: AdapterConfig) -> None:
    add_adapters(model, cfg.placement, cfg.slots, cfg.bottleneck, parallel=False, scale=1.0)


SPEC = register(MethodSpec("adapter", AdapterConfig, apply))
