"""Typed, frozen run configuration: YAML files + ``key=value`` overrides -> validated dataclasses.

Every concern declares a frozen dataclass in its own package (``model/config.py`` ...); this module only
knows how to build any such dataclass from nested dicts with type checks and helpful errors, and how to
resolve YAML + overrides into one. It imports nothing from ``srdd_scale``: the caller names the config class
(``RunConfig.load`` for a training run), so every package may import this module without a cycle.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import math
import reprlib
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and what was expected."""


# Values go into error messages through this: a YAML alias bomb is a few hundred bytes that expand to
# gigabytes when printed in full, so printing is bounded by size, not by what the file claims to hold.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 2, 80, 80
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 4
MAX_DEFAULTS_DEPTH = 32  # `defaults:` chains deeper than this are refused (a cycle is refused at once)


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a bounded length (nested containers elided with ``...``)."""
    return _SHORT_REPR.repr(value)


def require(ok: bool, key: str, value: object, expected: str) -> None:
    """Raise a ConfigError naming ``key``, its (shortened) ``value`` and what was ``expected`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: got {short_repr(value)}, expected {expected}")


# ---------------------------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = get_args(tp)
        inner = _type_name(args[0]) if args else "any"
        return f"list of {inner}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise a ConfigError naming key, value and expected type."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: got {short_repr(value)}, expected {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: got {short_repr(value)}, expected null")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: got {short_repr(value)}, expected {_type_name(tp)}")
    if origin in (tuple, list):
        if isinstance(value, str):  # `patch_nums=1,2,3` on a command line arrives as one string
            try:
                value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]
            except yaml.YAMLError:
                raise ConfigError(f"{key}: got {short_repr(value)}, expected {_type_name(tp)}") from None
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: got {short_repr(value)}, expected {_type_name(tp)}")
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {short_repr(value)}, expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {short_repr(value)}, expected a mapping of {tp.__name__} fields")
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: got {short_repr(value)}, expected bool (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: got {short_repr(value)}, expected int")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)  # YAML 1.1 reads "3e-4" as a string
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: got {short_repr(value)}, expected float")
        if not math.isfinite(number):  # no field means anything by inf or nan
            raise ConfigError(f"{key}: got {short_repr(value)}, expected a finite float")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: got {short_repr(value)}, expected str")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def build(cls: type[T], mapping: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    mapping = dict(mapping or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(_join(prefix, c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown config key {short_repr(_join(prefix, str(key)))}{hint} "
            f"(valid keys under {prefix or 'the top level'}: {', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(value, hints[name], _join(prefix, name)) for name, value in mapping.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field was not given
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ---------------------------------------------------------------------------------------------- dict ops


def to_dict(cfg: Any) -> Any:
    """Plain nested dict/list form of a config (tuples become lists), suitable for YAML and JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def config_hash(cfg: Any) -> str:
    """12 hex chars identifying a resolved config, so a requeued job finds its own run directory."""
    canonical = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, resolving its ``defaults:`` list (paths relative to the file, merged in order)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (in defaults: of {_chain[-1]})" if _chain else ""))
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in _chain[_chain.index(resolved):] + (resolved,))
        raise ConfigError(f"{path}: defaults: form a cycle ({cycle})")
    if len(_chain) >= MAX_DEFAULTS_DEPTH:
        raise ConfigError(f"{path}: defaults: nest deeper than {MAX_DEFAULTS_DEPTH} files")
    with path.open() as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({_one_line(err)})") from None
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    parents = data.pop("defaults", []) or []
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: defaults: got {short_repr(parents)}, expected a list of YAML paths")
    merged: dict = {}
    for parent in parents:
        merged = _merge(merged, read_yaml(path.parent / parent, _chain + (resolved,)))
    return _merge(merged, data)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def apply_override(mapping: dict, override: str) -> dict:
    """Apply one ``a.b.c=value`` override (value parsed as a YAML scalar or list)."""
    if "=" not in override:
        raise ConfigError(f"override {short_repr(override)} is not of the form key=value (e.g. model.depth=8)")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(
            f"override {short_repr(override)}: {short_repr(dotted)} is not a dotted key (e.g. model.depth)"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {short_repr(override)}: the value is not valid YAML ({_one_line(err)})") from None
    except RecursionError:
        raise ConfigError(f"override {short_repr(override)}: the value is nested too deeply") from None
    update: dict = value
    for key in reversed(keys):
        update = {key.strip(): update}
    return _merge(mapping, update)


# ---------------------------------------------------------------------------------------------- loading


def load_config(yaml_paths: typing.Sequence[str | Path], overrides: typing.Sequence[str], cls: type[T]) -> T:
    """Resolve YAML files (merged in order) and overrides into a validated, frozen config of ``cls``."""
    mapping: dict = {}
    for path in yaml_paths:
        mapping = _merge(mapping, read_yaml(path))
    for override in overrides:
        mapping = apply_override(mapping, override)
    cfg = build(cls, mapping)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (the file a later run reloads with :func:`load_saved_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_saved_config(path: str | Path, cls: type[T]) -> T:
    return load_config([path], (), cls)


# ---------------------------------------------------------------------------------------------- CLI


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Every tool takes YAML files and ``key=value`` overrides the same way, plus ``--print-config``.

    Parse with ``parse_config_args`` so that paths and overrides may sit on both sides of options.
    """
    parser.add_argument(
        "config_args",
        nargs="*",
        metavar="CONFIG.yaml | key=value",
        help="YAML config files (merged in order) followed by key=value overrides, e.g. model.depth=8",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def parse_config_args(parser: argparse.ArgumentParser, argv: typing.Sequence[str] | None) -> argparse.Namespace:
    """Parse a tool's command line built with ``add_config_args``: YAML paths and ``key=value`` overrides may come
    before and after options (``train.py a.yaml --stop-at-step 5 k=v``), which plain ``parse_args`` rejects."""
    return parser.parse_intermixed_args(argv)


def config_from_args(args: argparse.Namespace, cls: type[T], default_yaml: typing.Sequence[str] = ()) -> T:
    """Resolve a tool's config from its arguments; prints it and exits when ``--print-config`` is given."""
    yaml_paths = [a for a in args.config_args if "=" not in a]
    overrides = [a for a in args.config_args if "=" in a]
    try:
        cfg = load_config(list(default_yaml) + yaml_paths, overrides, cls)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        sys.exit(0)
    return cfg
