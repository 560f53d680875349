"""Parameter budgets: a knob value, or a target number of trainable parameters resolved to the knob
whose exact count is nearest.

Counts are exact: the method is applied to a copy of the model built on the `meta` device (shapes
only, no memory, no arithmetic), and its parameters are counted. The count a budget refers to is
`count_params(...)["budget"]`: trainable parameters, with a prefix reparameterisation counted as the
plain prefixes it folds into (as the literature reports prefix sizes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from vlpeft.errors import UserError
from vlpeft.model.blip import Blip
from vlpeft.model.config import BlipConfig
from vlpeft.peft.base import apply_peft, count_params, get_method, make_config

MAX_KNOB = 4096


@dataclass(frozen=True)
class Budget:
    """Either `knob` (a value of the method's knob) or `params` (a target trainable-parameter count)."""

    knob: int | None = None
    params: int | None = None

    def __post_init__(self):
        if (self.knob is None) == (self.params is None):
            raise ValueError("a budget is a knob value or a parameter target, not both")

    def label(self) -> str:
        return f"knob={self.knob}" if self.knob is not None else f"params={self.params}"


def parse_budget(text: str | int) -> Budget:
    """'8' or 8 or 'knob=8' -> knob 8; 'params=50000' or 'params=50k' -> target 50,000 parameters."""
    if isinstance(text, int) and not isinstance(text, bool):
        return _positive(Budget(knob=text), text)
    s = str(text).strip().lower()
    kind, _, value = s.partition("=") if "=" in s else ("knob", "", s)
    mult = {"k": 1_000, "m": 1_000_000}.get(value[-1:], 1) if value else 1
    number = value[:-1] if mult != 1 else value
    try:
        n = int(float(number) * mult)
    except ValueError:
        raise UserError(
            f"budget {text!r}: expected a knob value (8, knob=8) or a parameter target (params=50k)"
        ) from None
    if kind not in ("knob", "params"):
        raise UserError(f"budget {text!r}: unknown kind {kind!r} (use knob=N or params=N)")
    return _positive(Budget(knob=n) if kind == "knob" else Budget(params=n), text)


def _positive(b: Budget, text) -> Budget:
    if (b.knob or b.params or 0) <= 0:
        raise UserError(f"budget {text!r}: must be positive")
    return b


def count_for(model_cfg: BlipConfig, method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Exact parameter counts of `method` with `overrides` on a model of `model_cfg` (meta device)."""
    config = make_config(method, overrides)
    with torch.device("meta"):
        model = Blip(model_cfg)
        apply_peft(model, method, config)
    return count_params(model)


def resolve(
    model_cfg: BlipConfig, method: str, budget: Budget | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """-> {"knob": name, "value": v, "overrides": full overrides, "params": counts, "target": target or None}."""
    spec = get_method(method)
    overrides = dict(overrides or {})
    if budget is None:
        value = getattr(make_config(method, overrides), spec.knob) if spec.knob else None
        counts = _within_model(model_cfg, method, spec.knob, value, overrides)
        return {"knob": spec.knob, "value": value, "overrides": overrides, "params": counts, "target": None}
    if spec.knob is None:
        raise UserError(f"{method} has no size knob: give no budget")
    if spec.knob in overrides:
        raise UserError(f"{method}: {spec.knob} {overrides[spec.knob]!r} given in the options and a budget "
                        f"({budget.label()}) too; give one of them")
    if budget.knob is not None:
        overrides[spec.knob] = budget.knob
        return {"knob": spec.knob, "value": budget.knob, "overrides": overrides,
                "params": _within_model(model_cfg, method, spec.knob, budget.knob, overrides), "target": None}
    def size(k):
        return count_for(model_cfg, method, {**overrides, spec.knob: k})["budget"]
    low, high = size(1), size(MAX_KNOB)
    if not (low / 2 <= budget.params <= high * 2):
        raise UserError(f"{method}: no {spec.knob} reaches {budget.params:,} parameters "
                        f"({spec.knob}=1 gives {low:,}, {spec.knob}={MAX_KNOB} gives {high:,})")
    lo, hi = 1, MAX_KNOB  # counts grow with the knob: binary search for the first knob >= target
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if size(mid) < budget.params else (lo, mid)
    best = min({max(1, lo - 1), lo}, key=lambda k: (abs(size(k) - budget.params), k))
    overrides[spec.knob] = best
    return {"knob": spec.knob, "value": best, "overrides": overrides,
            "params": count_for(model_cfg, method, overrides), "target": budget.params}


def _within_model(model_cfg: BlipConfig, method: str, knob: str | None, value, overrides: dict) -> dict[str, Any]:
    """The counts of `method` at knob `value`, refused before anything is allocated when the knob is
    past MAX_KNOB or would train more parameters than the whole model has (more than full fine-tuning:
    a LoRA rank far past the model's width)."""
    if knob is not None and value > MAX_KNOB:
        raise UserError(f"{method}: {knob} {value:,} is more than {MAX_KNOB}")
    counts = count_for(model_cfg, method, overrides)
    if knob is not None and counts["trainable"] > counts["backbone"]:
        raise UserError(f"{method}: {knob} {value:,} trains {counts['trainable']:,} parameters, more than the "
                        f"model's own {counts['backbone']:,} (full fine-tuning); use a smaller {knob}")
    return counts


def ladder(model_cfg: BlipConfig, method: str, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The method's default knob ladder with exact counts (one row without a knob for knob-less methods)."""
    spec = get_method(method)
    values = spec.ladder if spec.knob else (None,)
    rows = []
    for v in values:
        o = dict(overrides or {})
        if v is not None:
            o[spec.knob] = v
        c = count_for(model_cfg, method, o)
        rows.append({"knob": spec.knob, "value": v, "trainable": c["trainable"], "budget": c["budget"],
                     "percent_of_backbone": round(c["budget_percent_of_backbone"], 4),
                     "trainable_per_part": c["trainable_per_part"]})
    return rows


def default_placement(method: str) -> list[str]:
    return list(dataclasses.asdict(make_config(method))["placement"])


def method_config(model_cfg: BlipConfig, method: str, budget, options: dict, parts: tuple[str, ...],
                  user: str) -> tuple[dict[str, Any], Any]:
    """The config of `method` for a use (`user`, e.g. "task easyvqa-vqa") that runs only the model
    `parts`: its placement cut to those parts (a method placed elsewhere would train unused weights),
    then `budget` (a knob value or a parameter target, or None) resolved to a knob value.
    -> (the `resolve` record, the method config). UserError when no placed part is left."""
    from vlpeft.validate import coerce

    options = dict(options)
    if "placement" in options:
        placement = coerce(options["placement"], tuple[str, ...], f"{user}: {method} options placement")
    else:
        placement = make_config(method, {k: v for k, v in options.items() if k != "placement"}).placement
    used = [p for p in placement if p in parts]
    if not used:
        raise UserError(f"{method}: placement {placement} has no part that {user} uses ({', '.join(parts)})")
    options["placement"] = used
    resolved = resolve(model_cfg, method, parse_budget(budget) if budget is not None else None, options)
    return resolved, make_config(method, resolved["overrides"])

