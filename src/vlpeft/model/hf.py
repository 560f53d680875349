"""Load transformers-format BLIP checkpoints (`BlipForConditionalGeneration`, `BlipForQuestionAnswering`,
`BlipForImageTextRetrieval`) into vlpeft's `Blip`, and name vlpeft's parts the way transformers does.

Two name spaces, one map between them:
- vlpeft names: `Blip`'s parameter and module names, e.g. `text_decoder.blocks.0.self_attn.q.weight`;
- transformers names: those of the BLIP classes above, e.g.
  `text_decoder.bert.encoder.layer.0.attention.self.query.weight`.
`RULES` lists the pairs once; `from_hf` (loading a checkpoint: `convert_state_dict`) and `to_hf`
(exporting to Hugging Face peft and writing transformers checkpoints: `vlpeft.peft.export`) both read it.
Both directions of the config and the weights live here: `config_from_hf` / `config_to_hf`,
`convert_state_dict` / `state_dict_to_hf`; `processor_files` writes vlpeft's tokenizer and image
preprocessing as the files `transformers.BlipProcessor` reads. A rule names a module or a
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
from typing import TYPE_CHECKING

import torch

from vlpeft.errors import UserError
from vlpeft.model.config import BlipConfig, TextConfig, VisionConfig

if TYPE_CHECKING:
    from vlpeft.data.images import ImagePreprocess
    from vlpeft.model.tokenizer import TextTokenizer

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


# what each part of ARCHITECTURES is, in words (for errors)
_PART_WORDS = {"text_encoder": "a text encoder", "text_decoder": "a text decoder", "itc_itm": "ITC/ITM heads"}


def config_to_hf(cfg: BlipConfig, architecture: str, source: str) -> dict:
    """transformers BLIP `config.json` dict of `cfg` as `architecture` (a key of ARCHITECTURES): the
    inverse of `config_from_hf`, so that config_from_hf(config_to_hf(cfg, a, s), s, token_ids of cfg) is
    `cfg` with a's parts and name. One-line UserError (naming `source`) for what transformers' BLIP
    cannot hold: a vision stem other than one patch convolution ('patch'), or a part the class needs
    and the model lacks."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown BLIP architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    lacking = [_PART_WORDS[part] for part, has in ARCHITECTURES[architecture].items() if has and not getattr(cfg, part)]
    if lacking:
        raise UserError(f"{source}: {architecture} needs {' and '.join(lacking)}, which this model lacks")
    v, t = cfg.vision, cfg.text
    if v.stem != "patch":
        raise UserError(f"{source}: vision stem {v.stem!r} has no transformers counterpart (transformers' BLIP ViT "
                        f"embeds pixels with one {v.patch_size}x{v.patch_size} convolution, vlpeft's stem 'patch'); "
                        f"only checkpoints with that stem export")
    return {
        "architectures": [architecture],
        "model_type": "blip",
        "image_text_hidden_size": cfg.embed_dim,
        "tie_word_embeddings": cfg.tie_lm_head,
        "vision_config": {
            "model_type": "blip_vision_model", "image_size": v.image_size, "patch_size": v.patch_size,
            "hidden_size": v.width, "num_hidden_layers": v.depth, "num_attention_heads": v.heads,
            "intermediate_size": v.mlp_width, "layer_norm_eps": v.ln_eps, "hidden_act": "gelu",
            "attention_dropout": v.dropout,
        },
        "text_config": {
            "model_type": "blip_text_model", "vocab_size": t.vocab_size, "hidden_size": t.width,
            "num_hidden_layers": t.depth, "num_attention_heads": t.heads, "intermediate_size": t.mlp_width,
            "max_position_embeddings": t.max_positions, "encoder_hidden_size": t.cross_width,
            "layer_norm_eps": t.ln_eps, "hidden_act": "gelu", "hidden_dropout_prob": t.dropout,
            "attention_probs_dropout_prob": t.dropout, "pad_token_id": t.pad_id, "bos_token_id": t.bos_id,
            "sep_token_id": t.sep_id, "eos_token_id": t.sep_id,  # BLIP ends a text with [SEP]
            "tie_word_embeddings": cfg.tie_lm_head,
        },
    }


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


# vlpeft's top-level modules -> the ARCHITECTURES part a class needs to hold them (the ViT: every class)
_HELD_BY = {"text_encoder": "text_encoder", "text_decoder": "text_decoder", "lm_head": "text_decoder",
            "vision_proj": "itc_itm", "text_proj": "itc_itm", "itm_head": "itc_itm"}
# the name `RULES` gives a tensor -> the name transformers' save_pretrained writes it under
_SAVED_AS = {ours: saved for saved, ours in HF_ALIASES.items()}


