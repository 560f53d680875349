"""Export a vlpeft PEFT model for transformers' BLIP classes: as a Hugging Face peft adapter
(`export_hf_peft`: LoRA, (IA)^3) or as a transformers checkpoint with the trained weights folded in
(`export_hf_checkpoint`: LoRA, (IA)^3, BitFit, full, frozen). `export_refusal(method, format)` says
why the other combinations cannot be exported (`REFUSED`).

`export_hf_peft(model, folder)` writes the two files `peft.PeftModel.from_pretrained(hf_blip, folder)`
reads: `adapter_config.json` and `adapter_model.safetensors`. For LoRA: a `LoraConfig` (peft_type
"LORA") and keys `base_model.model.<transformers module path>.lora_A.weight` (r x in) and
`.lora_B.weight` (out x r); peft stores them without the adapter name and inserts it on load.

(IA)^3: an `IA3Config` (peft_type "IA3") and keys `base_model.model.<path>.ia3_l`. peft's (IA)^3 layer
computes, with its vector l,
    y = l ⊙ (W x + b)      l: (out, 1), a module not in `feedforward_modules`
    y = W (l ⊙ x) + b      l: (1, in),  a module in `feedforward_modules`
which is vlpeft's `ScaledLinear` with where="out" (keys and values: bias scaled too) and where="in"
(the MLP's second layer, scaling act(W_1 x)): the same vectors, reshaped. On the fused vision qkv the
vector is [1; l_k; l_v] (3D, 1): queries unscaled, as in vlpeft.

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
(vision + encoder + decoder), BlipForImageTextRetrieval (vision + encoder); a run's task kind picks
it where given (captioning: the first, VQA: the second), and layers in parts that class lacks are left
out (a captioning run never calls the text encoder). With `base_model_name_or_path` set,
`peft.AutoPeftModel.from_pretrained(folder)` builds the right one.

`export_hf_checkpoint` folds the method into the base weights (`merged_state_dict`), renames them with
`vlpeft.model.hf.state_dict_to_hf` and writes config.json (`config_to_hf`), model.safetensors and the
processor files (`processor_files`, or the transformers base checkpoint's own).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from vlpeft.errors import UserError
from vlpeft.io import atomic_path, write_text
from vlpeft.model.hf import ARCHITECTURES, config_to_hf, from_hf, processor_files, state_dict_to_hf, to_hf
from vlpeft.peft.ia3 import ScaledLinear
from vlpeft.peft.lora import LoraLinear

_BLIP_LIBRARY = "transformers.models.blip.modeling_blip"

FORMATS = ("peft", "merged")
# methods each format carries; every other (method, format) has its reason in REFUSED
EXPORTS = {"peft": ("lora", "ia3"), "merged": ("lora", "ia3", "bitfit", "full", "frozen")}
_MERGED_ONLY = "use --format merged (a transformers checkpoint with the trained weights folded in)"
REFUSED = {
    ("prompt", "peft"): "peft's prompt tuning on transformers' BLIP classes takes their first sub-model, the "
                        "ViT (vision_model), as its transformer and finds no word embeddings there, so its forward "
                        "fails; without a task_type peft does not build it at all (peft 0.21); nor would it insert "
                        "the prompts where vlpeft does (after the embeddings, also in the ViT and the text encoder)",
    ("prefix", "peft"): "peft's prefix tuning on transformers' BLIP classes hands its key/value cache to their first "
                        "sub-model, the ViT (vision_model), whose forward fails; without a task_type peft does not "
                        "build it at all (peft 0.21); nor does it reach vlpeft's prefixes in the text encoder or the "
                        "cross-attention",
    ("adapter", "peft"): "peft has no sequential bottleneck adapter (Houlsby) method",
    ("mam", "peft"): "peft has neither MAM's parallel adapter nor a prefix tuning that works on BLIP",
    ("bitfit", "peft"): f"peft has no BitFit method; {_MERGED_ONLY}",
    ("full", "peft"): f"full fine-tuning changes every weight, which is a checkpoint, not an adapter; {_MERGED_ONLY}",
    ("frozen", "peft"): f"nothing was trained (a frozen run has no adapter); {_MERGED_ONLY}",
    ("prompt", "merged"): "prompt tokens are extra inputs, not weights: transformers' BLIP classes have no place for "
                          "them; nothing to fold them into",
    ("prefix", "merged"): "prefix keys and values are extra attention inputs, not weights: transformers' BLIP "
                          "classes have no place for them",
    ("adapter", "merged"): "adapters are extra layers (a bottleneck MLP with a nonlinearity after each sub-layer), "
                           "which transformers' BLIP classes lack and no weight can absorb",
    ("mam", "merged"): "MAM's parallel adapters and prefixes are extra layers and attention inputs, which "
                       "transformers' BLIP classes lack and no weight can absorb",
}
# a run's task kind -> the transformers class that computes it (captioning: vision + decoder; VQA: all three)
TASK_CLASSES = {"caption": "BlipForConditionalGeneration", "vqa": "BlipForQuestionAnswering"}
# files of a transformers checkpoint besides its config and weights that make its processor
PROCESSOR_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "preprocessor_config.json", "processor_config.json")


def export_refusal(method: str, fmt: str) -> str | None:
    """Why `method` cannot be exported in format `fmt` ("peft" or "merged"), or None when it can."""
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} unknown; known: {', '.join(FORMATS)}")
    if method in EXPORTS[fmt]:
        return None
    return REFUSED.get((method, fmt), f"{method} has no {fmt} export")


def hf_blip_class(model: nn.Module, task_kind: str | None = None) -> str:
    """Name of the transformers BLIP class for `model`: the one computing `task_kind` ("caption",
    "vqa") when given, else the one whose module tree holds every part of `model`."""
    if task_kind is not None:
        if task_kind not in TASK_CLASSES:
            raise UserError(f"hf export: task kind {task_kind!r} has no transformers BLIP class; "
                            f"known: {', '.join(TASK_CLASSES)}")
        return TASK_CLASSES[task_kind]
    cfg = model.cfg
    if cfg.text_decoder:
        return "BlipForQuestionAnswering" if cfg.text_encoder else "BlipForConditionalGeneration"
    return "BlipForImageTextRetrieval"


def _held_by(name: str, architecture: str) -> bool:
    """Whether the transformers class `architecture` has the part (vision, text_encoder, text_decoder)
    that the vlpeft module `name` is in."""
    part = name.split(".")[0]
    return part == "vision" or ARCHITECTURES[architecture].get(part, False)


def hf_module_path(name: str) -> tuple[str, int | None]:
    """vlpeft Linear name -> (transformers module path, slot in the fused vision qkv or None).

    e.g. "text_decoder.blocks.0.cross_attn.v" -> ("text_decoder.bert.encoder.layer.0.crossattention.self.value", None),
         "vision.blocks.1.attn.k" -> ("vision_model.encoder.layers.1.self_attn.qkv", 1).
    """
    try:
        path = to_hf(name)
    except KeyError:
        raise UserError(f"hf export: layer {name!r} has no transformers BLIP counterpart") from None
    held = from_hf(path)  # the vlpeft layers in that module: one, or q, k, v of a fused qkv in row order
    return path, (held.index(name) if len(held) > 1 else None)


def export_hf_peft(model: nn.Module, folder: str | Path, base_model_name_or_path: str = "",
                   architecture: str | None = None) -> Path:
    """Write `model`'s LoRA or (IA)^3 as a peft adapter folder (adapter_config.json + adapter_model.safetensors).

    `model`: a vlpeft Blip with LoRA (not merged) or (IA)^3 applied (`apply_peft`, `load_peft`).
    `base_model_name_or_path`: the transformers BLIP checkpoint (Hub id or folder) the adapter is for;
    recorded as is (null when empty). `architecture`: the transformers class (default: `hf_blip_class`).
    Returns the folder. Anything else is one UserError, before a file is written.
    """
    state = getattr(model, "peft_state", None)
    if state is None:
        raise UserError("hf export: only LoRA and (IA)^3 export to the peft format; this model has no PEFT method")
    why = export_refusal(state.method, "peft")
    if why is not None:
        raise UserError(f"hf export: {state.method} does not export to the peft format: {why}")
    if state.config.train_head:
        raise UserError(f"hf export: train_head=true trains the LM head fully, which a peft {state.method} adapter "
                        f"cannot carry; {_MERGED_ONLY}")
    architecture = architecture or hf_blip_class(model)
    build = _lora_adapter if state.method == "lora" else _ia3_adapter
    tensors, adapter_config = build(model, state.config, architecture)
    adapter_config.update({
        "auto_mapping": {"base_model_class": architecture, "parent_library": _BLIP_LIBRARY},
        "base_model_name_or_path": base_model_name_or_path or None,
        "inference_mode": True,
        "modules_to_save": None,
        "revision": None,
        "task_type": None,
    })
    return _write_adapter(folder, tensors, adapter_config)


def _lora_adapter(model: nn.Module, cfg, architecture: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, LoraConfig fields) of the LoRA layers of `model` in the parts `architecture` has."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}
    if not layers:
        raise UserError("hf export: the model has no LoRA layers left (were they merged with merge_lora?)")

    # transformers module path -> {slot: layer}; slot None for an unfused Linear, 0/1/2 for q/k/v of qkv
    groups: dict[str, dict[int | None, LoraLinear]] = {}
    for name, layer in layers.items():
        if layer.rank != cfg.rank or layer.scaling != cfg.alpha / cfg.rank:
            raise UserError(f"hf export: LoRA layer {name!r} has rank {layer.rank} / scaling {layer.scaling}, "
                            f"not the config's rank {cfg.rank} / alpha {cfg.alpha}")
        if not _held_by(name, architecture):
            continue  # a part the class lacks (and the task never calls)
        path, slot = hf_module_path(name)
        groups.setdefault(path, {})[slot] = layer
    if not groups:
        raise UserError(f"hf export: no LoRA layer is in a part {architecture} has")

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
        tensors[f"{key}.lora_A.weight"] = A.detach()
        tensors[f"{key}.lora_B.weight"] = B.detach()

    return tensors, {
        "alpha_pattern": alpha_pattern,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": _number(cfg.alpha),
        "lora_dropout": cfg.dropout,
        "peft_type": "LORA",
        "r": cfg.rank,
        "rank_pattern": rank_pattern,
        "target_modules": sorted(groups),  # exact module paths (a list: peft matches names, not regexes)
        "use_dora": False,
        "use_rslora": False,
    }


def _ia3_adapter(model: nn.Module, cfg, architecture: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, IA3Config fields) of the (IA)^3 vectors of `model` in the parts `architecture` has;
    see the module doc for peft's (IA)^3 and the fused qkv."""
    groups: dict[str, dict[int | None, ScaledLinear]] = {}  # transformers module path -> {slot: layer}
    for name, layer in model.named_modules():
        if isinstance(layer, ScaledLinear) and _held_by(name, architecture):
            path, slot = hf_module_path(name)
            groups.setdefault(path, {})[slot] = layer
    if not groups:
        raise UserError(f"hf export: no (IA)^3 vector is in a part {architecture} has")

    tensors: dict[str, torch.Tensor] = {}
    feedforward: list[str] = []
    for path, parts in sorted(groups.items()):
        if None in parts:
            layer = parts[None]
            scale = layer.ia3_scale.detach()
            if layer.where == "in":  # peft's feedforward module: l (1, in) scales the input
                vector = scale[None, :]  # (1, in)
                feedforward.append(path)
            else:
                vector = scale[:, None]  # (out, 1)
        else:
            if any(layer.where != "out" for layer in parts.values()):
                raise UserError(f"hf export: (IA)^3 on {path} scales an input inside a fused qkv, which peft "
                                "cannot express")
            D = next(iter(parts.values())).out_features
            first = next(iter(parts.values())).ia3_scale
            vector = torch.ones(3 * D, 1, dtype=first.dtype, device=first.device)  # (3D, 1): [l_q; l_k; l_v]
            for j, layer in parts.items():
                vector[j * D:(j + 1) * D, 0] = layer.ia3_scale.detach()  # rows of part j; absent parts stay 1
        tensors[f"base_model.model.{path}.ia3_l"] = vector

    return tensors, {
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "feedforward_modules": feedforward,  # exact paths, a subset of target_modules
        "init_ia3_weights": True,
        "peft_type": "IA3",
        "target_modules": sorted(groups),
    }


