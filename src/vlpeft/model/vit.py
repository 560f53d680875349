"""ViT image encoder (Dosovitskiy et al. 2021) as used by BLIP: pre-LayerNorm blocks, a [CLS] token,
learned absolute positions and a final LayerNorm.

PEFT hooks: `VisionTransformer.prompt` (visual prompt tokens, VPT: Jia et al. 2022) and the
hooks of `layers.py` on every block.
"""

from __future__ import annotations

import torch
from torch import nn

from vlpeft.model.config import VisionConfig
from vlpeft.model.layers import Attention, Mlp, with_adapter


class VisionBlock(nn.Module):
    """x = x + adapter_attn(attn(LN1(x))); x = x + adapter_mlp(mlp(LN2(x)))."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = Attention(cfg.width, cfg.heads, dropout=cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_width)
        self.adapters = nn.ModuleDict()  # PEFT slots "attn", "mlp"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        h = self.norm1(x)
        x = x + with_adapter(self.adapters, "attn", h, self.attn(h))
        h = self.norm2(x)
        return x + with_adapter(self.adapters, "mlp", h, self.mlp(h))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        # Why 0.02: the usual ViT truncated-normal scale; keeps early activations O(1) for LayerNorm.
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches + 1, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        # PEFT hook: module with `.length` (P), `.deep` (bool) and `forward(layer) -> (P, D)` tokens;
        # inserted after [CLS] before block 0, and for deep prompts replaced before every later block.
        self.prompt: nn.Module | None = None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, 1 + N, D) patch states, [CLS] first.

        Prompt tokens, when present, are attended to inside the encoder but dropped from the output,
        so downstream modules always see 1 + N states.
        """
        B = pixels.shape[0]
        x = self.patch_embed(pixels.to(self.patch_embed.weight.dtype))  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + self.pos_embed  # (B, 1+N, D)
        P = 0 if self.prompt is None else self.prompt.length
        for i, block in enumerate(self.blocks):
            if P and (i == 0 or self.prompt.deep):
                tokens = self.prompt(i).to(x.dtype).expand(B, -1, -1)  # (B, P, D)
                rest = x[:, 1:] if i == 0 else x[:, 1 + P:]
                x = torch.cat([x[:, :1], tokens, rest], dim=1)  # (B, 1+P+N, D)
            x = block(x)
        if P:
            x = torch.cat([x[:, :1], x[:, 1 + P:]], dim=1)  # (B, 1+N, D)
        return self.norm(x)
