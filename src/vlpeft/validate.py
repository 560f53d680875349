"""Building a validated config dataclass from a JSON/YAML mapping: unknown keys get a did-you-mean,
values are checked against the field's type hint, and `metadata={"choices": (...)}` restricts a
field to a set of values. Every problem is a one-line UserError naming where the value came from.

Used by the PEFT method configs (`peft.make_config`) and the task kinds' options (`tasks.base`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from vlpeft.errors import UserError, did_you_mean


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type hint `hint` (int, float, bool, str, tuple[str, ...], dict,
    `X | None`); ints are accepted for floats, a comma-separated string for a tuple of names."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) == 1:
            return coerce(value, options[0], where)
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be a list of names, got {value!r}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise UserError(f"{where} must be a string, got {value!r}")
    if (hint is dict or origin is dict) and not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping, got {value!r}")
    return value


def from_mapping(cls: type, data: Any, where: str, what: str = "options") -> Any:
    """An instance of the frozen dataclass `cls` from the mapping `data` (missing keys take the
    field defaults). A ValueError or UserError raised by `cls.__post_init__` is re-raised as a
    UserError prefixed with `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: {what} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kw = {}
    for key, value in data.items():
        if key not in fields:
            raise UserError(f"{where}: unknown {what[:-1] if what.endswith('s') else what} {key!r}"
                            f"{did_you_mean(str(key), fields)}; {what}: {', '.join(fields) or 'none'}")
        value = coerce(value, hints[key], f"{where}: {key}")
        choices = fields[key].metadata.get("choices")
        if choices is not None and value not in choices:
            raise UserError(f"{where}: {key} {value!r} is not one of {', '.join(map(str, choices))}"
                            f"{did_you_mean(str(value), choices)}")
        kw[key] = value
    for name, f in fields.items():
        if name not in kw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{where}: missing required key {name!r} ({f.metadata.get('help', '')})")
    try:
        return cls(**kw)
    except (ValueError, UserError) as e:
        raise UserError(f"{where}: {e}") from None


def help_text(cls: type) -> str:
    """'name (default): help; ...' for every field of `cls` (for CLI help and error messages)."""
    parts = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "required"
        parts.append(f"{f.name} ({default!r}): {f.metadata.get('help', '')}")
    return "; ".join(parts)


SEED_MAX = 2**32 - 1  # numpy's and torch's seeds, and what a results store's INTEGER column holds


def check_values(obj: Any, where: str) -> None:
    """The rules written in the fields' metadata of the dataclass instance `obj`: "choices" (a tuple
    of allowed values), and for numbers "min" / "max" (inclusive) and "below" (exclusive upper
    bound); a float must also be finite. None passes (an unset optional value). The one check of
    values given on the command line and in YAML: both build the same config.
    UserError f"{where}: {name} must be ..., got ...", or "... is not one of ..."."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        if choices is not None and getattr(obj, f.name) not in choices:
            value = getattr(obj, f.name)
            raise UserError(f"{where}: {f.name} {value!r} is not one of {', '.join(map(str, choices))}"
                            f"{did_you_mean(str(value), choices)}")
        rules = {k: f.metadata[k] for k in ("min", "max", "below") if k in f.metadata}
        value = getattr(obj, f.name)
        if not rules or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        ok = not (isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))))
        ok = ok and ("min" not in rules or value >= rules["min"]) and ("max" not in rules or value <= rules["max"])
        ok = ok and ("below" not in rules or value < rules["below"])
        if not ok:
            parts = [f">= {rules['min']}" if "min" in rules else "", f"<= {rules['max']}" if "max" in rules else "",
                     f"< {rules['below']}" if "below" in rules else ""]
            kind = "a finite number" if isinstance(value, float) or isinstance(f.default, float) else "an integer"
            raise UserError(f"{where}: {f.name} must be {kind} {' and '.join(p for p in parts if p)}, got {value!r}")