def state_dict_to_hf(state: dict[str, torch.Tensor], cfg: BlipConfig, architecture: str) -> dict[str, torch.Tensor]:
    """vlpeft `Blip` state dict -> the state dict of transformers' `architecture`: the inverse of
    `convert_state_dict` (no tensor is changed, only renamed or stacked).

    Left out: parts the class lacks (a captioning class has no text encoder) and `VLPEFT_ONLY`
    tensors; a tied LM head is stored once, as the word embeddings (as save_pretrained does), and the
    head's bias under the name save_pretrained writes (untied: under both its names, as save_pretrained
    does). q, k, v of a vision block become its fused qkv:
        qkv = [W_q; W_k; W_v]   (3D x D),   bias [b_q; b_k; b_v]   (3D)
    in the row order `from_hf` lists them (the order `convert_state_dict` splits them in)."""
    has = ARCHITECTURES[architecture]
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}  # transformers qkv name -> {vlpeft name: tensor}
    for name, w in state.items():
        part = _HELD_BY.get(name.split(".")[0])
        if name in VLPEFT_ONLY or (part is not None and not has[part]):
            continue
        if name == "lm_head.out.weight" and cfg.tie_lm_head:
            continue
        try:
            key = to_hf(name)
        except KeyError:
            raise UserError(f"{architecture}: tensor {name!r} has no transformers counterpart") from None
        if len(from_hf(key)) > 1:
            fused.setdefault(key, {})[name] = w
        else:
            out[_SAVED_AS.get(key, key)] = w
    for key, parts in fused.items():
        names = from_hf(key)
        if set(parts) != set(names):
            raise UserError(f"{architecture}: {key} needs {', '.join(names)}; the state has {', '.join(sorted(parts))}")
        out[key] = torch.cat([parts[n] for n in names])  # (3D, D) weight, (3D,) bias
    if not cfg.tie_lm_head:  # untied, save_pretrained writes the bias under both names and from_pretrained wants both
        for saved, ours in HF_ALIASES.items():
            if saved in out:
                out[ours] = out[saved]
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


# vlpeft's resample names -> the PIL filter numbers transformers' image processors take
_PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}


def processor_files(tokenizer: TextTokenizer, preprocess: ImagePreprocess, cfg: BlipConfig) -> dict[str, str]:
    """File name -> text of the files `transformers.BlipProcessor.from_pretrained` (and AutoProcessor)
    read, for vlpeft's tokenizer and image preprocessing, so that the processor gives vlpeft's inputs:
    - tokenizer.json: the same WordPiece tokenizer, with BERT's post-processor ([CLS] text [SEP], what
      vlpeft's `encode_batch` adds itself; vlpeft drops the post-processor when it reads the file);
    - tokenizer_config.json: a BertTokenizer with BLIP's special tokens ([DEC] as bos when present);
    - preprocessor_config.json: BlipImageProcessor: resize to S x S with the same Pillow filter,
      x / 255, (x - mean) / std per channel, as `vlpeft.data.images.preprocess`;
    - processor_config.json: BlipProcessor."""
    import json

    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_str(tokenizer.tokenizer.to_str())  # own copy
    cls, sep = tokenizer.tokenizer.id_to_token(tokenizer.cls_id), tokenizer.tokenizer.id_to_token(tokenizer.sep_id)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.cls_id), (sep, tokenizer.sep_id)])
    name = tokenizer.tokenizer.id_to_token
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                        "model_max_length": cfg.text.max_positions, "padding_side": "right",
                        "cls_token": cls, "sep_token": sep, "pad_token": name(tokenizer.pad_id),
                        "unk_token": name(tokenizer.unk_id), "mask_token": name(tokenizer.mask_id),
                        **({"bos_token": name(tokenizer.dec_id)} if tokenizer.dec_id != tokenizer.cls_id else {}),
                        "processor_class": "BlipProcessor"}
    size = preprocess.image_size
    image_config = {"image_processor_type": "BlipImageProcessor", "processor_class": "BlipProcessor",
                    "do_convert_rgb": True, "do_resize": True, "size": {"height": size, "width": size},
                    "resample": _PIL_RESAMPLE[preprocess.resample], "do_rescale": True, "rescale_factor": 1 / 255,
                    "do_normalize": True, "image_mean": list(preprocess.mean), "image_std": list(preprocess.std)}

    def dump(d):
        return json.dumps(d, indent=2) + "\n"

    return {"tokenizer.json": tok.to_str(pretty=True), "tokenizer_config.json": dump(tokenizer_config),
            "preprocessor_config.json": dump(image_config),
            "processor_config.json": dump({"processor_class": "BlipProcessor"})}
