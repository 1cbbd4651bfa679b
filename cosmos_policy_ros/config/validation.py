"""One generic validator for the settings dataclasses: types from the annotations, a
predicate per field, unknown keys refused with the closest valid key."""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal

from cosmos_policy_ros.config.errors import ConfigError


def _check(check, expected: str) -> dict[str, Any]:
    """Field metadata: a predicate on the (typed) value and what it expects, for errors."""
    return {"check": check, "expected": expected}


def setting(default: Any, check=None, expected: str = "", mutable: bool = False):
    """A settings field: its default, and optionally a predicate with its description."""
    meta = _check(check, expected) if check is not None else {}
    if mutable:
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return f"a mapping to {_type_name(typing.get_args(hint)[1])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (bool, int, float, str, Literal, tuple[X, ...],
    dict[str, X], unions with None); ConfigError naming ``where`` otherwise."""
    origin = typing.get_origin(hint)
    bad = ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        key_t, item = typing.get_args(hint)
        return {_coerce(k, key_t, where): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is type(None):
        if value is None:
            return None
        raise bad
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool):
        raise bad  # YAML true/false is never a number or a string here
    if hint is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise bad
    if hint is float:
        if isinstance(value, (int, float)):
            return float(value)
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"{where}: settings type {hint!r} is not supported by the validator")


def check_keys(mapping: dict[str, Any], allowed, where: str) -> None:
    """ConfigError for the first key not in ``allowed``, with the closest valid key."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint} (valid keys: {', '.join(allowed)})")


S = typing.TypeVar("S")


def parse_section(cls: type[S], mapping: Any, where: str) -> S:
    """A settings dataclass from a YAML mapping: unknown keys refused (with the closest valid
    key), each value checked against its field's type and predicate, defaults for the rest."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(mapping, fields, where)
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        at = f"{where}.{key}"
        typed = _coerce(value, hints[key], at)
        check = fields[key].metadata.get("check")
        if check is not None and not check(typed):
            raise ConfigError(f"{at}: expected {fields[key].metadata['expected']}, got {value!r}")
        values[key] = typed
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _is_device(name: str) -> bool:
    return re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", name) is not None


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0
