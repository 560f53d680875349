"""The one config system: a validated config dataclass from a JSON/YAML mapping.

`from_mapping(cls, data, where)` builds any frozen config dataclass of vlpeft (the model config,
every PEFT method config, the study spec's parts, the task kinds' options, task files): unknown keys
get a did-you-mean, required keys are checked, each value is checked against its field's type hint
(`typing.get_type_hints`; nested dataclasses are built the same way), and the rules written in the
field's metadata are checked by `check_values`: "choices", and for numbers "min" / "max" /
"above" / "below" (a float must also be finite). The same metadata gives the CLI its flags (help text,
choices). Every problem is a one-line UserError naming where the value came from.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from vlpeft.errors import UserError, did_you_mean, shown


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type hint `hint`: int, float (ints accepted; YAML 1.1 reads 1e-3
    as a string, which is read back as a number), bool, str, dict, `dict[str, X]` (each value checked
    as X, named `where.key`), `X | None`, a nested config dataclass (built from a mapping by
    `from_mapping`), `tuple[str, ...]` (a list, or a comma-separated string of names) and other tuples
    (a list, or one value for a one-item list; each item checked). None (a YAML key left empty) is an
    empty mapping, as it is for a nested config."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) == 1:
            return coerce(value, options[0], where)
        return value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_mapping(hint, value, where, what="keys")
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item = args[0] if args else Any
        if item is str and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif item is not str and isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {shown(value)}")
        if item is str and not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be a list of names, got {shown(value)}")
        return tuple(v if item is Any else coerce(v, item, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {shown(value)}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {shown(value)}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise UserError(f"{where} must be a string, got {shown(value)}")
    if hint is dict or origin is dict:
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {shown(value)}")
        item = (typing.get_args(hint) or (str, Any))[1]
        return value if item is Any else {str(k): coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if (hint is list or origin is list) and not isinstance(value, list):
        raise UserError(f"{where} must be a list, got {shown(value)}")
    return value


def check_keys(cls: type, data: Any, where: str, what: str = "keys", skip: tuple[str, ...] = ()) -> dict:
    """`data` as a dict after checking its keys against the fields of `cls` (less `skip`): an
    unknown key (with a did-you-mean) or a missing required one is a UserError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: {what} must be a mapping, got {shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in skip}
    one = what[:-1] if what.endswith("s") else what
    for key in data:
        if key not in fields:
            raise UserError(f"{where}: unknown {one} {key!r}{did_you_mean(str(key), fields)}; "
                            f"{what}: {', '.join(fields) or 'none'}")
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            help_ = f.metadata.get("help")
            raise UserError(f"{where}: missing required {one} {name!r}" + (f" ({help_})" if help_ else ""))
    return dict(data)


def from_mapping(cls: type, data: Any, where: str, what: str = "options", skip: tuple[str, ...] = ()) -> Any:
    """An instance of the frozen dataclass `cls` from the mapping `data` (missing keys take the
    field defaults; the fields in `skip` are not keys of `data`), every value checked (see the module
    doc). A ValueError or UserError raised by `cls.__post_init__` is re-raised as a UserError prefixed
    with `where`."""
    data = check_keys(cls, data, where, what, skip)
    hints = typing.get_type_hints(cls)
    kw = {key: coerce(value, hints[key], f"{where}: {key}") for key, value in data.items()}
    try:
        obj = cls(**kw)
    except (ValueError, UserError) as e:
        raise UserError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    check_values(obj, where)
    return obj


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
    of allowed values), and for numbers (or each number of a tuple) "min" / "max" (inclusive) and
    "above" / "below" (exclusive bounds; "above": 0 reads "positive"); a float must also be finite.
    None passes (an unset optional value). The one check of values given on the command line and in
    YAML: both build the same config.
    UserError f"{where}: {name} must be ..., got ...", or "... is not one of ..."."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise UserError(f"{where}: {f.name} {shown(value)} is not one of {', '.join(map(str, choices))}"
                            f"{did_you_mean(str(value), choices)}")
        rules = {k: f.metadata[k] for k in ("min", "max", "above", "below") if k in f.metadata}
        for item in value if isinstance(value, tuple) else (value,):
            _check_number(item, f, rules, where)


def _check_number(value: Any, f: dataclasses.Field, rules: dict, where: str) -> None:
    """One value of the field `f` against its `rules` (see `check_values`): numbers only."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    ok = not isinstance(value, float) or math.isfinite(value)
    if not rules and ok:
        return
    ok = ok and ("min" not in rules or value >= rules["min"]) and ("max" not in rules or value <= rules["max"])
    ok = ok and ("below" not in rules or value < rules["below"])
    ok = ok and ("above" not in rules or value > rules["above"])
    if not ok:
        real = isinstance(value, float) or isinstance(f.default, float)
        if rules == {"above": 0}:
            raise UserError(f"{where}: {f.name} must be {'a finite number > 0' if real else 'positive'}, got "
                            f"{shown(value)}")
        parts = [f">= {rules['min']}" if "min" in rules else "", f"> {rules['above']}" if "above" in rules else "",
                 f"<= {rules['max']}" if "max" in rules else "", f"< {rules['below']}" if "below" in rules else ""]
        kind = "a finite number" if real else "an integer"
        rule = " and ".join(p for p in parts if p)
        raise UserError(f"{where}: {f.name} must be {' '.join(w for w in (kind, rule) if w)}, got {shown(value)}")
