"""Load transformers-format BLIP checkpoints (`BlipForConditionalGeneration`, `BlipForQuestionAnswering`,
`BlipForImageTextRetrieval`) into vlpeft's `Blip`.

Only names change: transformers' fused vision `qkv` projection is split into q/k/v (rows are laid out
[q; k; v], each D rows); everything else maps one to one. Tests build transformers' own classes
from small random configs and check logits and greedy captions agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from vlpeft.errors import UserError
from vlpeft.model.config import BlipConfig, TextConfig, VisionConfig

# transformers architecture -> which parts it has
ARCHITECTURES = {
    "BlipForConditionalGeneration": dict(text_encoder=False, text_decoder=True, itc_itm=False),
    "BlipForQuestionAnswering": dict(text_encoder=True, text_decoder=True, itc_itm=False),
    "BlipForImageTextRetrieval": dict(text_encoder=True, text_decoder=False, itc_itm=True),
}

# (transformers suffix regex, vlpeft suffix) inside one text tower
_TEXT_RULES = [
    (r"embeddings\.word_embeddings\.", "embed.tokens."),
    (r"embeddings\.position_embeddings\.", "embed.positions."),
    (r"embeddings\.LayerNorm\.", "embed.norm."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.query\.", r"blocks.\1.self_attn.q."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.key\.", r"blocks.\1.self_attn.k."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.value\.", r"blocks.\1.self_attn.v."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.self_attn.o."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"blocks.\1.self_norm."),
    (r"encoder\.layer\.(\d+)\.crossattention\.self\.query\.", r"blocks.\1.cross_attn.q."),
    (r"encoder\.layer\.(\d+)\.crossattention\.self\.key\.", r"blocks.\1.cross_attn.k."),
    (r"encoder\.layer\.(\d+)\.crossattention\.self\.value\.", r"blocks.\1.cross_attn.v."),
    (r"encoder\.layer\.(\d+)\.crossattention\.output\.dense\.", r"blocks.\1.cross_attn.o."),
    (r"encoder\.layer\.(\d+)\.crossattention\.output\.LayerNorm\.", r"blocks.\1.cross_norm."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"blocks.\1.mlp_norm."),
]
_VISION_RULES = [
    (r"embeddings\.patch_embedding\.", "patch_embed."),
    (r"encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.o."),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.", r"blocks.\1.mlp.fc1."),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.", r"blocks.\1.mlp.fc2."),
    (r"post_layernorm\.", "norm."),
]
# Keys transformers may store that vlpeft does not use (pooler of an unused BertModel, buffers).
_IGNORED = re.compile(r"(\.pooler\.|position_ids$|^logit_scale$|^text_model\.|^visual_projection|^text_projection)")


def is_transformers_blip(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "blip"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def config_from_hf(hf: dict, source: str, token_ids: dict[str, int] | None = None) -> BlipConfig:
    """vlpeft config from a transformers BLIP `config.json` dict."""
    if hf.get("model_type") != "blip":
        raise UserError(f"{source}: not a BLIP checkpoint (model_type={hf.get('model_type')!r})")
    archs = hf.get("architectures") or []
    known = [a for a in archs if a in ARCHITECTURES]
    if not known:
        raise UserError(f"{source}: unsupported BLIP architecture {archs}; supported: {', '.join(ARCHITECTURES)}")
    v, t = hf.get("vision_config") or {}, hf.get("text_config") or {}
    size = lambda x: x if isinstance(x, int) else x[0]
    vision = VisionConfig(
        image_size=size(v.get("image_size", 384)), patch_size=size(v.get("patch_size", 16)),
        width=v.get("hidden_size", 768), depth=v.get("num_hidden_layers", 12), heads=v.get("num_attention_heads", 12),
        mlp_width=v.get("intermediate_size", 3072), ln_eps=v.get("layer_norm_eps", 1e-5),
    )
    ids = token_ids or {}
    text = TextConfig(
        vocab_size=t.get("vocab_size", 30524), width=t.get("hidden_size", 768), depth=t.get("num_hidden_layers", 12),
        heads=t.get("num_attention_heads", 8), mlp_width=t.get("intermediate_size", 3072),
        max_positions=t.get("max_position_embeddings", 512), cross_width=vision.width,
        ln_eps=t.get("layer_norm_eps", 1e-12),
        pad_id=_int(t.get("pad_token_id"), 0), sep_id=_int(t.get("sep_token_id"), 102),
        bos_id=_int(t.get("bos_token_id"), 30522),
        cls_id=ids.get("cls", 101), enc_id=ids.get("enc", ids.get("cls", 101)),
    )
    for key, want in [("hidden_act", "gelu")]:
        for part, d in (("vision_config", v), ("text_config", t)):
            if d.get(key, want) != want:
                raise UserError(f"{source}: {part}.{key}={d[key]!r} is not supported (only {want!r})")
    try:
        return BlipConfig(vision=vision, text=text, embed_dim=hf.get("image_text_hidden_size", 256),
                          tie_lm_head=bool(hf.get("tie_word_embeddings", t.get("tie_word_embeddings", True))),
                          name=known[0], **ARCHITECTURES[known[0]])
    except ValueError as e:
        raise UserError(f"{source}: {e}") from e


def _int(x, default: int) -> int:
    if isinstance(x, list):
        x = x[0] if x else None
    return default if x is None else int(x)


def convert_state_dict(hf_sd: dict[str, torch.Tensor], cfg: BlipConfig) -> dict[str, torch.Tensor]:
    """transformers BLIP state dict -> vlpeft `Blip` state dict (no tensor is changed, only renamed/split)."""
    out: dict[str, torch.Tensor] = {}
    D = cfg.vision.width
    for key, w in hf_sd.items():
        if _IGNORED.search(key):
            continue
        if key.startswith("vision_model."):
            rest = key[len("vision_model."):]
            if rest == "embeddings.class_embedding":
                out["vision.cls_token"] = w
            elif rest == "embeddings.position_embedding":
                out["vision.pos_embed"] = w
            elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.qkv\.(weight|bias)", rest):
                for j, name in enumerate("qkv"):  # fused rows [q; k; v]
                    out[f"vision.blocks.{m[1]}.attn.{name}.{m[2]}"] = w[j * D:(j + 1) * D]
            else:
                out["vision." + _apply(_VISION_RULES, rest, key)] = w
        elif key.startswith("text_decoder.bert."):
            out["text_decoder." + _apply(_TEXT_RULES, key[len("text_decoder.bert."):], key)] = w
        elif key.startswith("text_decoder.cls.predictions."):
            rest = key[len("text_decoder.cls.predictions."):]
            name = {"transform.dense.weight": "dense.weight", "transform.dense.bias": "dense.bias",
                    "transform.LayerNorm.weight": "norm.weight", "transform.LayerNorm.bias": "norm.bias",
                    "decoder.weight": "out.weight", "decoder.bias": "out.bias", "bias": "out.bias"}.get(rest)
            if name is None:
                raise UserError(f"unexpected checkpoint tensor {key!r}")
            out["lm_head." + name] = w
        elif key.startswith("text_encoder."):
            out["text_encoder." + _apply(_TEXT_RULES, key[len("text_encoder."):], key)] = w
        elif key.split(".")[0] in ("vision_proj", "text_proj", "itm_head"):
            out[key] = w
        else:
            raise UserError(f"unexpected checkpoint tensor {key!r}")
    if cfg.text_decoder and "lm_head.out.weight" not in out:  # tied to the word embeddings, stored once
        out["lm_head.out.weight"] = out["text_decoder.embed.tokens.weight"]
    return out


def _apply(rules, rest: str, key: str) -> str:
    for pattern, repl in rules:
        new, n = re.subn("^" + pattern, repl, rest)
        if n:
            return new
    raise UserError(f"unexpected checkpoint tensor {key!r}")


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers checkpoint folder (safetensors, sharded safetensors, or .bin)."""
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    try:
        if single.is_file():
            return load_file(single)
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(load_file(folder / shard))
            return sd
        binary = folder / "pytorch_model.bin"
        if binary.is_file():
            return torch.load(binary, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated weight files
        raise UserError(f"{folder}: cannot read checkpoint weights ({e.__class__.__name__}: {str(e)[:200]})") from e
    raise UserError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
