"""Model configuration: frozen dataclasses with validation, presets, and JSON round-trips.

One config describes both the tiny model pre-trained here and real BLIP checkpoints
(`vlpeft.model.hf` builds it from a transformers `config.json`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vlpeft.errors import UserError, did_you_mean

STEMS = ("patch", "conv", "pool")


@dataclass(frozen=True)
class VisionConfig:
    """ViT image encoder (pre-LayerNorm blocks, [CLS] token, learned positions, final LayerNorm)."""

    image_size: int = field(default=64, metadata={"help": "input image side in pixels (square)"})
    patch_size: int = field(default=8, metadata={"help": "patch side in pixels; image_size must be a multiple"})
    stem: str = field(default="patch", metadata={"help": "how pixels become patch tokens: 'patch' = one strided "
                                                          "p x p convolution (ViT, every BLIP checkpoint); 'conv' = "
                                                          "strided convolutions (Xiao et al. 2021); 'pool' = "
                                                          "convolution, ReLU and 2x2 max-pool stages (the tiny "
                                                          "preset, pre-trained with stem_batchnorm); see vit.py. "
                                                          "conv and pool need "
                                                          "patch_size a power of two >= 4"})
    stem_batchnorm: bool = field(default=False, metadata={"help": "'pool' stem only: a BatchNorm after each stage's "
                                                                 "convolution, for pre-training; folded into the "
                                                                 "convolutions (and this set to False) when the "
                                                                 "checkpoint is saved (vit.fold_stem_batchnorm)"})
    width: int = field(default=128, metadata={"help": "hidden size D_v"})
    depth: int = field(default=4, metadata={"help": "number of transformer blocks"})
    heads: int = field(default=4, metadata={"help": "attention heads; must divide width"})
    mlp_width: int = field(default=512, metadata={"help": "MLP hidden size"})
    ln_eps: float = field(default=1e-5, metadata={"help": "LayerNorm epsilon"})
    dropout: float = field(default=0.0, metadata={"help": "attention-probability dropout"})

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextConfig:
    """BERT-style text transformer (post-LayerNorm blocks) used as encoder and as decoder."""

    vocab_size: int = field(default=1024, metadata={"help": "tokenizer vocabulary size"})
    width: int = field(default=128, metadata={"help": "hidden size D_t"})
    depth: int = field(default=4, metadata={"help": "number of transformer blocks"})
    heads: int = field(default=4, metadata={"help": "attention heads; must divide width"})
    mlp_width: int = field(default=512, metadata={"help": "MLP hidden size"})
    max_positions: int = field(default=64, metadata={"help": "learned position embeddings (max tokens)"})
    cross_width: int = field(
        default=128, metadata={"help": "width of the states cross-attention reads (= vision width)"}
    )
    ln_eps: float = field(default=1e-12, metadata={"help": "LayerNorm epsilon"})
    dropout: float = field(default=0.0, metadata={"help": "hidden and attention dropout"})
    pad_id: int = field(default=0, metadata={"help": "padding token id"})
    cls_id: int = field(default=2, metadata={"help": "[CLS] token id (start of encoder input)"})
    sep_id: int = field(default=3, metadata={"help": "[SEP] token id (end of text; decoding stops here)"})
    bos_id: int = field(default=5, metadata={"help": "[DEC] token id: decoder start"})
    enc_id: int = field(default=6, metadata={"help": "[ENC] token id: replaces [CLS] for image-text matching"})


@dataclass(frozen=True)
class BlipConfig:
    """A BLIP model (Li et al., ICML 2022): ViT + text encoder + text decoder + ITC/ITM/LM heads.

    `text_encoder` / `text_decoder` / `itc_itm` say which parts exist: a transformers captioning
    checkpoint has no text encoder, a retrieval checkpoint no decoder.
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = field(default=64, metadata={"help": "ITC projection size"})
    text_encoder: bool = field(default=True, metadata={"help": "has a text encoder (ITC/ITM, VQA questions)"})
    text_decoder: bool = field(default=True, metadata={"help": "has a text decoder with LM head (captions, answers)"})
    itc_itm: bool = field(default=True, metadata={"help": "has ITC projections, temperature and ITM head"})
    tie_lm_head: bool = field(default=False, metadata={"help": "LM output weights tied to decoder word embeddings"})
    name: str = field(default="custom", metadata={"help": "preset name or source, for records"})

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any], source: str = "config") -> "BlipConfig":
        """Build from a dict (JSON), rejecting unknown keys and wrong types with a one-line UserError."""
        from vlpeft.validate import from_mapping

        if not isinstance(d, dict):
            raise UserError(f"{source}: model config must be a JSON object")
        return from_mapping(BlipConfig, d, source, what="keys")


