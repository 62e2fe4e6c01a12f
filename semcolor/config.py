"""Typed, validated configuration from plain mappings (params.yaml sections).

Every params section maps onto a frozen dataclass. ``load_config`` builds one from a mapping and rejects
unknown keys and wrong types with the dotted name of the key at fault, so a typo in params.yaml stops a
stage before any work is done instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
# a decimal number in plain or scientific notation (no nan/inf, hex or underscores)
_DECIMAL_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A params value is missing, unknown or of the wrong type; the message names the dotted key."""


def load_config(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``mapping``, checking every key and type.

    ``where`` is the dotted path of the section in params.yaml (used in error messages only).
    Fields missing from the mapping take the dataclass defaults; a field without a default is required.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(mapping).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        names = ", ".join(_join(where, k) for k in unknown)
        raise ConfigError(f"unknown key(s) {names}; allowed: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name in mapping:
            values[name] = _coerce(hints[name], mapping[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:  # __post_init__ range checks
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {error}") from error


def config_to_dict(config: Any) -> Any:
    """The plain-data form of a config (dicts, lists, scalars): safe for JSON, YAML and checkpoints."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        return load_config(hint, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            items = [_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_hint = args[0] if args else Any
            items = [_coerce(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or hint in (dict,):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _coerce(value_hint, v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _DECIMAL_NUMBER.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads `1e-3` - no dot - as a string; a float field means the number
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {hint!r}")


def relocate_keys(error: ConfigError, root: str, place: "typing.Callable[[str], str]") -> ConfigError:
    """The same error with every dotted key under ``root`` (``sdc.widht``) renamed to where it sits in the
    params file (``place("widht")`` -> ``train_sdc.model.widht``); a bare ``root:`` prefix becomes
    ``place("")``. For configs built by a library function (a model factory) from a params sub-mapping."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(root)}(?:\.(\w+)|(?=:))")
    return ConfigError(pattern.sub(lambda match: place(match.group(1) or "").rstrip("."), str(error)))


# libyaml's parser where PyYAML was built with it: params.yaml, dvc.yaml and dvc.lock parse ~10x faster
# (pure-Python parsing of them cost a training stage ~2.5 s); the same safe subset of YAML either way
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's parser when it is available."""
    return yaml.load(text, Loader=_SAFE_LOADER)
