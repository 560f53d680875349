"""One interface for every PEFT method: a registry of methods, applying one to a model, exact
trainable-parameter counts per part, and saving / loading only the PEFT weights.

A method is a `MethodSpec`: a config dataclass (every field with help text) and an `apply(model, cfg)`
function that inserts the method's modules through the model's PEFT hooks (see
`vlpeft.model.layers`) or marks existing parameters trainable. `apply_peft` first freezes the whole
model, so after it exactly the method's parameters (plus the task head when asked) need gradients.
Which parameters belong to the method is known by construction (names that appeared, or that the
method marked), never by matching substrings of names.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from vlpeft import catalogue
from vlpeft.errors import UserError, did_you_mean
from vlpeft.io import atomic_path, read_json, write_json
from vlpeft.validate import from_mapping

# The parts of a Blip a method can be placed in, and the attribute that holds each.
PARTS = ("vision", "text_encoder", "text_decoder")
# Parameter groups for counting: first attribute name -> part.
_PART_OF = {
    "vision": "vision",
    "text_encoder": "text_encoder",
    "text_decoder": "text_decoder",
    "lm_head": "head",
    "vision_proj": "itc_itm",
    "text_proj": "itc_itm",
    "itm_head": "itc_itm",
    "temp": "itc_itm",
}


@dataclass(frozen=True)
class PeftCommon:
    """Fields every method config has."""

    placement: tuple[str, ...] = field(
        default=("text_encoder", "text_decoder"),
        metadata={
            "help": "parts that get the method: any of vision, text_encoder, text_decoder "
            "(parts the model lacks are skipped)"
        },
    )
    train_head: bool = field(default=False, metadata={
        "help": "also fully train the task head (the LM head: transform + vocabulary projection), counted as 'head'"})


@dataclass(frozen=True)
class MethodSpec:
    """A PEFT method's implementation: its config dataclass (deriving from PeftCommon), `apply`, and
    optionally `fold` (training form -> plain inference form, PEFT weights only). What needs no torch
    (learning rate, knob, ladder, group, ...) is its entry in `vlpeft.catalogue`, read through `entry`."""

    name: str
    config: type  # a frozen dataclass deriving from PeftCommon
    apply: Callable[[nn.Module, Any], None]
    fold: Callable[[nn.Module], None] | None = None

    @property
    def entry(self) -> catalogue.Method:
        return catalogue.CATALOGUE[self.name]

    @property
    def default_lr(self) -> float:
        return self.entry.default_lr

    @property
    def knob(self) -> str | None:
        return self.entry.knob

    @property
    def ladder(self) -> tuple[int, ...]:
        return self.entry.ladder

    @property
    def summary(self) -> str:
        return self.entry.summary

    @property
    def trains(self) -> bool:
        return self.entry.trains


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Register the implementation of a method of the catalogue (the line at the end of its module)."""
    if spec.name not in catalogue.CATALOGUE:
        raise ValueError(f"PEFT method {spec.name!r} is not in the catalogue (add its line to vlpeft/catalogue.py)")
    if spec.name in REGISTRY:
        raise ValueError(f"PEFT method {spec.name!r} is already registered")
    if spec.knob is not None and spec.knob not in {f.name for f in dataclasses.fields(spec.config)}:
        raise ValueError(f"PEFT method {spec.name!r}: knob {spec.knob!r} is not a field of {spec.config.__name__}")
    REGISTRY[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    import vlpeft.peft  # noqa: F401  (registers the methods of the catalogue)

    if name in catalogue.CATALOGUE and name not in REGISTRY:  # entered in the catalogue after vlpeft.peft loaded
        importlib.import_module(catalogue.CATALOGUE[name].module)
    if name not in REGISTRY:
        raise UserError(f"unknown PEFT method {name!r}{did_you_mean(name, REGISTRY)}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def make_config(method: str, overrides: dict[str, Any] | None = None, source: str = "PEFT config"):
    """Validated config of `method` from JSON-like overrides (vlpeft.validate.from_mapping: unknown
    keys, wrong types and values out of range are one-line UserErrors)."""
    return from_mapping(get_method(method).config, overrides, f"{source}: {method}", what="options")


def check_placement(placement: tuple[str, ...], where: str) -> None:
    if not placement:
        raise ValueError(f"{where}: placement names no part (use any of {', '.join(PARTS)})")
    for part in placement:
        if part not in PARTS:
            raise ValueError(f"{where}: placement {part!r} is not a part{did_you_mean(part, PARTS)} "
                             f"(use any of {', '.join(PARTS)})")


def placed_towers(model: nn.Module, placement: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """(name, tower) for each placed part the model has."""
    return [(p, getattr(model, p)) for p in placement if getattr(model, p, None) is not None]


@dataclass
class PeftState:
    """What `apply_peft` did: kept on the model as `model.peft_state`."""

    method: str
    config: Any
    backbone_names: frozenset[str]  # parameters of the model before the method was applied
    trainable_names: tuple[str, ...]  # every parameter that requires grad
    folded: bool = False  # the method's `fold` has run (e.g. prefix reparameterisation folded)

    def refresh(self, model: nn.Module) -> None:
        """Re-read which parameters need gradients (after folding or merging changed the modules)."""
        self.trainable_names = tuple(n for n, p in model.named_parameters() if p.requires_grad)


_SHARED = "_vlpeft_shared_params"  # on a `shared_copy`: the ids of the parameters it shares


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` for one run that shares every parameter tensor with it: the modules and
    buffers are copied, the weights are not (a study worker loads a checkpoint once and gives each
    cell one of these instead of a `copy.deepcopy`). `apply_peft` on the copy then gives every
    parameter the method trains a private clone (copy-on-train), so the original's tensors never
    change. A shared parameter has one `requires_grad` flag for both: after `apply_peft` on a copy,
    the original's parameters are frozen (the original is meant as the source of copies)."""
    params = {id(p): p for p in model.parameters()}
    out = copy.deepcopy(model, memo=dict(params))
    setattr(out, _SHARED, frozenset(params))
    return out


def _unshare_trained(model: nn.Module) -> None:
    """On a `shared_copy`: replace each shared parameter that now requires grad by a private clone
    (one per tensor, so tied weights stay tied) and freeze the shared one again."""
    shared = getattr(model, _SHARED, None)
    if shared is None:
        return
    clones: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and id(p) in shared and (p.requires_grad or id(p) in clones):
                if id(p) not in clones:
                    clones[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=True)
                module._parameters[name] = clones[id(p)]
                p.requires_grad_(False)


def apply_peft(model: nn.Module, method: str, config=None) -> PeftState:
    """Freeze `model`, apply `method` with `config` (a config object, a dict of overrides or None).
    On a `shared_copy`, the parameters it trains become the copy's own (the original is untouched)."""
    spec = get_method(method)
    if config is None or isinstance(config, dict):
        config = make_config(method, config)
    if getattr(model, "peft_state", None) is not None:
        raise ValueError("this model already has a PEFT method applied")
    before = {n for n, _ in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    spec.apply(model, config)
    if config.train_head:
        if getattr(model, "lm_head", None) is None:
            raise UserError(f"{method}: train_head needs a text decoder with an LM head")
        for p in model.lm_head.parameters():
            p.requires_grad_(True)
    _unshare_trained(model)
    state = PeftState(method=method, config=config, backbone_names=frozenset(before), trainable_names=())
    state.refresh(model)
    model.peft_state = state
    return state


def fold(model: nn.Module) -> None:
    """Run the applied method's `fold` (if it has one): same outputs, plain inference parameters."""
    state = model.peft_state
    spec = get_method(state.method)
    if spec.fold is not None and not state.folded:
        spec.fold(model)
        state.folded = True
        state.refresh(model)


def part_of(name: str) -> str:
    return _PART_OF.get(name.split(".")[0], "other")


def count_params(model: nn.Module) -> dict[str, Any]:
    """Exact parameter counts (each tensor once, tied weights once).

    trainable: total and per part (vision / text_encoder / text_decoder / head / itc_itm);
    backbone: every parameter the PEFT method did not add; total: backbone + PEFT.
    """
    state = getattr(model, "peft_state", None)
    per_part = {p: 0 for p in (*PARTS, "head", "itc_itm", "other")}
    trainable = backbone = total = 0
    for name, p in model.named_parameters():  # named_parameters() yields a shared tensor once
        n = p.numel()
        total += n
        if state is None or name in state.backbone_names:
            backbone += n
        if p.requires_grad:
            trainable += n
            per_part[part_of(name)] += n
    # Methods trained through a reparameterisation (prefix) report their folded size as the budget,
    # as the literature does; for every other method budget == trainable.
    folded = trainable
    for m in model.modules():
        if hasattr(m, "folded_numel") and any(p.requires_grad for p in m.parameters()):
            folded += m.folded_numel - sum(p.numel() for p in m.parameters() if p.requires_grad)
    return {"trainable": trainable, "budget": folded, "trainable_per_part": per_part,
            "trainable_without_head": trainable - per_part["head"], "backbone": backbone, "total": total,
            "trainable_percent_of_backbone": 100.0 * trainable / max(backbone, 1),
            "budget_percent_of_backbone": 100.0 * folded / max(backbone, 1)}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def config_dict(config) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def save_peft(model: nn.Module, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write only the PEFT weights: `peft_model.safetensors` and `peft_config.json` (method, config, counts)."""
    from safetensors.torch import save_file

    state = getattr(model, "peft_state", None)
    if state is None:
        raise ValueError("no PEFT method applied to this model")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "peft_model.safetensors") as tmp:
        save_file(trainable_state(model), str(tmp))
    write_json(folder / "peft_config.json", {"format": "vlpeft-peft", "version": 1, "method": state.method,
                                             "config": config_dict(state.config), "folded": state.folded,
                                             "params": count_params(model),
                                             **(extra or {})})
    return folder


def load_peft(model: nn.Module, folder: str | Path) -> PeftState:
    """Apply the saved method to `model` (a fresh base model) and load its weights bit-identically."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_json(folder / "peft_config.json", "PEFT config")
    if not isinstance(meta, dict) or meta.get("format") != "vlpeft-peft":
        raise UserError(f"{folder / 'peft_config.json'}: not a vlpeft PEFT config")
    state = apply_peft(model, meta["method"], make_config(meta["method"], meta.get("config"), str(folder)))
    if meta.get("folded"):
        fold(model)
    path = folder / "peft_model.safetensors"
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        tensors = load_file(path)
    except Exception as e:
        raise UserError(f"{path}: cannot read ({e.__class__.__name__})") from e
    params = dict(model.named_parameters())
    want = set(state.trainable_names)
    if set(tensors) != want:
        odd = sorted(set(tensors) ^ want)
        raise UserError(f"{path}: does not match {meta['method']} on this model (e.g. {odd[0]!r})")
    with torch.no_grad():
        for name, t in tensors.items():
            if params[name].shape != t.shape:
                raise UserError(
                    f"{path}: {name} has shape {tuple(t.shape)}, the model needs {tuple(params[name].shape)}"
                )
            params[name].copy_(t)
    return state


__all__ = ["PARTS", "PeftCommon", "MethodSpec", "REGISTRY", "register", "get_method", "make_config", "apply_peft",
           "count_params", "save_peft", "load_peft", "placed_towers", "check_placement", "PeftState", "fold"]
