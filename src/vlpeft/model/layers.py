"""Building blocks shared by the vision and text towers, with the hooks PEFT methods attach to.

PEFT hooks (the only places `vlpeft.peft` touches the model):
- `Attention.prefix`: optional module; `prefix(batch_size)` returns `(k, v)`, each `(B, H, P, d_head)`,
  prepended to the keys/values of that attention (prefix tuning, MAM). Every query may attend to them.
- `Attention.q/k/v/o`, `Mlp.fc1/fc2`: plain `nn.Linear`, so LoRA / (IA)^3 can wrap them.
- `adapters` (an `nn.ModuleDict` on each block): a module stored under a slot name
  ("attn", "cross", "mlp") is called as `adapter(sublayer_input, sublayer_output) -> new_output`
  right after that sublayer and before its residual add. A sequential (Houlsby) adapter transforms
  `sublayer_output`; a parallel (MAM) adapter adds a function of `sublayer_input`.
- `prompt` on each tower (see vit.py / text.py): learned tokens inserted after the first token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections, computed by SDPA.

    Self-attention when `context` is None; cross-attention to `context` otherwise (k/v read `kv_width`).
    """

    def __init__(self, width: int, heads: int, kv_width: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        kv_width = kv_width or width
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(kv_width, width)
        self.v = nn.Linear(kv_width, width)
        self.o = nn.Linear(width, width)
        self.dropout = dropout
        self.prefix: nn.Module | None = None  # PEFT hook, see module docstring

    def split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `source` (B, S, D_kv) -> two (B, H, S, d), with the prefix prepended."""
        k, v = self.split(self.k(source)), self.split(self.v(source))
        if self.prefix is not None:
            pk, pv = self.prefix(source.shape[0])  # (B, H, P, d) each
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
        return k, v

    def forward(
        self,
        x: torch.Tensor,  # (B, L, D) queries' input
        mask: torch.Tensor | None = None,  # bool (B, 1, L, S_total) True = may attend; None = all
        context: torch.Tensor | None = None,  # (B, S, D_kv) for cross-attention
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,  # precomputed (k, v), e.g. from a cache
    ) -> torch.Tensor:
        q = self.split(self.q(x))  # (B, H, L, d)
        if kv is None:
            kv = self.project_kv(x if context is None else context)
        k, v = kv  # (B, H, S_total, d)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, d)
        B, _, L, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(B, L, -1))  # (B, L, D)

    def prefix_len(self) -> int:
        return 0 if self.prefix is None else int(self.prefix.length)


class Mlp(nn.Module):
    """fc1 -> GELU (exact, erf) -> fc2."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return self.fc2(F.gelu(self.fc1(x)))


def with_adapter(adapters: nn.ModuleDict, slot: str, sub_in: torch.Tensor, sub_out: torch.Tensor) -> torch.Tensor:
    """Apply the adapter in `slot`, if any (see module docstring)."""
    if slot in adapters:
        return adapters[slot](sub_in, sub_out)
    return sub_out


def key_mask(key_valid: torch.Tensor | None, prefix_len: int, q_len: int) -> torch.Tensor | None:
    """Bool attention mask (B, 1, q_len, P + S) from a key padding mask (B, S) (1 = real token).

    Prefix positions are always visible. Returns None when nothing is masked (lets SDPA take its
    fastest path).
    """
    if key_valid is None:
        return None
    valid = key_valid.bool()
    if bool(valid.all()):
        return None
    if prefix_len:
        valid = torch.cat([valid.new_ones(valid.shape[0], prefix_len), valid], dim=1)
    return valid[:, None, None, :].expand(-1, 1, q_len, -1)


def causal_mask(
    key_valid: torch.Tensor | None,  # (B, S) 1 = real token, over all keys incl. cached ones
    q_len: int,
    batch: int,
    prefix_len: int,
    device: torch.device,
) -> torch.Tensor:
    """Bool mask (B, 1, q_len, P + S): query i (the last q_len of S keys) sees keys <= its position,
    never padding, and always the P prefix positions."""
    S = key_valid.shape[1] if key_valid is not None else q_len
    q_pos = torch.arange(S - q_len, S, device=device)[:, None]  # (q, 1)
    allowed = torch.arange(S, device=device)[None, :] <= q_pos  # (q, S)
    allowed = allowed[None, None].expand(batch, 1, q_len, S)
    if key_valid is not None:
        allowed = allowed & key_valid.bool()[:, None, None, :]
    if prefix_len:
        allowed = torch.cat([allowed.new_ones(batch, 1, q_len, prefix_len), allowed], dim=-1)
    return allowed
