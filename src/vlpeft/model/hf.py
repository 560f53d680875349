"""Load transformers-format BLIP checkpoints (`BlipForConditionalGeneration`, `BlipForQuestionAnswering`,
`BlipForImageTextRetrieval`) into vlpeft's `Blip`, and name vlpeft's parts the way transformers does.

Two name spaces, one map between them:
- vlpeft names: `Blip`'s parameter and module names, e.g. `text_decoder.blocks.0.self_attn.q.weight`;
- transformers names: those of the BLIP classes above, e.g.
  `text_decoder.bert.encoder.layer.0.attention.self.query.weight`.
`RULES` lists the pairs once; `from_hf` (loading a checkpoint: `convert_state_dict`) and `to_hf`
(exporting LoRA to Hugging Face peft: `vlpeft.peft.export`) both read it. A rule names a module or a
tensor and covers every name below it (`.weight`, `.bias`), so module paths map as well as tensors;
`{i}` stands for a block number.

Special cases, and why:
- fused qkv: transformers' vision attention has one projection `qkv` (3D x D, rows [q; k; v]) where
  vlpeft has three. Three rules share its name; `from_hf` returns the three vlpeft names in row order
  and `convert_state_dict` splits the rows into equal blocks in that order.
- text towers: one set of block rules serves both. The text encoder (VQA, retrieval) is a BERT
  (BlipTextModel) at `text_encoder.`; the decoder (captioning, VQA) is a BERT with an LM head
  (BlipTextLMHeadModel), so its BERT sits under `text_decoder.bert.` and its head under
  `text_decoder.cls.predictions.`.
- tied LM head: the output matrix is the decoder's word embeddings; transformers saves it once (as the
  embeddings), so `convert_state_dict` fills `lm_head.out.weight` from them when it is absent.
  The head's bias is one Parameter under two names (`HF_ALIASES`).
- ITC/ITM heads (`vision_proj`, `text_proj`, `itm_head`) keep their names.
- `HF_DROPPED`: transformers tensors vlpeft does not use; `VLPEFT_ONLY`: vlpeft tensors transformers lacks.

Tests build transformers' own classes from small random configs and check the map both ways
(tests/model/test_hf_names.py), and that logits and greedy captions agree (test_hf_equivalence.py).
"""

from __future__ import annotations

import json
import re
from functools import cache
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

# (vlpeft name, transformers name) inside the ViT: vlpeft `vision.` = transformers `vision_model.`
_VISION_RULES = [
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed", "embeddings.patch_embedding"),
    ("blocks.{i}.norm1", "encoder.layers.{i}.layer_norm1"),
    ("blocks.{i}.attn.q", "encoder.layers.{i}.self_attn.qkv"),  # fused qkv: rows [q; k; v], in this order
    ("blocks.{i}.attn.k", "encoder.layers.{i}.self_attn.qkv"),
    ("blocks.{i}.attn.v", "encoder.layers.{i}.self_attn.qkv"),
    ("blocks.{i}.attn.o", "encoder.layers.{i}.self_attn.projection"),
    ("blocks.{i}.norm2", "encoder.layers.{i}.layer_norm2"),
    ("blocks.{i}.mlp.fc1", "encoder.layers.{i}.mlp.fc1"),
    ("blocks.{i}.mlp.fc2", "encoder.layers.{i}.mlp.fc2"),
    ("norm", "post_layernorm"),
]
# (vlpeft name, transformers name) inside one BERT-style text tower, encoder or decoder
_TEXT_RULES = [
    ("embed.tokens", "embeddings.word_embeddings"),
    ("embed.positions", "embeddings.position_embeddings"),
    ("embed.norm", "embeddings.LayerNorm"),
    ("blocks.{i}.self_attn.q", "encoder.layer.{i}.attention.self.query"),
    ("blocks.{i}.self_attn.k", "encoder.layer.{i}.attention.self.key"),
    ("blocks.{i}.self_attn.v", "encoder.layer.{i}.attention.self.value"),
    ("blocks.{i}.self_attn.o", "encoder.layer.{i}.attention.output.dense"),
    ("blocks.{i}.self_norm", "encoder.layer.{i}.attention.output.LayerNorm"),
    ("blocks.{i}.cross_attn.q", "encoder.layer.{i}.crossattention.self.query"),
    ("blocks.{i}.cross_attn.k", "encoder.layer.{i}.crossattention.self.key"),
    ("blocks.{i}.cross_attn.v", "encoder.layer.{i}.crossattention.self.value"),
    ("blocks.{i}.cross_attn.o", "encoder.layer.{i}.crossattention.output.dense"),
    ("blocks.{i}.cross_norm", "encoder.layer.{i}.crossattention.output.LayerNorm"),
    ("blocks.{i}.mlp.fc1", "encoder.layer.{i}.intermediate.dense"),
    ("blocks.{i}.mlp.fc2", "encoder.layer.{i}.output.dense"),
    ("blocks.{i}.mlp_norm", "encoder.layer.{i}.output.LayerNorm"),
]
# (vlpeft name, transformers name) of the heads, full names
_HEAD_RULES = [
    ("lm_head.dense", "text_decoder.cls.predictions.transform.dense"),
    ("lm_head.norm", "text_decoder.cls.predictions.transform.LayerNorm"),
    ("lm_head.out", "text_decoder.cls.predictions.decoder"),  # weight tied to the word embeddings
    ("vision_proj", "vision_proj"),
    ("text_proj", "text_proj"),
    ("itm_head", "itm_head"),
]
# model part: (vlpeft prefix, transformers prefix, rules inside it)
_PARTS = [
    ("vision", "vision_model", _VISION_RULES),
    ("text_encoder", "text_encoder", _TEXT_RULES),
    ("text_decoder", "text_decoder.bert", _TEXT_RULES),
    ("", "", _HEAD_RULES),
]
RULES: list[tuple[str, str]] = [
    (f"{ours_prefix}.{ours}" if ours_prefix else ours, f"{hf_prefix}.{hf}" if hf_prefix else hf)
    for ours_prefix, hf_prefix, rules in _PARTS for ours, hf in rules
]

