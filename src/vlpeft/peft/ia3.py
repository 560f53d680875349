"""(IA)^3 (Liu et al., "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning", NeurIPS 2022): learned vectors rescale keys, values and the MLP's inner activations,

    K = l_k * (W_k x),   V = l_v * (W_v x),   FFN(x) = W_2 (l_ff * act(W_1 x)),

in every attention (self and cross) of the placed towers. The vectors start at 1 (identity).
Trainable parameters per block: 2 * D per attention + D_mlp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, placed_towers, register


@dataclass(frozen=True)
class IA3Config(PeftCommon):
    def __post_init__(self):
        check_placement(self.placement, "ia3")


class ScaledLinear(nn.Module):
    """nn.Linear whose output (`where="out"`) or input (`where="in"`) is multiplied by a learned vector."""

    def __init__(self, base: nn.Linear, where: str):
        super().__init__()
        self.in_features, self.out_features, self.where = base.in_features, base.out_features, where
        self.weight, self.bias = base.weight, base.bias  # same tensors, same names
        n = base.out_features if where == "out" else base.in_features
        self.ia3_scale = nn.Parameter(torch.ones(n, dtype=base.weight.dtype, device=base.weight.device))

    def forward(self, x):
        if self.where == "in":
            return F.linear(x * self.ia3_scale, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias) * self.ia3_scale


def apply(model: nn.Module, cfg: IA3Config) -> None:
    for _, tower in placed_towers(model, cfg.placement):
        for block in tower.blocks:
            for attr in ("attn", "self_attn", "cross_attn"):
                attn = getattr(block, attr, None)
                if attn is not None:
                    attn.k = ScaledLinear(attn.k, "out")
                    attn.v = ScaledLinear(attn.v, "out")
            block.mlp.fc2 = ScaledLinear(block.mlp.fc2, "in")  # scales act(W_1 x)


SPEC = register(MethodSpec("ia3", IA3Config, apply))
