"""BERT-style text transformer (Devlin et al. 2019) as in BLIP's "MED": post-LayerNorm blocks with
self-attention, cross-attention to image (or question) states when they are given, and an MLP.

The same module runs as a bidirectional encoder (`causal=False`: ITC text features, ITM, VQA
question encoding) or as a causal decoder (`causal=True`: captioning, answer decoding) with an
optional key/value cache for generation.

PEFT hooks: `TextTransformer.prompt` (prompt tuning: Lester et al. 2021) and the hooks of
`layers.py` on every block (slots "attn", "cross", "mlp").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vlpeft.model.config import TextConfig
from vlpeft.model.layers import Attention, Mlp, causal_mask, key_mask, with_adapter


@dataclass
class KVCache:
    """Decoder state during generation.

    self_kv[i]: keys/values of block i's self-attention so far, each (B, H, P_i + S, d);
    cross_kv[i]: block i's cross-attention keys/values (computed once); key_valid: (B, S) 1 for
    real (or prompt) tokens; n_prompt: prompt tokens inserted at the first step (no positions).
    """

    self_kv: list = field(default_factory=list)
    cross_kv: list = field(default_factory=list)
    key_valid: torch.Tensor | None = None
    n_prompt: int = 0

    @property
    def started(self) -> bool:
        return self.key_valid is not None

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search): every cached tensor's dim 0 indexed by `index` (B',)."""
        def pick(kv):
            return None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
        self.self_kv = [pick(kv) for kv in self.self_kv]
        self.cross_kv = [pick(kv) for kv in self.cross_kv]
        self.key_valid = self.key_valid.index_select(0, index)


