"""Build typed dataclasses from plain dicts (YAML), rejecting unknown or mistyped keys with clear messages."""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["from_dict", "to_dict", "convert", "merge", "SchemaError", "OMIT_DEFAULT"]


class SchemaError(ValueError):
    """A dict does not fit a config dataclass; the message names the key path and the accepted keys."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 6, 60, 60


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message quotes what it got, not a whole file. Only a
    bounded prefix is ever formatted (reprlib), so a value built from YAML aliases costs no memory here."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, nested dicts merged key by key (neither input is changed)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type hint ``tp`` and converted (lists to tuples, dicts to dataclasses);
    a :class:`SchemaError` naming ``where`` if it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        if len(others) == 1:  # Optional[X]: X's own error is the precise one
            return convert(others[0], value, where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, where)
            except SchemaError as e:
                errors.append(str(e))
        if len(errors) == 1 and isinstance(value, dict):  # `X | None` given a mapping: X's own, precise error
            raise SchemaError(errors[0])
        raise SchemaError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {_show(value)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise SchemaError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SchemaError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {_show(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise SchemaError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected a mapping, got {type(value).__name__} {_show(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"{where}: expected an integer, got {type(value).__name__} {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{where}: expected a number, got {type(value).__name__} {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected a string, got {type(value).__name__} {_show(value)}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SchemaError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {_show(value)}")
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown, missing or mistyped keys raise :class:`SchemaError`."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: expected a mapping with keys {_keys(cls)}, got {type(data).__name__} {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise SchemaError(f"{where}: unknown key {unknown[0]!r}; accepted keys: {_keys(cls)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{where}: missing required key {name!r}; accepted keys: {_keys(cls)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, SchemaError):
            raise
        raise SchemaError(f"{where}: {e}") from e


#: ``dataclasses.field(metadata=OMIT_DEFAULT)`` marks a field that :func:`to_dict` leaves out while it holds
#: its default, so that dicts (and the fingerprints and checkpoints made from them) written before the
#: field existed stay equal; :func:`from_dict` fills it back in.
OMIT_DEFAULT = {"omit_default": True}


def _omitted(obj: Any, f: dataclasses.Field) -> bool:
    if not f.metadata.get("omit_default"):
        return False
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return getattr(obj, f.name) == default


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) to plain dicts/lists, for YAML/JSON (fields marked ``OMIT_DEFAULT`` are
    left out while they hold their default)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not _omitted(obj, f)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.init)
