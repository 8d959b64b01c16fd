"""Frozen-dataclass configs: presets, overrides and a stable config hash.

A method's ``Config`` is a frozen dataclass whose defaults are the paper's values. ``presets`` maps
a preset name ("paper", "cpu", "smoke", ...) to the field values that differ from the defaults.
:func:`build_config` applies a preset and then user overrides, rejecting unknown keys with the list
of valid ones and coercing TOML values (lists -> tuples, ints -> floats) to the declared types.

Every value a preset or an override sets is checked before the config is built, by type and by
the conventions of field names (:func:`check_field`): numbers are finite (no NaN, no inf); a
learning rate (``lr``, ``*_lr``) is > 0; a step count (``steps``, ``*_steps``) is an integer in
[0, MAX_STEPS]; a batch size (``batch_size``, ``*_batch_size``) in [1, MAX_BATCH_SIZE]; a dropout
(``dropout``, ``*_dropout``, ``drop_path_rate``) in [0, 1); a weight decay >= 0. Rules particular
to one method live in its Config's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from collections.abc import Mapping
from typing import Any

from uadbench.errors import ConfigError
from uadbench.registry import METHODS

REQUIRED_PRESETS = ("paper", "cpu", "smoke")
MAX_STEPS = 10**8  # far beyond any real budget (the paper trains for 19,200 steps)
MAX_BATCH_SIZE = 65536


def config_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, key: str, owner: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, owner)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{owner}.{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{owner}.{key} must be one of {', '.join(repr(a) for a in args)}, got {value!r}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}.{key} must be a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, owner) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{owner}.{key} must have {len(args)} items, got {value!r}")
            return tuple(_coerce(v, a, key, owner) for v, a in zip(value, args))
        return tuple(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{owner}.{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{owner}.{key} must be a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{owner}.{key} must be a string, got {value!r}")
        return value
    return value


def _name_is(key: str, name: str) -> bool:
    return key == name or key.endswith(f"_{name}")


def check_field(key: str, value: Any, owner: str = "config") -> None:
    """The checks every config value gets from its field name (see the module docstring)."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{owner}.{key} must be a finite number, got {value!r}")
    if not isinstance(value, (int, float)):
        return
    if _name_is(key, "lr") and not value > 0:
        raise ConfigError(f"{owner}.{key} (a learning rate) must be > 0, got {value!r}")
    if _name_is(key, "steps") and not 0 <= value <= MAX_STEPS:
        raise ConfigError(f"{owner}.{key} (a step count) must lie in [0, {MAX_STEPS:,}], got {value!r}")
    if _name_is(key, "batch_size") and not 1 <= value <= MAX_BATCH_SIZE:
        raise ConfigError(f"{owner}.{key} must lie in [1, {MAX_BATCH_SIZE}], got {value!r}")
    if (_name_is(key, "dropout") or _name_is(key, "drop_path_rate")) and not 0 <= value < 1:
        raise ConfigError(f"{owner}.{key} must lie in [0, 1), got {value!r}")
    if _name_is(key, "weight_decay") and value < 0:
        raise ConfigError(f"{owner}.{key} must be >= 0, got {value!r}")


def build_config(
    cls: type,
    presets: Mapping[str, Mapping[str, Any]],
    preset: str = "paper",
    overrides: Mapping[str, Any] | None = None,
    *,
    owner: str = "config",
):
    """Instantiate ``cls`` from ``presets[preset]`` and ``overrides``."""
    if preset not in presets:
        raise ConfigError(
            f"unknown preset {preset!r} for {owner}; available: {', '.join(sorted(presets))}"
        )
    fields = config_fields(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for source_name, source in ((f"preset {preset!r}", presets[preset]), ("overrides", overrides or {})):
        unknown = sorted(set(source) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"in {source_name} of {owner}; valid keys: {', '.join(sorted(fields))}"
            )
        for key, value in source.items():
            values[key] = _coerce(value, hints[key], key, owner)
            check_field(key, values[key], owner)
    try:
        return cls(**values)
    except (TypeError, ValueError, ConfigError) as exc:  # from the Config's own __post_init__
        raise ConfigError(f"invalid {owner} config: {exc}") from exc


def require_positive(config: Any, *names: str) -> None:
    """For a Config's ``__post_init__``: each named field, an integer or a list of integers, is >= 1."""
    for name in names:
        value = getattr(config, name)
        items = value if isinstance(value, (tuple, list)) else (value,)
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
            what = "a non-empty list of integers >= 1" if isinstance(value, (tuple, list)) else "an integer >= 1"
            raise ConfigError(f"{name} must be {what}, got {value!r}")


def normalise_overrides(value: Any, base: str, field: str = "base_overrides") -> tuple[tuple[str, Any], ...]:
    """Config overrides of the method ``base`` (a table or (key, value) pairs, as a grid or a
    Config's ``field`` holds them) as sorted (key, value) pairs, lists made tuples: hashable, and
    the same however they were written. A method that reuses a fitted ``base``
    (``Method.dependencies``) keeps its overrides this way."""
    if value is None:
        return ()
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        items = [tuple(p) for p in value]
    else:
        raise ConfigError(f"{field} must be a table of {base} config keys (e.g. {{steps = 100}}) or (key, value) pairs, got {value!r}")
    out = []
    for key, val in items:
        if not isinstance(key, str):
            raise ConfigError(f"{field} keys must be strings, got {key!r}")
        out.append((key, tuple(val) if isinstance(val, list) else val))
    return tuple(sorted(out))


def create_config(method: str, preset: str = "paper", overrides: Mapping[str, Any] | None = None, /, **more: Any):
    """The config of registered method ``method``: its preset, then overrides (validated).

    Overrides come as a mapping (``create_config("ae", "cpu", {"lr": 1e-3})``, as a grid holds
    them) or as keywords (``create_config("ae", "cpu", lr=1e-3)``).
    """
    cls = METHODS.get(method)
    merged = {**(overrides or {}), **more}
    return build_config(cls.Config, cls.presets, preset, merged, owner=f"method {method!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short sha256 of the canonical JSON form of ``obj``."""
    payload = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def config_hash(method_name: str, config: Any, precision: str = "fp32", compile: bool = False) -> str:
    """Hash of everything that determines a method's trained weights, short of data and seed: the
    config, and the arithmetic it trains with (``precision``, ``compile``) where not the default."""
    extra = {} if (precision, compile) == ("fp32", False) else {"precision": precision, "compile": compile}
    return stable_hash({"method": method_name, "config": config_to_dict(config), **extra})


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out
