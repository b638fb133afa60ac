"""Configs as data: pydantic sections read from YAML files (later files deep-merge over earlier ones, `--set
key=value` last), validated before any work starts; errors name the file and the key. `describe` lists every key of
a schema with its default and meaning (`polyfid config show`)."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticUndefined

from polyfid.core.atomic import atomic_write_bytes
from polyfid.core.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors (a typo fails at load), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a", "b", "c"], VALUE parsed as YAML: numbers, booleans, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    if not raw.strip():
        return key.strip().split("."), ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:  # not YAML (e.g. `a:b`, `*x`): the text itself, for the schema to accept or name
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `--set` override applied (intermediate sections are created)."""
    out = yaml.safe_load(yaml.safe_dump(raw))
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return out


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two config mappings (overlay wins; sections merge key by key)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, path_keys: tuple[str, ...]) -> dict[str, Any]:
    """One config file; the values at the dotted `path_keys` (a path or a list of paths) are made absolute against
    the file's folder."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections")
    base = path.resolve().parent
    for dotted in path_keys:
        *parents, key = dotted.split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        value = node.get(key)
        if isinstance(value, str):
            node[key] = _resolve_path(base, value)
        elif isinstance(value, list):
            node[key] = [_resolve_path(base, v) if isinstance(v, str) else v for v in value]
    return raw


def _resolve_path(base: Path, value: str) -> str:
    """`value` against `base`, unless it is a URI (`models:/name/3`, `s3://...`), which is kept as written."""
    return value if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", value) else str(base / value)


def load_yaml_config(
    paths: str | Path | list[str | Path],
    overrides: list[str] | None,
    schema: type[BaseModel],
    path_keys: tuple[str, ...],
) -> Any:
    """Read YAML configs (later files deep-merge over earlier ones: overlays), apply `--set` overrides, validate.

    Paths in a file resolve against that file's folder; in overrides, against the working directory."""
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    raw: dict[str, Any] = {}
    for path in paths:
        raw = merge(raw, _read_yaml(path, path_keys))
    return validate_config(apply_overrides(raw, overrides or []), " + ".join(map(str, paths)), schema)


def validate_config(raw: dict[str, Any], where: str, schema: type[BaseModel]) -> Any:
    """`raw` validated against `schema`; the error names `where` and every bad key, on one line."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        bad = [f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{where}: invalid config: " + "; ".join(bad)) from None


def save_resolved(cfg: BaseModel, path: Path) -> None:
    """The resolved config (defaults filled in) as YAML, written atomically."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    atomic_write_bytes(path, text.encode())


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The config sections (pydantic models) an annotation may hold: itself, list items, union members."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _sections(typing.get_args(annotation)[0])
    if origin in (list, typing.Union, types.UnionType):
        return [s for arg in typing.get_args(annotation) for s in _sections(arg)]
    return []


def type_name(annotation: Any) -> str:
    """A short readable type: `list[str] | None`, `'fp32' | 'bf16'`, `int`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "(required)"
    if field.default is PydanticUndefined:
        return {list: "[]", dict: "{}"}.get(field.default_factory, "(section)")
    if isinstance(field.default, BaseModel):
        return "(section)"
    return repr(field.default)


def describe(schema: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, meaning) of every key of `schema`, sections expanded depth first; the meaning is
    the field's description (every field has one: tests/core/test_config.py). The members of a section union (the
    backbones of `model`) are merged key by key; a key only some members have says which."""
    for name, field in schema.model_fields.items():
        key = f"{prefix}{name}"
        subs = _sections(field.annotation)
        kind = subs[0].__name__ if len(subs) == 1 else type_name(field.annotation)
        yield key, kind if len(subs) < 2 else "section", _default(field), field.description or ""
        if len(subs) == 1:
            yield from describe(subs[0], f"{key}.")
        elif subs:
            merged: dict[str, dict[str, tuple[str, str, str]]] = {}  # key -> member -> (type, default, meaning)
            for sub in subs:
                for k, t, d, m in describe(sub, f"{key}."):
                    merged.setdefault(k, {})[getattr(sub, "kind_name", sub.__name__)] = (t, d, m)
            for k, members in merged.items():
                types_ = " | ".join(dict.fromkeys(t for t, _, _ in members.values()))
                defaults = [d for _, d, _ in members.values()]
                if len(set(defaults)) == 1 or len(members) == len(subs):  # a union's default: its first member's
                    default = defaults[0]
                else:
                    default = ", ".join(f"{g}: {d}" for g, (_, d, _) in members.items())
                meaning = next(iter(members.values()))[2]
                if len(members) < len(subs):
                    meaning += f" (only {', '.join(members)})"
                yield k, types_, default, meaning