def validate(cfg: BlipConfig) -> None:
    v, t = cfg.vision, cfg.text
    for name, val in [("vision.width", v.width), ("vision.depth", v.depth), ("vision.heads", v.heads),
                      ("vision.patch_size", v.patch_size), ("vision.image_size", v.image_size),
                      ("text.width", t.width), ("text.depth", t.depth), ("text.heads", t.heads),
                      ("text.vocab_size", t.vocab_size), ("text.max_positions", t.max_positions),
                      ("embed_dim", cfg.embed_dim)]:
        if val <= 0:
            raise ValueError(f"{name} must be positive, got {val}")
    if v.width % v.heads:
        raise ValueError(f"vision.width {v.width} is not divisible by vision.heads {v.heads}")
    if t.width % t.heads:
        raise ValueError(f"text.width {t.width} is not divisible by text.heads {t.heads}")
    if v.image_size % v.patch_size:
        raise ValueError(f"vision.image_size {v.image_size} is not a multiple of patch_size {v.patch_size}")
    if v.stem not in STEMS:
        raise ValueError(f"vision.stem {v.stem!r} unknown{did_you_mean(v.stem, STEMS)}; known: {', '.join(STEMS)}")
    if v.stem in ("conv", "pool") and (v.patch_size < 4 or v.patch_size & (v.patch_size - 1)):
        raise ValueError(f"vision.stem {v.stem!r} needs patch_size a power of two >= 4, got {v.patch_size}")
    if v.stem_batchnorm and v.stem != "pool":
        raise ValueError(f"vision.stem_batchnorm needs the 'pool' stem, not {v.stem!r}")
    if t.cross_width != v.width:
        raise ValueError(f"text.cross_width {t.cross_width} must equal vision.width {v.width}")
    if cfg.text_encoder and cfg.text_decoder and t.width != t.cross_width:
        # The answer decoder cross-attends to the question encoder's states (width D_t) with the
        # same cross-attention as captioning (width D_v), as in BLIP: both must agree.
        raise ValueError(f"text.width {t.width} must equal vision.width {v.width} when both text towers exist")
    if not (cfg.text_encoder or cfg.text_decoder):
        raise ValueError("a model needs a text encoder or a text decoder")


PRESETS: dict[str, BlipConfig] = {
    # ~2.9 M parameters: pre-trains on 2 CPU cores in minutes on 64x64 synthetic scenes.
    "tiny": BlipConfig(
        vision=VisionConfig(image_size=64, patch_size=8, stem="pool", stem_batchnorm=True,
                            width=128, depth=4, heads=4, mlp_width=512),
        text=TextConfig(vocab_size=1024, width=128, depth=3, heads=4, mlp_width=512, max_positions=64, cross_width=128),
        embed_dim=64,
        name="tiny",
    ),
    # BLIP base (ViT-B/16 at 384 px, BERT-base text): for shape and speed measurements with random weights.
    "base": BlipConfig(
        vision=VisionConfig(image_size=384, patch_size=16, width=768, depth=12, heads=12, mlp_width=3072),
        text=TextConfig(vocab_size=30524, width=768, depth=12, heads=12, mlp_width=3072, max_positions=512,
                        cross_width=768, cls_id=101, sep_id=102, bos_id=30522, enc_id=30523),
        embed_dim=256,
        tie_lm_head=True,
        name="base",
    ),
}


def preset(name: str) -> BlipConfig:
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}{did_you_mean(name, PRESETS)}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
