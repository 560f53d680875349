"""Prefix tuning (Li & Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation", ACL 2021).

Each attention of a placed tower gets P extra key/value vectors per head that every query may
attend to:  Attn(q, [P_k; K], [P_v; V]).  During training the prefixes are reparameterised for
stability, one MLP per tower shared by its layers:

    [P_k, P_v] for all layers = W_2 tanh(W_1 E + b_1) + b_2,   E: (P, D) learned,  W_1: D -> h,
    W_2: h -> n_layers * n_kinds * 2 * D

and after training `fold_prefixes` replaces E and the MLP by the plain prefixes it produces (outputs
identical). Sizes: folded, n_layers * n_kinds * 2 * P * D parameters per tower — the figure the
literature reports and that budgets use; while training, the reparameterisation is what the
optimiser updates (reported as `trainable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, placed_towers, register


@dataclass(frozen=True)
class PrefixConfig(PeftCommon):
    length: int = field(default=8, metadata={"help": "prefix length P per attention (the knob)"})
    cross: bool = field(default=False, metadata={"help": "also prefix the cross-attention keys/values"})
    reparam: bool = field(
        default=True, metadata={"help": "train through the MLP reparameterisation (folded after training)"}
    )
    reparam_hidden: int = field(default=0, metadata={"help": "MLP hidden width h; 0 = the tower width D"})

    def __post_init__(self):
        check_placement(self.placement, "prefix")
        if self.length <= 0:
            raise ValueError(f"length must be positive, got {self.length}")
        if self.reparam_hidden < 0:
            raise ValueError(f"reparam_hidden must be >= 0, got {self.reparam_hidden}")


class PrefixSource(nn.Module):
    """All prefixes of one tower: kv[layer][kind] -> (k, v), each (1, H, P, d).

    `refresh()` (a forward pre-hook of the tower) computes them once per tower call."""

    def __init__(self, length: int, width: int, heads: int, layers: int, kinds: int, reparam: bool, hidden: int):
        super().__init__()
        self.length, self.width, self.heads, self.layers, self.kinds = length, width, heads, layers, kinds
        n_out = layers * kinds * 2 * width
        if reparam:
            self.embedding = nn.Parameter(torch.randn(length, width) * 0.02)  # E (P, D)
            self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, n_out))
            self.prefixes = None
        else:
            self.embedding, self.mlp = None, None
            self.prefixes = nn.Parameter(torch.randn(length, n_out) * 0.02)  # (P, layers*kinds*2*D)
        self.current = None

    @property
    def folded_numel(self) -> int:
        return self.length * self.layers * self.kinds * 2 * self.width

    def table(self) -> torch.Tensor:
        """(P, layers*kinds*2*D) -> (layers, kinds, 2, 1, H, P, d)."""
        flat = self.prefixes if self.mlp is None else self.mlp(self.embedding)  # (P, layers*kinds*2*D)
        d = self.width // self.heads
        t = flat.view(self.length, self.layers, self.kinds, 2, self.heads, d)
        return t.permute(1, 2, 3, 4, 0, 5).unsqueeze(3)  # (layers, kinds, 2, 1, H, P, d)

    def refresh(self, *_):
        self.current = self.table()

    @torch.no_grad()
    def fold(self) -> None:
        if self.mlp is None:
            return
        flat = self.mlp(self.embedding)
        self.embedding, self.mlp = None, None
        self.prefixes = nn.Parameter(flat.detach().clone())


class LayerPrefix(nn.Module):
    """The `prefix` hook of one attention: `.length` and `forward(B) -> (k, v)`, each (B, H, P, d)."""

    def __init__(self, source: PrefixSource, layer: int, kind: int):
        super().__init__()
        object.__setattr__(self, "source", source)  # not a submodule: the tower owns it once
        self.layer, self.kind, self.length = layer, kind, source.length

    def forward(self, batch: int):
        if self.source.current is None:
            self.source.refresh()
        kv = self.source.current[self.layer, self.kind]  # (2, 1, H, P, d)
        return kv[0].expand(batch, -1, -1, -1), kv[1].expand(batch, -1, -1, -1)


def add_prefixes(model: nn.Module, placement, length: int, cross: bool, reparam: bool, hidden: int) -> None:
    for _, tower in placed_towers(model, placement):
        blocks = list(tower.blocks)
        attns = [("self_attn" if hasattr(blocks[0], "self_attn") else "attn")]
        if cross and getattr(blocks[0], "cross_attn", None) is not None:
            attns.append("cross_attn")
        width = tower.cfg.width
        source = PrefixSource(length, width, tower.cfg.heads, len(blocks), len(attns), reparam, hidden or width)
        tower.prefix_source = source
        tower.register_forward_pre_hook(source.refresh)
        for i, block in enumerate(blocks):
            for kind, attr in enumerate(attns):
                getattr(block, attr).prefix = LayerPrefix(source, i, kind)


def fold_prefixes(model: nn.Module) -> None:
    """Replace every reparameterisation by the prefixes it produces (outputs unchanged)."""
    for m in list(model.modules()):
        if isinstance(m, PrefixSource):
            was_trainable = m.embedding is not None and m.embedding.requires_grad
            m.fold()
            m.prefixes.requires_grad_(was_trainable or m.prefixes.requires_grad)
            m.current = None


def apply(model: nn.Module, cfg: PrefixConfig) -> None:
    add_prefixes(model, cfg.placement, cfg.length, cfg.cross, cfg.reparam, cfg.reparam_hidden)


SPEC = register(MethodSpec("prefix", PrefixConfig, apply, fold=fold_prefixes))
