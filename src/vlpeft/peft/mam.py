"""MAM adapter (He et al., "Towards a Unified View of Parameter-Efficient Transfer Learning", ICLR 2022):
prefix tuning on attention plus a scaled parallel adapter beside the MLP,

    Attn(q, [P_k; K], [P_v; V])   and   h = MLP(x) + s * W_up act(W_down x).

He et al.'s generation setting is prefix length 30 (reparameterisation width 800) and a parallel
bottleneck of 512 with scale s = 4, on a model of width 768. vlpeft scales the width-like numbers with
the model width D and keeps the length and the scale:

    bottleneck r = round(512 * D / 768),  reparameterisation h = round(800 * D / 768),  P = 30,  s = 4.

Knob: the parallel-adapter bottleneck (0 = the rule above); prefix length is a second knob.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from vlpeft.peft.adapter import add_adapters
from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, placed_towers, register
from vlpeft.peft.prefix import add_prefixes, fold_prefixes


@dataclass(frozen=True)
class MamConfig(PeftCommon):
    bottleneck: int = field(
        default=0, metadata={"help": "parallel-adapter bottleneck r (the knob); 0 = round(512 D / 768)"}
    )
    prefix_length: int = field(default=30, metadata={"help": "prefix length P (second knob)"})
    scale: float = field(default=4.0, metadata={"help": "parallel-adapter scale s"})
    reparam_hidden: int = field(default=0, metadata={"help": "prefix MLP width; 0 = round(800 D / 768)"})

    def __post_init__(self):
        check_placement(self.placement, "mam")
        if self.bottleneck < 0 or self.prefix_length <= 0 or self.reparam_hidden < 0:
            raise ValueError("bottleneck and reparam_hidden must be >= 0 and prefix_length > 0")


def scaled(reference: int, width: int) -> int:
    """He et al.'s width-like hyper-parameter `reference` (for D = 768) scaled to width D."""
    return max(1, round(reference * width / 768))


def apply(model: nn.Module, cfg: MamConfig) -> None:
    for part, tower in placed_towers(model, cfg.placement):
        width = tower.cfg.width
        add_prefixes(model, (part,), cfg.prefix_length, cross=False, reparam=True,
                     hidden=cfg.reparam_hidden or scaled(800, width))
        add_adapters(model, (part,), ("mlp",), cfg.bottleneck or scaled(512, width), parallel=True, scale=cfg.scale)


SPEC = register(MethodSpec("mam", MamConfig, apply, fold=fold_prefixes))