def _write_adapter(folder: str | Path, tensors: dict[str, torch.Tensor], adapter_config: dict) -> Path:
    """adapter_model.safetensors then adapter_config.json in `folder`, each written atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    on_cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(folder / "adapter_model.safetensors") as tmp:
        save_file(on_cpu, str(tmp), metadata={"format": "pt"})  # peft's own metadata
    write_text(folder / "adapter_config.json", json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return folder


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict with its PEFT method folded into the base weights, under the base model's
    names (the method's own tensors gone), on the model's device:
        LoRA           W' = W + s B A                 s = alpha / r;  B A: (out, r) (r, in)
        (IA)^3, out    W' = diag(l) W,  b' = l ⊙ b    y = l ⊙ (W x + b)
        (IA)^3, in     W' = W diag(l),  b' = b        y = W (l ⊙ x) + b
        BitFit, full, frozen: the trained weights are the base weights' own tensors; nothing to fold.
    A method that adds anything else (prompts, prefixes, adapters) is one UserError (`REFUSED`)."""
    state = getattr(model, "peft_state", None)
    sd = dict(model.state_dict())  # tied weights under each of their names
    if state is None:
        return sd
    why = export_refusal(state.method, "merged")
    if why is not None:
        raise UserError(f"hf export: {state.method} cannot be merged into the weights: {why}")
    folded: set[str] = set()
    for name, m in model.named_modules():
        if isinstance(m, LoraLinear):
            sd[f"{name}.weight"] = m.weight + m.scaling * (m.lora_B @ m.lora_A)  # (out, in)
            folded |= {f"{name}.lora_A", f"{name}.lora_B"}
        elif isinstance(m, ScaledLinear):
            scale = m.ia3_scale
            if m.where == "out":
                sd[f"{name}.weight"] = scale[:, None] * m.weight  # (out, 1) * (out, in)
                if m.bias is not None:
                    sd[f"{name}.bias"] = scale * m.bias  # (out,)
            else:
                sd[f"{name}.weight"] = m.weight * scale[None, :]  # (out, in) * (1, in)
            folded.add(f"{name}.ia3_scale")
    # Anything the method added that was not folded above has no place in the base model's weights.
    params = dict(model.named_parameters(remove_duplicate=False))
    backbone = {id(params[n]) for n in state.backbone_names if n in params}
    left = [n for n, p in params.items() if id(p) not in backbone and n not in folded]
    if left:
        raise UserError(f"hf export: {state.method} added {left[0]!r}, which no base weight can absorb")
    return {k: v for k, v in sd.items() if k not in folded}


