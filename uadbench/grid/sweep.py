"""Sweeps: a list where a config field takes one value expands one grid entry into one entry per value."""

from __future__ import annotations

import itertools
from typing import Any

from uadbench.config import config_to_dict, create_config
from uadbench.errors import ConfigError
from uadbench.grid.entries import MethodSpec

MAX_SWEEP_ENTRIES = 1000  # method entries one [[methods]] table may expand to


def _swept(default: Any, value: Any) -> bool:
    """Whether an override ``value`` lists values to sweep: a list where the field takes a scalar,
    or a list of lists where it takes a sequence (``channels = [[16, 32], [32, 64]]``)."""
    if not isinstance(value, list):
        return False
    if isinstance(default, (list, tuple)):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def sweep_value_text(value: Any, *, quote: bool = True) -> str:
    """A swept value as labels write it: ``(8,16)`` for a sequence, ``'gaussian'`` for text (unquoted
    with ``quote=False``), ``300`` for a number."""
    if isinstance(value, (list, tuple)):
        return f"({','.join(map(str, value))})"
    return repr(value) if quote and isinstance(value, str) else str(value)


def sweep_label(base: str, sweep: tuple[tuple[str, Any], ...]) -> str:
    """``ae[steps=300]``, ``cddpm[lr=0.001,steps=900]``: a swept entry's label."""
    return f"{base}[{','.join(f'{k}={sweep_value_text(v)}' for k, v in sweep)}]" if sweep else base


def expand_sweep(name: str, preset: str, overrides: dict[str, Any], label: str, precision: str, compile_: bool,
                 where: str) -> list[MethodSpec]:
    """One :class:`MethodSpec` per combination of the swept override values, in the grid's order
    (the first swept field varies slowest); a table without a sweep gives one spec."""

    try:
        defaults = config_to_dict(create_config(name, preset))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    swept = [k for k, v in overrides.items() if k in defaults and _swept(defaults[k], v)]
    for key in swept:
        values = overrides[key]
        if not values:
            raise ConfigError(f"{where}: overrides.{key} sweeps no value; give a non-empty list such as [300, 1000, 3000]")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: overrides.{key} lists a value twice: {values!r}")
    combos = list(itertools.product(*(overrides[k] for k in swept)))
    if len(combos) > MAX_SWEEP_ENTRIES:
        raise ConfigError(f"{where}: the sweep over {', '.join(swept)} expands to {len(combos):,} fits; at most {MAX_SWEEP_ENTRIES} a table")
    specs = []
    for combo in combos:
        sweep = tuple(zip(swept, (tuple(v) if isinstance(v, list) else v for v in combo), strict=True))
        merged = {**overrides, **dict(sweep)}
        specs.append(MethodSpec(name, preset, tuple(sorted(merged.items())), sweep_label(label or name, sweep) if sweep else label,
                                precision, compile_, sweep))
    return specs