class TextEmbeddings(nn.Module):
    """token + absolute position embeddings -> LayerNorm -> dropout."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positions = nn.Embedding(cfg.max_positions, cfg.width)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:  # (B, L) -> (B, L, D)
        L = ids.shape[1]
        if offset + L > self.positions.num_embeddings:
            raise ValueError(f"text of {offset + L} tokens exceeds max_positions {self.positions.num_embeddings}")
        pos = torch.arange(offset, offset + L, device=ids.device)
        return self.dropout(self.norm(self.tokens(ids) + self.positions(pos)[None]))


class TextBlock(nn.Module):
    """x = LN(x + adapter(self_attn(x))); [x = LN(x + adapter(cross_attn(x, ctx)))]; x = LN(x + adapter(mlp(x)))."""

    def __init__(self, cfg: TextConfig, cross: bool):
        super().__init__()
        self.self_attn = Attention(cfg.width, cfg.heads, dropout=cfg.dropout)
        self.self_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.cross_attn = (
            Attention(cfg.width, cfg.heads, kv_width=cfg.cross_width, dropout=cfg.dropout) if cross else None
        )
        self.cross_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps) if cross else None
        self.mlp = Mlp(cfg.width, cfg.mlp_width)
        self.mlp_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.adapters = nn.ModuleDict()  # PEFT slots "attn", "cross", "mlp"

    def forward(self, x, self_mask, context=None, cross_mask=None, self_kv=None, cross_kv=None):
        """x (B, L, D); masks bool (B, 1, L, S) or None; context (B, S_c, D_c) or None."""
        a = self.dropout(self.self_attn(x, self_mask, kv=self_kv))
        x = self.self_norm(x + with_adapter(self.adapters, "attn", x, a))
        if context is not None:
            if self.cross_attn is None:
                raise ValueError("this text transformer has no cross-attention layers")
            c = self.dropout(self.cross_attn(x, cross_mask, context=context, kv=cross_kv))
            x = self.cross_norm(x + with_adapter(self.adapters, "cross", x, c))
        m = self.dropout(self.mlp(x))
        return self.mlp_norm(x + with_adapter(self.adapters, "mlp", x, m))


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, cross: bool = True):
        super().__init__()
        self.cfg = cfg
        self.embed = TextEmbeddings(cfg)
        self.blocks = nn.ModuleList(TextBlock(cfg, cross) for _ in range(cfg.depth))
        # PEFT hook: module with `.length` (P), `.deep` and `forward(layer) -> (P, D)`; inserted before
        # block 0 (deep: replaced before every later block) and dropped from the output. Where: after
        # the first token ([CLS]/[ENC]) when bidirectional; before every token when causal, so that
        # each prediction, the first one from [DEC] included, can attend to them (as prompt tuning of a
        # causal LM prepends its virtual tokens to the whole input).
        self.prompt: nn.Module | None = None

    def forward(
        self,
        ids: torch.Tensor,  # (B, L) token ids
        mask: torch.Tensor | None = None,  # (B, L) 1 = real token, 0 = padding
        context: torch.Tensor | None = None,  # (B, S_c, D_c) image or question states: enables cross-attention
        context_mask: torch.Tensor | None = None,  # (B, S_c) 1 = real
        causal: bool = False,
        cache: KVCache | None = None,  # decoder only: filled on the first call, extended afterwards
    ) -> torch.Tensor:
        """Returns hidden states (B, L, D) for the L given tokens (prompt positions removed)."""
        B, L = ids.shape
        if mask is None:
            mask = torch.ones(B, L, dtype=torch.long, device=ids.device)
        first = cache is None or not cache.started
        P = self.prompt.length if (self.prompt is not None and first) else 0
        offset = 0 if first else cache.key_valid.shape[1] - cache.n_prompt
        x = self.embed(ids, offset)  # (B, L, D)
        at = 0 if causal else 1  # tokens kept before the prompts
        if P:
            x = torch.cat([x[:, :at], self.prompt(0).to(x.dtype).expand(B, -1, -1), x[:, at:]], dim=1)  # (B, P+L, D)
            mask = torch.cat([mask[:, :at], mask.new_ones(B, P), mask[:, at:]], dim=1)
        if cache is not None:
            if first:
                cache.self_kv, cache.cross_kv, cache.n_prompt = [None] * len(self.blocks), [None] * len(self.blocks), P
                cache.key_valid = mask
            else:
                cache.key_valid = torch.cat([cache.key_valid, mask], dim=1)
            key_valid = cache.key_valid
        else:
            key_valid = mask
        q_len = x.shape[1]
        masks: dict = {}  # memo per (kind, prefix length): all blocks usually share one

        def self_mask(p: int):
            if ("self", p) not in masks:
                masks["self", p] = (causal_mask(key_valid, q_len, B, p, x.device) if causal
                                    else key_mask(key_valid, p, q_len))
            return masks["self", p]

        def cross_mask(p: int):
            if ("cross", p) not in masks:
                masks["cross", p] = key_mask(context_mask, p, q_len)
            return masks["cross", p]

        for i, block in enumerate(self.blocks):
            if P and i > 0 and self.prompt.deep:
                x = torch.cat([x[:, :at], self.prompt(i).to(x.dtype).expand(B, -1, -1), x[:, at + P:]], dim=1)
            self_kv = cross_kv = None
            if cache is not None:
                attn = block.self_attn
                if cache.self_kv[i] is None:
                    self_kv = attn.project_kv(x)
                else:
                    k_old, v_old = cache.self_kv[i]
                    self_kv = (
                        torch.cat([k_old, attn.split(attn.k(x))], 2),
                        torch.cat([v_old, attn.split(attn.v(x))], 2),
                    )
                cache.self_kv[i] = self_kv
                if context is not None:
                    if cache.cross_kv[i] is None:
                        cache.cross_kv[i] = block.cross_attn.project_kv(context)
                    cross_kv = cache.cross_kv[i]
            cm = cross_mask(block.cross_attn.prefix_len()) if context is not None else None
            x = block(x, self_mask(block.self_attn.prefix_len()), context, cm, self_kv, cross_kv)
        if P:
            x = torch.cat([x[:, :at], x[:, at + P:]], dim=1)  # (B, L, D)
        return x


class LMHead(nn.Module):
    """BERT prediction head: dense -> GELU -> LayerNorm -> vocabulary projection (with bias)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.width, cfg.width)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.out = nn.Linear(cfg.width, cfg.vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, V)
        return self.out(self.norm(F.gelu(self.dense(h))))
