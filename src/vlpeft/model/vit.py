"""ViT image encoder (Dosovitskiy et al. 2021) as used by BLIP: pre-LayerNorm blocks, a [CLS] token,
learned absolute positions and a final LayerNorm.

Three stems turn pixels into the (H/p) x (W/p) patch tokens:
- 'patch': one p x p convolution with stride p, i.e. a linear map of each patch (ViT; every BLIP
  checkpoint has it);
- 'conv': a convolutional stem (Xiao et al., "Early Convolutions Help Transformers See Better",
  NeurIPS 2021): a 3x3 convolution at full resolution, 3x3 stride-2 convolutions halving the side,
  and a final 2x2 stride-2 convolution to the width, GELU between them (the tiny preset before the
  'pool' stem; its checkpoints still load);
- 'pool': a small CNN of the classic kind (LeNet/VGG: LeCun et al. 1998, Simonyan & Zisserman
  2015): log2(p) stages of a 3x3 convolution, ReLU and a 2x2 max-pool, then a 3x3 convolution to the
  width. With `stem_batchnorm` each stage has a BatchNorm (Ioffe & Szegedy 2015) after its
  convolution; pre-training uses it and `fold_stem_batchnorm` folds it into the convolutions before
  the checkpoint is saved, so no model that is fine-tuned has batch statistics (a frozen stem stays
  frozen in train mode, and an image's tokens do not depend on its batch). The tiny preset uses it.
  Max-pooling and BatchNorm are what make shape learnable quickly: trained from scratch as a
  shape classifier of single-object scenes (`benchmarks/stem_probe.py`), the tiny ViT learns shape
  several times faster with this stem than with 'conv', and pre-training with it names objects
  right far more often (docs/notes/2026-11-29-tiny-pretraining.md, "How the stem got here").

PEFT hooks: `VisionTransformer.prompt` (visual prompt tokens, VPT: Jia et al. 2022) and the
hooks of `layers.py` on every block.
"""

from __future__ import annotations

import dataclasses

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


def make_stem(cfg: VisionConfig) -> nn.Module:
    """(B, 3, H, W) -> (B, D, H/p, W/p). For p = 8, D = 128 the conv and pool stems have channels
    3 -> 16 -> 32 -> 64 -> 128."""
    if cfg.stem == "patch":
        return nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
    layers: list[nn.Module] = []
    halvings = cfg.patch_size.bit_length() - 1  # p = 2^halvings
    channels = [max(cfg.width // 2 ** (halvings - i), 8) for i in range(halvings)]  # doubling up to D/2
    if cfg.stem == "pool":
        c_in = 3
        for c in channels:  # each stage halves the side
            norm = [nn.BatchNorm2d(c)] if cfg.stem_batchnorm else []
            layers += [nn.Conv2d(c_in, c, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)]  # (B, c, side/2, side/2)
            c_in = c
        layers.append(nn.Conv2d(c_in, cfg.width, 3, padding=1))  # (B, D, H/p, W/p)
        return nn.Sequential(*layers)
    layers += [nn.Conv2d(3, channels[0], 3, stride=1, padding=1), nn.GELU()]  # (B, C0, H, W)
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GELU()]  # side halves
    layers.append(nn.Conv2d(channels[-1], cfg.width, 2, stride=2))  # (B, D, H/p, W/p)
    return nn.Sequential(*layers)


@torch.no_grad()
def fold_stem_batchnorm(vision: "VisionTransformer") -> VisionConfig:
    """Fold each BatchNorm of a 'pool' stem into the convolution before it, in place, using the
    running statistics (what the stem computes in eval mode):
        BN(W * x + b) = s * (W * x + b - mu) + beta,  s = gamma / sqrt(var + eps)
                      = (s W) * x + (s (b - mu) + beta).
    The stem becomes the plain conv / ReLU / max-pool stem of the same config with `stem_batchnorm`
    False, which this returns (and sets on `vision`)."""
    folded_cfg = dataclasses.replace(vision.cfg, stem_batchnorm=False)
    folded = make_stem(folded_cfg)
    old = list(vision.patch_embed)
    convs = [m for m in folded if isinstance(m, nn.Conv2d)]
    sources = [(m, old[i + 1] if i + 1 < len(old) and isinstance(old[i + 1], nn.BatchNorm2d) else None)
               for i, m in enumerate(old) if isinstance(m, nn.Conv2d)]
    for target, (conv, bn) in zip(convs, sources, strict=True):
        weight, bias = conv.weight, conv.bias
        if bn is not None:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
            weight = weight * scale[:, None, None, None]
            bias = (bias - bn.running_mean) * scale + bn.bias
        target.weight.copy_(weight)
        target.bias.copy_(bias)
    vision.patch_embed = folded.to(vision.pos_embed.device)
    vision.cfg = folded_cfg
    return folded_cfg


def init_stem(stem: nn.Module) -> None:
    """He initialisation (fan-in, ReLU gain) of a conv or pool stem; the patch stem keeps BLIP's N(0, 0.02).

    Why: with BLIP's N(0, 0.02), each convolution scales its input by about 0.02 * sqrt(fan_in) (0.1
    to 0.5 here), so four of them shrink the signal by two to three orders of magnitude and the stem
    does not learn: in the shape probe of the module docstring it stayed at chance (0.17) after 500
    steps, against 0.89 with this initialisation.
    """
    if isinstance(stem, nn.Sequential):
        for m in stem.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)


def small_normal(*shape: int, std: float) -> torch.Tensor:
    """N(0, std^2) values of `shape`, drawn from torch's generator; on the meta device (a checkpoint
    being loaded, see checkpoint._build) only the empty tensor."""
    t = torch.empty(*shape)
    return t if t.is_meta else torch.randn(*shape) * std


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = make_stem(cfg)
        # Why 0.02: the usual ViT truncated-normal scale; keeps early activations O(1) for LayerNorm.
        self.cls_token = nn.Parameter(small_normal(1, 1, cfg.width, std=0.02))
        self.pos_embed = nn.Parameter(small_normal(1, cfg.num_patches + 1, cfg.width, std=0.02))
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
        pixels = pixels.to(self.pos_embed.dtype)
        if self.cfg.stem != "patch":  # CPU convolutions run faster in NHWC (docs/notes/2026-11-29-speed.md)
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(pixels)  # (B, D, H/p, W/p)
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
