"""Baselines: full fine-tuning, the frozen pre-trained model, and BitFit.

- full: every weight of the placed parts and the task head is trained.
- frozen: nothing is trained; the pre-trained model as is (with train_head, a head-only probe).
- bitfit (Ben Zaken et al., "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based
  Masked Language-models", ACL 2022): only the bias terms (of linear layers and LayerNorms).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from vlpeft.peft.base import PARTS, MethodSpec, PeftCommon, check_placement, placed_towers, register


@dataclass(frozen=True)
class FullConfig(PeftCommon):
    placement: tuple[str, ...] = field(default=PARTS, metadata={"help": "parts trained (default: all)"})
    train_head: bool = field(default=True, metadata={"help": "train the LM head too (default: yes)"})

    def __post_init__(self):
        check_placement(self.placement, "full")


@dataclass(frozen=True)
class FrozenConfig(PeftCommon):
    def __post_init__(self):
        check_placement(self.placement, "frozen")


@dataclass(frozen=True)
class BitFitConfig(PeftCommon):
    def __post_init__(self):
        check_placement(self.placement, "bitfit")


def apply_full(model: nn.Module, cfg: FullConfig) -> None:
    for _, tower in placed_towers(model, cfg.placement):
        tower.requires_grad_(True)


def apply_frozen(model: nn.Module, cfg: FrozenConfig) -> None:
    pass


def apply_bitfit(model: nn.Module, cfg: BitFitConfig) -> None:
    for _, tower in placed_towers(model, cfg.placement):
        for m in tower.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm, nn.Conv2d)) and m.bias is not None:
                m.bias.requires_grad_(True)


FULL = register(MethodSpec("full", FullConfig, apply_full))
FROZEN = register(MethodSpec("frozen", FrozenConfig, apply_frozen))
BITFIT = register(MethodSpec("bitfit", BitFitConfig, apply_bitfit))
