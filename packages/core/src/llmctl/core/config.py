"""Strict dataclass configs from YAML: unknown keys are errors with a "did you mean", overrides via key=value."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError

T = TypeVar("T")


def did_you_mean(key: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close: the hint every error uses."""
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML value to the annotated type, with a one-line error naming the key."""
    if value is None:
        return None
    tp = _unwrap_optional(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=where)
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "yes", "1", "on"):
                    return True
                if low in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, str):
                value = float(value) if any(c in value for c in ".eE") else int(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
        if origin in (list, tuple):
            (inner,) = typing.get_args(tp)[:1] or (Any,)
            if not isinstance(value, (list, tuple)):
                value = [value]
            items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    except (TypeError, ValueError):
        raise UserError(f"config key '{where}': cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys raise UserError naming the full dotted key."""
    if data is None:
        data = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise UserError(f"unknown config key '{full}'{did_you_mean(str(key), fields)}")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise UserError(f"config section '{prefix or cls.__name__}': {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (YAML-safe)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file of any shape; bad YAML or non-UTF-8 bytes -> one line naming the file (and line)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    return data


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A config file: a mapping of sections (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level must be a mapping of sections")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (value parsed as YAML) to a nested dict, in place. Inside a list of
    named mappings (`stages:`), a part names an entry by its `name` or its index: `stages.anneal.lr=1e-4`."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = _list_entry(node, part, item) if isinstance(node, list) else node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise UserError(f"override '{item}': '{part}' is not a section")
        if isinstance(node, list):
            raise UserError(f"override '{item}': '{parts[-1]}' names an entry of a list, not a key")
        node[parts[-1]] = value
    return data


def _list_entry(items: list, part: str, item: str) -> Any:
    """The entry of a list that `part` names: its `name` key, else its index."""
    for entry in items:
        if isinstance(entry, dict) and str(entry.get("name")) == part:
            return entry
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    names = [str(e.get("name")) for e in items if isinstance(e, dict) and "name" in e]
    raise UserError(f"override '{item}': no entry named '{part}'{did_you_mean(part, names)}"
                    + (f"; entries: {', '.join(names)}" if names else ""))


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)