def export_hf_checkpoint(model: nn.Module, folder: str | Path, architecture: str | None = None,
                         tokenizer=None, preprocess=None, processor_from: str | Path | None = None,
                         source: str = "model") -> Path:
    """Write `model`, its PEFT method folded in (`merged_state_dict`), as a transformers BLIP
    checkpoint folder that `transformers.<architecture>.from_pretrained(folder)` loads: model.safetensors,
    the processor files and config.json (last: a folder with a config is complete).

    `architecture`: the transformers class (default: `hf_blip_class`). The processor files are copied
    from `processor_from` (a transformers checkpoint folder: the base's own, `PROCESSOR_FILES`) when
    given, else made from `tokenizer` and `preprocess` (`vlpeft.model.hf.processor_files`); neither:
    weights and config only. `source` names the model in errors. Returns the folder."""
    from safetensors.torch import save_file

    architecture = architecture or hf_blip_class(model)
    config = config_to_hf(model.cfg, architecture, source)  # first: a model transformers cannot hold is refused
    tensors = state_dict_to_hf(merged_state_dict(model), model.cfg, architecture)
    dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        config["dtype"] = dtypes.pop()
    on_cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(on_cpu, str(tmp), metadata={"format": "pt"})  # what save_pretrained writes
    files: dict[str, str | Path] = {}
    if processor_from is not None:
        files = {name: Path(processor_from) / name for name in PROCESSOR_FILES
                 if (Path(processor_from) / name).is_file()}
    if tokenizer is not None and preprocess is not None:
        made = processor_files(tokenizer, preprocess, model.cfg)
        if processor_from is None:
            files = dict(made)
        elif "preprocessor_config.json" not in files:  # vlpeft read the defaults it writes
            files["preprocessor_config.json"] = made["preprocessor_config.json"]
    for name, content in files.items():
        if isinstance(content, Path):
            with atomic_path(folder / name) as tmp:
                shutil.copyfile(content, tmp)
        else:
            write_text(folder / name, content)
    write_text(folder / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
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


__all__ = ["FORMATS", "EXPORTS", "REFUSED", "export_refusal", "export_hf_peft", "export_hf_checkpoint",
           "merged_state_dict", "hf_blip_class", "hf_module_path"]
