"""AdamW parameter groups: decay only on weight matrices, every trainable tensor exactly once."""

import dataclasses

import torch

from vlpeft.model.blip import Blip
from vlpeft.model.config import preset
from vlpeft.recipes.training import param_groups


def test_a_tied_lm_head_is_listed_once_and_adamw_accepts_the_groups():
    cfg = dataclasses.replace(preset("tiny"), tie_lm_head=True)  # as BLIP base
    model = Blip(cfg)
    assert model.lm_head.out.weight is model.text_decoder.embed.tokens.weight
    groups = param_groups(model, 0.01)
    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed)) == len(list(model.parameters()))
    tied = model.lm_head.out.weight
    assert any(p is tied for p in groups[1]["params"])  # the embedding's group: no decay
    torch.optim.AdamW(groups, lr=1e-3)  # raised "appear in more than one parameter group" before


def test_decay_goes_to_matrices_only():
    model = Blip(preset("tiny"))
    decay, no_decay = param_groups(model, 0.01)
    assert all(p.ndim >= 2 for p in decay["params"])  # linear weights (and the patch-embedding conv)
    assert any(p is model.text_decoder.embed.tokens.weight for p in no_decay["params"])
    assert any(p is model.text_decoder.blocks[0].self_attn.q.weight for p in decay["params"])
