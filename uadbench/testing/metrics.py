"""check_metric: a metric's catalogue entry and values (see :mod:`uadbench.testing`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from uadbench.testing.base import brainlike_volumes, fail

if TYPE_CHECKING:
    from uadbench.evaluation.metrics import MetricInfo


def _metric(metric: str | MetricInfo) -> tuple[MetricInfo, str]:
    from uadbench.evaluation.metrics import MetricInfo, metric_info
    from uadbench.registry import METRICS

    if isinstance(metric, MetricInfo):
        return metric, metric.name
    registered = METRICS.get(metric)
    if not isinstance(registered, MetricInfo):
        raise fail(f"metric {metric!r} is registered as {type(registered).__name__}; register a uadbench.evaluation.metrics.MetricInfo "
                   "(its direction, upper-bound flag and unit)")
    if metric_info(metric) is not registered:
        raise fail(f"metric {metric!r}: metric_info({metric!r}) finds another entry than the registered one")
    return registered, metric


def _metric_cases(seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(what, scores, labels): random scores, scores that favour the lesion, ties, a perfect and an inverted map."""
    rng = np.random.default_rng(seed)
    _, brains, lesions = brainlike_volumes(1, shape=(16, 16, 8), seed=seed, lesion=True)
    labels = lesions[0]
    noise = rng.random(labels.shape)
    return [("random scores", noise, labels), ("scores favouring the lesion", noise + 0.8 * labels, labels),
            ("tied scores", np.round(noise * 4) / 4 + 0.25 * labels, labels), ("perfect map", labels.astype(np.float64), labels),
            ("inverted map", 1.0 - labels, labels), ("map within the brain", brains[0] * noise, labels)]


def check_metric(metric: str | MetricInfo, *, compute: Callable[[np.ndarray, np.ndarray], float] | None = None,
                 reference: Callable[[np.ndarray, np.ndarray], float] | None = None, value_range: tuple[float, float] | None = None,
                 seed: int = 0) -> None:
    """Check a metric (a registered name or its :class:`~uadbench.evaluation.metrics.MetricInfo`).

    The entry: its name, a one-line description and boolean ``higher_is_better``, ``upper_bound``
    and ``percent``. ``compute(scores, labels) -> float``, where given, is evaluated on
    synthetic voxel score maps against boolean lesion labels:
    every value finite and inside ``value_range`` (default [0, 1] for a ``percent`` metric),
    equal to ``reference(scores, labels)`` (a definition, e.g. sklearn's) where given, and a
    perfect map better than an inverted one in the declared direction."""
    info, name = _metric(metric)
    if info.name != name:
        raise fail(f"metric {name!r} is registered with an entry named {info.name!r}; the names must agree")
    if not isinstance(info.description, str) or not info.description.strip() or "\n" in info.description:
        raise fail(f"metric {name!r}: the description must be one non-empty line (tables and `uadbench list metrics` show it)")
    for flag in ("higher_is_better", "upper_bound", "percent"):
        if not isinstance(getattr(info, flag), bool):
            raise fail(f"metric {name!r}: {flag} must be True or False, got {getattr(info, flag)!r}")
    if compute is None:
        return
    low, high = value_range if value_range is not None else (0.0, 1.0) if info.percent else (-math.inf, math.inf)
    values = {}
    for what, scores, labels in _metric_cases(seed):
        value = compute(scores, labels)
        if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
            raise fail(f"metric {name!r} on {what}: got {value!r}; expected a finite number")
        if not low <= value <= high:
            raise fail(f"metric {name!r} on {what}: {value!r} lies outside [{low}, {high}]")
        if reference is not None:
            expected = float(reference(scores, labels))
            if not math.isclose(float(value), expected, rel_tol=1e-9, abs_tol=1e-12):
                raise fail(f"metric {name!r} on {what}: {value!r}, but its definition gives {expected!r}")
        values[what] = float(value)
    perfect, inverted = values["perfect map"], values["inverted map"]
    if (perfect <= inverted) if info.higher_is_better else (perfect >= inverted):
        arrow = "higher" if info.higher_is_better else "lower"
        raise fail(f"metric {name!r} declares {arrow} is better, but a perfect map scores {perfect!r} and an inverted map {inverted!r}")
