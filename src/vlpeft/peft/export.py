"""Export vlpeft LoRA weights as a Hugging Face peft adapter for transformers' BLIP classes.

`export_hf_peft(model, folder)` writes the two files `peft.PeftModel.from_pretrained(hf_blip, folder)`
reads: `adapter_config.json` (a `LoraConfig`, peft_type "LORA") and `adapter_model.safetensors` with keys
`base_model.model.<transformers module path>.lora_A.weight` (r x in) and `.lora_B.weight` (out x r);
peft stores them without the adapter name and inserts it on load.

Module paths come from the name map in `vlpeft.model.hf` (`to_hf`), the one checkpoint loading reads
the other way: `text_decoder.blocks.N.self_attn.q` -> `text_decoder.bert.encoder.layer.N.attention.self.query`,
`vision.blocks.N.attn.o` -> `vision_model.encoder.layers.N.self_attn.projection`, and so on.

transformers' vision attention has ONE fused projection qkv (3D x D, rows [q; k; v]) where vlpeft has
three. LoRA on the present parts P of {q, k, v} of a block (each rank r, scale s = alpha / r) becomes
one LoRA on qkv:
    A' = [A_j for j in P]                    (|P| r x D)      stacked along the rank
    B'[rows of j, columns of j] = B_j        (3D x |P| r)     zeros elsewhere (absent parts, other parts)
    r' = |P| r,  alpha' = |P| alpha          so peft's s' = alpha' / r' = alpha / r
so s' B' A' x = [s B_q A_q x; 0; s B_v A_v x] for P = {q, v}: exactly vlpeft's update, row block by
row block. r' and alpha' go in `rank_pattern` / `alpha_pattern` under the module's full path (peft
matches pattern keys as regexes against the path's end; a full path only matches itself).

The transformers class the adapter belongs to is recorded in `auto_mapping`, as peft itself does for
a model without `task_type`: BlipForConditionalGeneration (vision + decoder), BlipForQuestionAnswering
(vision + encoder + decoder), BlipForImageTextRetrieval (vision + encoder). With
`base_model_name_or_path` set, `peft.AutoPeftModel.from_pretrained(folder)` builds the right one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vlpeft.errors import UserError
from vlpeft.io import atomic_path, write_text
from vlpeft.model.hf import from_hf, to_hf
from vlpeft.peft.lora import LoraLinear

_BLIP_LIBRARY = "transformers.models.blip.modeling_blip"


def hf_blip_class(model: nn.Module) -> str:
    """Name of the transformers BLIP class whose module tree holds every part of `model`."""
    cfg = model.cfg
    if cfg.text_decoder:
        return "BlipForQuestionAnswering" if cfg.text_encoder else "BlipForConditionalGeneration"
    return "BlipForImageTextRetrieval"


def hf_module_path(name: str) -> tuple[str, int | None]:
    """vlpeft Linear name -> (transformers module path, slot in the fused vision qkv or None).

    e.g. "text_decoder.blocks.0.cross_attn.v" -> ("text_decoder.bert.encoder.layer.0.crossattention.self.value", None),
         "vision.blocks.1.attn.k" -> ("vision_model.encoder.layers.1.self_attn.qkv", 1).
    """
    try:
        path = to_hf(name)
    except KeyError:
        raise UserError(f"hf export: LoRA layer {name!r} has no transformers BLIP counterpart") from None
    held = from_hf(path)  # the vlpeft layers in that module: one, or q, k, v of a fused qkv in row order
    return path, (held.index(name) if len(held) > 1 else None)


def export_hf_peft(model: nn.Module, folder: str | Path, base_model_name_or_path: str = "") -> Path:
    """Write `model`'s LoRA as a peft adapter folder (adapter_config.json + adapter_model.safetensors).

    `model`: a vlpeft Blip with LoRA applied (`apply_peft(model, "lora", ...)`), not merged.
    `base_model_name_or_path`: the transformers BLIP checkpoint (Hub id or folder) the adapter is for;
    recorded as is (null when empty). Returns the folder.
    """
    state = getattr(model, "peft_state", None)
    if state is None or state.method != "lora":
        got = "no PEFT method" if state is None else f"PEFT method {state.method!r}"
        raise UserError(f"hf export: only LoRA exports to the peft format; this model has {got}")
    cfg = state.config
    if cfg.train_head:
        raise UserError("hf export: train_head=true trains the LM head fully, which a peft LoRA adapter cannot carry")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}
    if not layers:
        raise UserError("hf export: the model has no LoRA layers left (were they merged with merge_lora?)")

    # transformers module path -> {slot: layer}; slot None for an unfused Linear, 0/1/2 for q/k/v of qkv
    groups: dict[str, dict[int | None, LoraLinear]] = {}
    for name, layer in layers.items():
        if layer.rank != cfg.rank or layer.scaling != cfg.alpha / cfg.rank:
            raise UserError(f"hf export: LoRA layer {name!r} has rank {layer.rank} / scaling {layer.scaling}, "
                            f"not the config's rank {cfg.rank} / alpha {cfg.alpha}")
        path, slot = hf_module_path(name)
        groups.setdefault(path, {})[slot] = layer

    tensors: dict[str, torch.Tensor] = {}
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    for path, parts in sorted(groups.items()):
        if None in parts:
            A, B = parts[None].lora_A, parts[None].lora_B  # (r, in), (out, r)
        else:
            A, B = _fuse_qkv(parts)
            n = len(parts)
            if n > 1:  # r' = n r, alpha' = n alpha: peft's alpha'/r' is the same float as alpha/r
                rank_pattern[path], alpha_pattern[path] = n * cfg.rank, _number(n * cfg.alpha)
        key = f"base_model.model.{path}"
        tensors[f"{key}.lora_A.weight"] = A.detach().to("cpu").contiguous().clone()
        tensors[f"{key}.lora_B.weight"] = B.detach().to("cpu").contiguous().clone()

    adapter_config = {
        "alpha_pattern": alpha_pattern,
        "auto_mapping": {"base_model_class": hf_blip_class(model), "parent_library": _BLIP_LIBRARY},
        "base_model_name_or_path": base_model_name_or_path or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": _number(cfg.alpha),
        "lora_dropout": cfg.dropout,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": cfg.rank,
        "rank_pattern": rank_pattern,
        "revision": None,
        "target_modules": sorted(groups),  # exact module paths (a list: peft matches names, not regexes)
        "task_type": None,
        "use_dora": False,
        "use_rslora": False,
    }

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "adapter_model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})  # peft's own metadata
    write_text(folder / "adapter_config.json", json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return folder


def _fuse_qkv(parts: dict[int, LoraLinear]) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA (A', B') on the fused qkv from LoRAs on some of q (slot 0), k (1), v (2); see the module doc."""
    present = sorted(parts)
    D = parts[present[0]].out_features
    A = torch.cat([parts[j].lora_A.detach() for j in present], dim=0)  # (n r, D)
    B = A.new_zeros(3 * D, A.shape[0])  # (3D, n r)
    col = 0
    for j in present:
        r = parts[j].rank
        B[j * D:(j + 1) * D, col:col + r] = parts[j].lora_B.detach()  # rows of part j, its own rank columns
        col += r
    return A, B


def _number(x: float) -> int | float:
    """8.0 -> 8 (peft writes lora_alpha as an int), 0.5 -> 0.5."""
    return int(x) if float(x).is_integer() else float(x)


__all__ = ["export_hf_peft", "hf_blip_class", "hf_module_path"]
