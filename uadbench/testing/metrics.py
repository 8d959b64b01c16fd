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

    The entry: its name, a one-line description, a ``direction`` (higher, lower or signed) and
    boolean ``upper_bound`` and ``percent``. ``compute(scores, labels) -> float``, where given, is
    evaluated on synthetic voxel score maps against boolean lesion labels: every value finite and
    inside ``value_range`` (default [0, 1] for a ``percent`` metric), equal to
    ``reference(scores, labels)`` (a definition, e.g. sklearn's) where given, and a perfect map
    better than an inverted one in the declared direction (unless signed). A per-volume metric
    (:class:`~uadbench.evaluation.catalogue.VolumeMetric`) given without ``compute`` has its own
    ``compute`` called on synthetic read-only volumes, as the protocol calls it: a number or NaN,
    the same on a second call, inputs untouched."""
    info, name = _metric(metric)
    if info.name != name:
        raise fail(f"metric {name!r} is registered with an entry named {info.name!r}; the names must agree")
    if not isinstance(info.description, str) or not info.description.strip() or "\n" in info.description:
        raise fail(f"metric {name!r}: the description must be one non-empty line (tables and `uadbench list metrics` show it)")
    from uadbench.evaluation.catalogue import DIRECTIONS, VolumeMetric

    if info.direction not in DIRECTIONS:
        raise fail(f"metric {name!r}: direction must be one of {', '.join(DIRECTIONS)}, got {info.direction!r}")
    for flag in ("upper_bound", "percent"):
        if not isinstance(getattr(info, flag), bool):
            raise fail(f"metric {name!r}: {flag} must be True or False, got {getattr(info, flag)!r}")
    if compute is None:
        if isinstance(info, VolumeMetric):
            _check_volume_metric(info, seed)
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
    if info.direction == "signed":
        return
    if (perfect <= inverted) if info.direction == "higher" else (perfect >= inverted):
        arrow = info.direction
        raise fail(f"metric {name!r} declares {arrow} is better, but a perfect map scores {perfect!r} and an inverted map {inverted!r}")


def _check_volume_metric(info, seed: int) -> None:
    """A per-volume metric's own compute on synthetic volumes, called as the protocol calls it."""
    _, brains, lesions = brainlike_volumes(2, shape=(16, 16, 8), seed=seed, lesion=True)
    rng = np.random.default_rng(seed)
    for i, lesion in enumerate([lesions[0], None]):  # an annotated scan and a healthy one
        processed = (rng.random(brains[i].shape) * brains[i]).astype(np.float32)
        arrays = [processed, None if lesion is None else lesion.astype(bool), brains[i].astype(bool)]
        for a in arrays:
            if a is not None:
                a.flags.writeable = False
        what = "an annotated volume" if lesion is not None else "a healthy volume (lesion None)"
        try:
            first, second = (info.compute(*arrays, 2.0) for _ in range(2))
        except ValueError as exc:
            raise fail(f"metric {info.name!r} on {what}: {exc} (its inputs are read-only: copy before changing them)") from exc
        for value in (first, second):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise fail(f"metric {info.name!r} on {what}: got {value!r}; expected a float (NaN where undefined)")
        if not (first == second or (math.isnan(first) and math.isnan(second))):
            raise fail(f"metric {info.name!r} on {what}: {first!r} then {second!r} on the same input; a metric must be deterministic")
