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

Initialisation (`init`): `normal` draws each prompt from N(0, init_std^2), as VPT and most code do;
`vocab` starts each prompt as a text tower's own input state of a vocabulary token drawn uniformly,
LN(E[t]) (the embedding LayerNorm of the token's embedding, no position), the "sampled vocabulary"
initialisation Lester et al. (section 3) found to train better than random vectors at small model
sizes. Here it also matches the scale of the states the prompts sit among: the embedding LayerNorm
makes each real token's state O(1) per dimension, where normal initialisation at 0.02 starts the
prompts near zero. Deep prompts draw a fresh token for every layer. The vision tower has no
vocabulary, so `vocab` is for text towers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, placed_towers, register

INITS = ("normal", "vocab")


@dataclass(frozen=True)
class PromptConfig(PeftCommon):
    n_tokens: int = field(default=8, metadata={"help": "prompt tokens P per tower (the knob)"})
    deep: bool = field(
        default=False, metadata={"help": "new prompts before every block (VPT-deep) instead of only the input"}
    )
    init: str = field(default="normal", metadata={
        "help": "how the prompts start: normal (N(0, init_std^2)) or vocab (the text tower's embedding of "
                "vocabulary tokens drawn at random, Lester et al.; text towers only)"})
    init_std: float = field(default=0.02, metadata={"help": "std of the normal initialisation of the prompts"})

    def __post_init__(self):
        check_placement(self.placement, "prompt")
        if self.n_tokens <= 0:
            raise ValueError(f"n_tokens must be positive, got {self.n_tokens}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.init == "vocab" and "vision" in self.placement:
            raise ValueError("init 'vocab' starts prompts from a text tower's vocabulary; the vision tower has none "
                             "(use init normal, or leave vision out of placement)")


class PromptTokens(nn.Module):
    """The `prompt` hook of a tower: `.length` (P), `.deep`, and `forward(layer) -> (P, D)`."""

    def __init__(self, start: torch.Tensor, deep: bool):  # start: (layers|1, P, D), the initial prompts
        super().__init__()
        self.length, self.deep = start.shape[1], deep
        self.tokens = nn.Parameter(start)  # (layers|1, P, D)

    def forward(self, layer: int) -> torch.Tensor:
        return self.tokens[layer if self.deep else 0]  # (P, D)


def initial_prompts(tower: nn.Module, cfg: PromptConfig) -> torch.Tensor:
    """(layers|1, P, D) starting prompts for one tower, on the tower's device (see the module docstring)."""
    layers = tower.cfg.depth if cfg.deep else 1
    weight = next(tower.parameters())
    if cfg.init == "normal":
        return torch.randn(layers, cfg.n_tokens, tower.cfg.width, device=weight.device) * cfg.init_std
    embed = tower.embed  # a text tower (PromptConfig refuses vocab on the vision tower)
    ids = torch.randint(0, embed.tokens.num_embeddings, (layers, cfg.n_tokens), device=weight.device)  # (layers|1, P)
    with torch.no_grad():
        return embed.norm(embed.tokens(ids)).float()  # (layers|1, P, D)


def apply(model: nn.Module, cfg: PromptConfig) -> None:
    for _, tower in placed_towers(model, cfg.placement):
        tower.prompt = PromptTokens(initial_prompts(tower, cfg), cfg.deep)


SPEC = register(MethodSpec("prompt", PromptConfig, apply))
