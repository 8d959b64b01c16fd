"""Threshold protocols: validation bisection, exact validation optimum, healthy-FPR quantiles.

Every search works on :class:`~uadbench.evaluation.metrics.RankedCounts` of the pooled,
post-processed maps (steps 1-3 of METHOD_SPEC §4.2, no connected-component filter, as in the
reference): one sort of the pooled non-zero scores, after which the pooled Dice at any threshold
is a binary search.

- :func:`bisection_threshold`: the reference's greedy search (Zimmerer's ``find_best_val``,
  METHOD_SPEC §4.3): start from [0, max]; at each of 10 steps evaluate pooled Dice at the 25 % and
  75 % points; keep the best seen (ties go to the later point); recurse into the lower half if the
  25 % point is at least as good, else the upper half. A zero-width range becomes [low, 1], as in
  the reference. Points are computed in float64; ``map > point`` is the exact float64 comparison.
- :func:`exact_threshold`: the threshold maximising pooled Dice exactly, placed half-way between
  the lowest included score and the next lower distinct score.
- :func:`fpr_threshold`: the smallest observed score ``t`` such that at most ``k`` of healthy
  brain voxels satisfy ``score > t`` (needs no labels). The reference computes these on all voxels
  (background included) and takes the first ROC point *above* ``k``; this harness uses brain
  voxels and never exceeds ``k``.
- :func:`crossfit_folds`: k folds over a few annotated cases for threshold cross-fitting (each
  case is tested once, at a threshold chosen on the other folds; see
  :func:`uadbench.evaluation.crossfit.evaluate_crossfit`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uadbench.errors import UadbenchError
from uadbench.evaluation.metrics import RankedCounts, best_dice

BISECTION_STEPS = 10


@dataclass(frozen=True)
class ThresholdResult:
    """A threshold and the pooled score it achieves on the data that chose it."""

    value: float
    score: float  # pooled Dice (val protocols) or achieved FPR (healthy protocols)


def pooled_dice_at(counts: RankedCounts, threshold: float) -> float:
    """Pooled Dice of ``score > threshold`` (the reference ``dice``: 2|P∩G| / (|P| + |G|))."""
    tp, fp = counts.counts_above(threshold)
    denominator = tp + fp + counts.n_pos
    return math.nan if denominator == 0 else (2 * tp) / denominator


def _require_positives(counts: RankedCounts, what: str) -> None:
    if counts.n_pos == 0:
        raise UadbenchError(
            f"{what}: the lesion validation split has no lesion voxels, so no Dice threshold can "
            "be chosen; pass a labelled split with lesions, or omit lesion_val"
        )


def bisection_threshold(
    counts: RankedCounts, *, max_value: float | None = None, steps: int = BISECTION_STEPS
) -> ThresholdResult:
    """The reference's greedy bisection on pooled Dice (see the module docstring)."""
    _require_positives(counts, "val-bisection")
    top = float(counts.values[0]) if max_value is None else float(max_value)
    bottom = 0.0
    best_value, best_point = 0.0, 0.0
    for _ in range(steps):
        if bottom == top:
            top = 1.0
        center = bottom + (top - bottom) * 0.5
        q_bottom = bottom + (top - bottom) * 0.25
        q_top = bottom + (top - bottom) * 0.75
        d_bottom = pooled_dice_at(counts, q_bottom)
        d_top = pooled_dice_at(counts, q_top)
        if d_bottom >= d_top:
            if d_bottom >= best_value:
                best_value, best_point = d_bottom, q_bottom
            top = center
        else:
            if d_top >= best_value:
                best_value, best_point = d_top, q_top
            bottom = center
    return ThresholdResult(value=float(best_point), score=float(best_value))


def exact_threshold(counts: RankedCounts) -> ThresholdResult:
    """The threshold that maximises pooled Dice exactly (half-way between distinct scores)."""
    _require_positives(counts, "val-exact")
    dice, i = best_dice(counts)
    values = counts.values
    if i < 0:  # nothing beats the empty prediction
        return ThresholdResult(value=float(values[0]), score=0.0)
    included = float(values[i])
    if i + 1 < values.size:
        below = float(values[i + 1])
        t = 0.5 * (included + below)
        if not below <= t < included:
            t = below
    else:
        t = float(np.nextafter(included, -np.inf))
    return ThresholdResult(value=float(t), score=float(dice))


def fpr_threshold(counts: RankedCounts, rate: float) -> ThresholdResult:
    """Smallest observed score ``t`` with at most ``rate`` of the voxels above it.

    ``counts`` should count healthy voxels as negatives (labels all false).
    """
    if not 0.0 < rate < 1.0:
        raise UadbenchError(f"FPR must be in (0, 1), got {rate!r}")
    n = counts.n_pos + counts.n_neg
    if n == 0:
        raise UadbenchError("healthy validation scans have no brain voxels; check their brain masks")
    allowed = math.floor(rate * n + 1e-9)
    above = counts.tp + counts.fp  # voxels with score >= values[i]
    # largest i whose count of voxels >= values[i] is still allowed; threshold = next lower value
    i = int(np.searchsorted(above, allowed, side="right")) - 1
    values = counts.values
    if i + 1 >= values.size:  # everything may exceed: threshold below the minimum
        t = float(np.nextafter(float(values[-1]), -np.inf))
        achieved = 1.0
    else:
        t = float(values[i + 1])
        achieved = (int(above[i]) if i >= 0 else 0) / n
    return ThresholdResult(value=t, score=achieved)


def crossfit_folds(subject_ids: Sequence[str], k: int, *, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint folds covering ``subject_ids``, sizes differing by at most one.

    The ids are ordered by a stable hash of ``(seed, id)`` and dealt round-robin, so the folds do
    not depend on the order the ids come in, nor follow their names (a site prefix); each fold
    lists its ids sorted.
    """
    ids = list(subject_ids)
    if len(set(ids)) != len(ids):
        raise UadbenchError("cross-fitting needs distinct subject ids; some case is listed twice")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise UadbenchError(f"cross-fitting needs k >= 2 folds, got {k!r}")
    if k > len(ids):
        raise UadbenchError(f"cross-fitting with k={k} folds needs at least {k} annotated cases, got {len(ids)}; "
                            f"use k <= {len(ids)} (k = {len(ids)}: leave one out)")
    order = sorted(ids, key=lambda sid: hashlib.sha256(f"{seed}:{sid}".encode()).hexdigest())
    return [sorted(order[i::k]) for i in range(k)]


__all__ = [
    "BISECTION_STEPS",
    "ThresholdResult",
    "bisection_threshold",
    "crossfit_folds",
    "exact_threshold",
    "fpr_threshold",
    "pooled_dice_at",
]
