"""BLIP (Li et al., "BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language
Understanding and Generation", ICML 2022): a ViT image encoder, a text encoder that reads the image
through cross-attention, a causal text decoder, and three heads:

- ITC (image-text contrast): s(I, T) = <g_v(v_cls), g_t(t_cls)> / tau with L2-normalised projections;
- ITM (image-text matching): a 2-way classifier on the image-grounded text encoder's [ENC] state;
- LM (language modelling): next-token prediction by the image-grounded decoder.

One implementation serves the tiny model pre-trained here and real BLIP checkpoints (`hf.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlpeft.model.config import BlipConfig
from vlpeft.model.text import KVCache, LMHead, TextTransformer
from vlpeft.model.vit import VisionTransformer, init_stem


class Blip(nn.Module):
    def __init__(self, cfg: BlipConfig):
        super().__init__()
        self.cfg = cfg
        t = cfg.text
        self.vision = VisionTransformer(cfg.vision)
        self.text_encoder = TextTransformer(t, cross=True) if cfg.text_encoder else None
        self.text_decoder = TextTransformer(t, cross=True) if cfg.text_decoder else None
        self.lm_head = LMHead(t) if cfg.text_decoder else None
        if cfg.itc_itm and cfg.text_encoder:
            self.vision_proj = nn.Linear(cfg.vision.width, cfg.embed_dim)
            self.text_proj = nn.Linear(t.width, cfg.embed_dim)
            self.itm_head = nn.Linear(t.width, 2)
            # Why 0.07: CLIP/BLIP's initial contrastive temperature; learned, clamped in itc_logits.
            self.temp = nn.Parameter(torch.tensor(0.07))
        else:
            self.vision_proj = self.text_proj = self.itm_head = self.temp = None
        self.apply(_init_weights)
        if self.vision is not None:
            init_stem(self.vision.patch_embed)
        if cfg.tie_lm_head and self.lm_head is not None:
            self.lm_head.out.weight = self.text_decoder.embed.tokens.weight

    # ---- towers ---------------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> image states (B, 1 + N, D_v)."""
        return self.vision(pixels)

    def encode_text(self, ids, mask, image_states=None, image_mask=None) -> torch.Tensor:
        """Bidirectional text encoder; image-grounded when `image_states` (B, S, D_v) is given. -> (B, L, D_t)."""
        return self.need("text_encoder")(ids, mask, context=image_states, context_mask=image_mask)

    def decoder_logits(self, ids, mask, context, context_mask=None, cache: KVCache | None = None) -> torch.Tensor:
        """Causal decoder over (B, L) tokens reading `context` (B, S, D) -> next-token logits (B, L, V)."""
        h = self.need("text_decoder")(ids, mask, context=context, context_mask=context_mask, causal=True, cache=cache)
        return self.lm_head(h)

    # ---- heads ----------------------------------------------------------------------------------
    def image_feature(self, image_states: torch.Tensor) -> torch.Tensor:
        """ITC image embedding: normalise(W_v v_cls) -> (B, E)."""
        return F.normalize(self.need("vision_proj")(image_states[:, 0]), dim=-1)

    def text_feature(self, ids, mask) -> torch.Tensor:
        """ITC text embedding from the unimodal encoder: normalise(W_t t_cls) -> (B, E)."""
        return F.normalize(self.need("text_proj")(self.encode_text(ids, mask)[:, 0]), dim=-1)

    def itc_logits(self, image_feat, text_feat) -> torch.Tensor:
        """(B_i, E), (B_t, E) -> similarity / tau (B_i, B_t); tau clamped to [0.001, 0.5] as in BLIP."""
        return image_feat @ text_feat.t() / self.temp.clamp(0.001, 0.5)

    def itm_logits(self, ids, mask, image_states, image_mask=None) -> torch.Tensor:
        """Image-grounded encoder on (B, L) tokens (first token [ENC]) -> match / no-match logits (B, 2)."""
        return self.need("itm_head")(self.encode_text(ids, mask, image_states, image_mask)[:, 0])

    def lm_loss(self, ids, mask, context, context_mask=None, target_mask=None, label_smoothing: float = 0.0):
        """Mean next-token cross-entropy. ids (B, L) start with [DEC]; targets are ids[:, 1:] where
        `target_mask` (default: `mask`) is 1 — a caption prompt is excluded by zeroing it there."""
        h = self.need("text_decoder")(ids, mask, context=context, context_mask=context_mask, causal=True)  # (B, L, D)
        keep = (mask if target_mask is None else target_mask)[:, 1:] != 0  # (B, L-1) positions with a target
        # The LM head runs only where there is a target (padding and prompt positions are skipped):
        # the same loss as masking the full (B, L-1, V) logits, without computing them.
        logits = self.lm_head(h[:, :-1][keep])  # (T, V)
        return F.cross_entropy(logits.float(), ids[:, 1:][keep], label_smoothing=label_smoothing)

    def sequence_logprob(self, ids, mask, context, context_mask=None, target_mask=None) -> torch.Tensor:
        """Sum of log p(token) over the targets ids[:, 1:] (where target_mask, default mask, is 1) -> (B,)."""
        logp = self.decoder_logits(ids, mask, context, context_mask)[:, :-1].float().log_softmax(-1)
        tok = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, L-1)
        keep = (mask if target_mask is None else target_mask)[:, 1:].to(tok.dtype)
        return (tok * keep).sum(-1)

    def need(self, name: str) -> nn.Module:
        module = getattr(self, name)
        if module is None:
            raise ValueError(f"this model ({self.cfg.name}) has no {name}")
        return module


def _init_weights(m: nn.Module) -> None:
    # BERT/ViT convention: N(0, 0.02) weights, zero biases, unit LayerNorm.
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.trunc_normal_(m.weight, std=0.02)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