# transformers name -> the name `RULES` knows the same tensor by
HF_ALIASES = {
    # transformers' LM prediction head registers its bias Parameter twice: as `bias` (the name save_pretrained
    # writes) and as `decoder.bias`.
    "text_decoder.cls.predictions.bias": "text_decoder.cls.predictions.decoder.bias",
}
# transformers names vlpeft does not load (regex, searched), and why
HF_DROPPED = [
    (r"\.pooler\.", "pooler of a BertModel: no BLIP head reads it"),
    (r"position_ids$", "buffer 0..L-1 older transformers saved: vlpeft computes positions"),
    (r"^logit_scale$", "BlipModel's contrastive temperature: not in the supported classes"),
    (r"^text_model\.", "BlipModel's text tower: not in the supported classes"),
    (r"^visual_projection", "BlipModel's ITC projection: not in the supported classes"),
    (r"^text_projection", "BlipModel's ITC projection: not in the supported classes"),
]
# vlpeft names with no transformers counterpart, and why
VLPEFT_ONLY = {
    "temp": "ITC temperature: transformers' retrieval class has none; vlpeft keeps BLIP's initial 0.07",
}
_DROPPED = re.compile("|".join(f"({pattern})" for pattern, _ in HF_DROPPED))


def from_hf(key: str) -> tuple[str, ...]:
    """transformers name -> the vlpeft names it holds: () for a dropped tensor (`HF_DROPPED`), one name
    for a rename, (q, k, v) in row order for a fused vision qkv. KeyError for a name no rule knows.

    e.g. "vision_model.encoder.layers.1.self_attn.qkv.bias"
         -> ("vision.blocks.1.attn.q.bias", "vision.blocks.1.attn.k.bias", "vision.blocks.1.attn.v.bias")
    """
    if _DROPPED.search(key):
        return ()
    key = HF_ALIASES.get(key, key)
    names = tuple(name for ours, hf in RULES if (name := _rename(key, hf, ours)) is not None)
    if not names:
        raise KeyError(key)
    return names


def to_hf(name: str) -> str:
    """vlpeft name (tensor or module) -> transformers name. KeyError for a name no rule knows
    (`VLPEFT_ONLY`, or a module transformers has no counterpart of).

    e.g. "text_decoder.blocks.0.cross_attn.v" -> "text_decoder.bert.encoder.layer.0.crossattention.self.value",
         "vision.blocks.1.attn.k.weight" -> "vision_model.encoder.layers.1.self_attn.qkv.weight"
    """
    for ours, hf in RULES:
        if (key := _rename(name, ours, hf)) is not None:
            return key
    raise KeyError(name)


def _rename(name: str, source: str, target: str) -> str | None:
    """`name` matched against rule side `source` and rewritten to `target`; None when it does not match."""
    m = _rule_regex(source).fullmatch(name)
    if m is None:
        return None
    block = m.groupdict().get("i") or ""
    return target.replace("{i}", block) + (m["below"] or "")


@cache
def _rule_regex(pattern: str) -> re.Pattern:
    """"blocks.{i}.norm1" -> a regex matching "blocks.3.norm1" and names below it ("blocks.3.norm1.weight")."""
    return re.compile(re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + r"(?P<below>\..+)?")


def config_from_hf(hf: dict, source: str, token_ids: dict[str, int] | None = None) -> BlipConfig:
    """vlpeft config from a transformers BLIP `config.json` dict."""
    if hf.get("model_type") != "blip":
        raise UserError(f"{source}: not a BLIP checkpoint (model_type={hf.get('model_type')!r})")
    archs = hf.get("architectures") or []
    known = [a for a in archs if a in ARCHITECTURES]
    if not known:
        raise UserError(f"{source}: unsupported BLIP architecture {archs}; supported: {', '.join(ARCHITECTURES)}")
    v, t = hf.get("vision_config") or {}, hf.get("text_config") or {}
    def size(x):
        return x if isinstance(x, int) else x[0]
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
    for key, w in hf_sd.items():
        try:
            names = from_hf(key)
        except KeyError:
            raise UserError(f"unexpected checkpoint tensor {key!r}") from None
        if len(names) == 1:
            out[names[0]] = w
        elif names:  # fused qkv: equal row blocks, in the order from_hf lists them
            out.update(zip(names, w.chunk(len(names))))
    if cfg.text_decoder and "lm_head.out.weight" not in out:  # tied to the word embeddings, stored once
        out["lm_head.out.weight"] = out["text_decoder.embed.tokens.weight"]
    return out


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers checkpoint folder: safetensors, else PyTorch .bin; one file or
    shards listed in an index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`)."""
    from safetensors.torch import load_file

    def read_bin(path):
        return torch.load(path, map_location="cpu", weights_only=True)

    try:
        for name, read in (("model.safetensors", load_file), ("pytorch_model.bin", read_bin)):
            single, index = folder / name, folder / f"{name}.index.json"
            if single.is_file():
                return read(single)
            if index.is_file():
                sd: dict[str, torch.Tensor] = {}
                for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                    sd.update(read(folder / shard))
                return sd
    except Exception as e:  # corrupt or truncated weight files, a shard missing
        raise UserError(f"{folder}: cannot read checkpoint weights ({e.__class__.__name__}: {str(e)[:200]})") from e
    raise UserError(f"{folder}: no model.safetensors or pytorch_model.bin (nor a sharded index of either)")
