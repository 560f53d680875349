"""Prompt tuning (Lester et al., "The Power of Scale for Parameter-Efficient Prompt Tuning", EMNLP 2021)
and visual prompt tuning (Jia et al., "Visual Prompt Tuning", ECCV 2022).

P learned vectors are inserted into a tower's input sequence: after the first token ([CLS] / [ENC])
in a bidirectional tower (the ViT, the text encoder), before every token in the causal text decoder:
    bidirectional: [x_0, x_1..x_L]  ->  [x_0, p_1..p_P, x_1..x_L]
    causal:        [x_0, x_1..x_L]  ->  [p_1..p_P, x_0, x_1..x_L]
so that every token may attend to them; in the decoder that includes [DEC], whose output predicts
the first word (inserted after it, the prompts could not reach that prediction: a one-word VQA
answer would be untouched by them). Their outputs are dropped, so the tower's output shape is
unchanged. Deep prompts (VPT-deep) replace the P prompt positions with fresh learned vectors before
every block. Trainable parameters per tower: P * D (shallow) or depth * P * D (deep).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, placed_towers, register


@dataclass(frozen=True)
class PromptConfig(PeftCommon):
    n_tokens: int = field(default=8, metadata={"help": "prompt tokens P per tower (the knob)"})
    deep: bool = field(
        default=False, metadata={"help": "new prompts before every block (VPT-deep) instead of only the input"}
    )
    init_std: float = field(default=0.02, metadata={"help": "std of the normal initialisation of the prompts"})

    def __post_init__(self):
        check_placement(self.placement, "prompt")
        if self.n_tokens <= 0:
            raise ValueError(f"n_tokens must be positive, got {self.n_tokens}")


class PromptTokens(nn.Module):
    """The `prompt` hook of a tower: `.length` (P), `.deep`, and `forward(layer) -> (P, D)`."""

    def __init__(self, length: int, width: int, layers: int, deep: bool, init_std: float):
        super().__init__()
        self.length, self.deep = length, deep
        self.tokens = nn.Parameter(torch.randn(layers if deep else 1, length, width) * init_std)  # (layers|1, P, D)

    def forward(self, layer: int) -> torch.Tensor:
        return self.tokens[layer if self.deep else 0]  # (P, D)


def apply(model: nn.Module, cfg: PromptConfig) -> None:
    for _, tower in placed_towers(model, cfg.placement):
        width, depth = tower.cfg.width, tower.cfg.depth
        tower.prompt = PromptTokens(cfg.n_tokens, width, depth, cfg.deep, cfg.init_std)


SPEC = register(MethodSpec("prompt", PromptConfig, apply))
