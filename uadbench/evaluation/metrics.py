"""Voxel-level metrics: AUPRC, AUROC, Dice, best Dice.

All ranking metrics come from one :class:`RankedCounts`: the distinct scores in decreasing order
with the cumulative numbers of positives and negatives at or above each one. It is built from one
value sort of the non-zero scores (no argsort, no gather); the zero scores (the background outside
the eroded brain mask, most of a volume) form a single tie block that is counted, not sorted.
From it:

- ``average_precision`` equals ``sklearn.metrics.average_precision_score``
  (Σ (R_n − R_{n−1}) P_n over distinct thresholds, the paper's AUPRC formula, METHOD_SPEC §4.4);
- ``roc_auc`` equals ``sklearn.metrics.roc_auc_score`` (trapezoids between distinct thresholds,
  computed in integer arithmetic);
- ``best_dice`` is the exact maximum of Dice over all thresholds ``score > t``.

Undefined values are NaN: AUPRC without positives, AUROC without positives or without negatives
(sklearn warns or raises there), Dice when prediction and target are both empty (the reference
``dice`` divides 0 by 0).

The metric catalogue (what each reported metric is, its direction and unit) lives in
:mod:`uadbench.evaluation.catalogue`; its names are re-exported here, and importing this module
registers them (the ``uadbench.metrics`` entry point ``builtin`` names this module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from uadbench.errors import UadbenchError
from uadbench.evaluation.catalogue import (
    ALL_PROTOCOLS,
    FAIR_PROTOCOLS,
    METRIC_INFO,
    ORACLE,
    SIZE_BINS_ML,
    MetricInfo,
    metric_info,
    volume_metrics,
)
from uadbench.evaluation.postprocess import threshold_float32

#: Version of the metric values. Bump it with any change that changes the value of a metric
#: function here for some input (ranking, Dice, best Dice, ties, NaN conventions), so that cached
#: evaluations keyed on it are recomputed. Catalogue text and display flags do not bump it, but a
#: new metric does: cached evaluations lack it. 2: the scan- and slice-level detection metrics.
METRICS_VERSION = "2"


def metrics_version() -> str:
    """The metrics' version in cache keys: :data:`METRICS_VERSION`, then each registered volume
    metric of another package with its own version (``"1+hot_fraction=1"``), so that installing,
    removing or changing such a metric evaluates cached cells again."""
    extra = [f"{m.name}={m.version}" for m in volume_metrics()]
    return "+".join([METRICS_VERSION, ",".join(extra)]) if extra else METRICS_VERSION


# -- ranked counts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RankedCounts:
    """Cumulative counts at each distinct score, scores in decreasing order.

    ``values[i]`` is the i-th largest distinct score; ``tp[i]`` / ``fp[i]`` count positives /
    negatives with score ``>= values[i]``. ``tp[-1]`` is the number of positives, ``fp[-1]`` the
    number of negatives.
    """

    values: np.ndarray  # (K,) distinct scores, decreasing (may be a reversed view)
    tp: np.ndarray  # (K,) int64
    fp: np.ndarray  # (K,) int64

    @property
    def n_pos(self) -> int:
        return int(self.tp[-1]) if self.tp.size else 0

    @property
    def n_neg(self) -> int:
        return int(self.fp[-1]) if self.fp.size else 0

    @cached_property
    def _ascending(self) -> np.ndarray:
        return np.ascontiguousarray(self.values[::-1])

    def counts_above(self, threshold: float) -> tuple[int, int]:
        """(positives, negatives) with score ``> threshold`` (float64 comparison semantics)."""
        if self.values.size == 0:
            return 0, 0
        f = threshold_float32(threshold) if self.values.dtype == np.float32 else float(threshold)
        # the number of distinct values strictly above f
        k = self.values.size - int(np.searchsorted(self._ascending, f, side="right"))
        if k == 0:
            return 0, 0
        return int(self.tp[k - 1]), int(self.fp[k - 1])


def _ranked_from_nonzero(
    values: np.ndarray, positive_values: np.ndarray, zero_pos: int, zero_neg: int
) -> RankedCounts:
    """Ranked counts from the non-zero scores, the non-zero scores of positives, zero counts.

    A value sort of the non-zero scores replaces an argsort and a gather: for each distinct score
    ``u``, ``#{score >= u}`` is read off the sorted array; each positive's score is located among
    the distinct scores by binary search and the positives are counted per block.
    """
    if values.size and np.isnan(values).any():
        raise UadbenchError("scores contain NaN; ranking metrics need finite scores")
    ordered = np.sort(values)
    n = ordered.size
    if n:
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        distinct = ordered[starts][::-1]  # decreasing
        at_or_above = n - starts[::-1]
        # each positive's block (its score is one of the distinct values), then cumulative counts
        block = distinct.size - 1 - np.searchsorted(distinct[::-1], positive_values, side="left")
        tp = np.cumsum(np.bincount(block, minlength=distinct.size), dtype=np.int64)
        fp = at_or_above - tp
    else:
        distinct = ordered
        tp = fp = np.zeros(0, dtype=np.int64)
    if zero_pos + zero_neg == 0:
        return RankedCounts(distinct, tp, fp)
    j = int(np.count_nonzero(distinct > 0))  # blocks above zero come first
    tp0 = (int(tp[j - 1]) if j else 0) + zero_pos
    fp0 = (int(fp[j - 1]) if j else 0) + zero_neg
    return RankedCounts(
        np.concatenate([distinct[:j], np.zeros(1, dtype=distinct.dtype), distinct[j:]]),
        np.concatenate([tp[:j], np.array([tp0], np.int64), tp[j:] + zero_pos]),
        np.concatenate([fp[:j], np.array([fp0], np.int64), fp[j:] + zero_neg]),
    )


def _as_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores).ravel()
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    return s


class SortedScores:
    """The non-zero scores of a volume, split once, for ranked counts of the volume or a region.

    ``scores``: any shape, finite. ``labels``: boolean of the same shape.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        s = _as_scores(scores)
        y = np.asarray(labels, dtype=bool).ravel()
        if s.shape != y.shape:
            raise UadbenchError(f"scores ({s.size} values) and labels ({y.size}) differ in size")
        self._n = s.size
        self._labels = y
        self._index = np.flatnonzero(s)
        self._values = s[self._index]
        self._value_labels = y[self._index]

    def counts(self, region: np.ndarray | None = None) -> RankedCounts:
        """Ranked counts over all voxels, or over the voxels where ``region`` is true."""
        if region is None:
            values, labels = self._values, self._value_labels
            n_total, n_pos = self._n, int(np.count_nonzero(self._labels))
        else:
            r = np.asarray(region, dtype=bool).ravel()
            if r.size != self._n:
                raise UadbenchError(f"region has {r.size} voxels, scores have {self._n}")
            keep = r[self._index]
            values, labels = self._values[keep], self._value_labels[keep]
            n_total, n_pos = int(np.count_nonzero(r)), int(np.count_nonzero(self._labels & r))
        positive_values = values[labels]
        zero_pos = n_pos - positive_values.size
        zero_neg = (n_total - values.size) - zero_pos
        return _ranked_from_nonzero(values, positive_values, zero_pos, zero_neg)


def ranked_counts(scores: np.ndarray, labels: np.ndarray) -> RankedCounts:
    """Ranked counts of ``scores`` against boolean ``labels`` (any shape, same size)."""
    return SortedScores(scores, labels).counts()


def pooled_ranked_counts(parts) -> RankedCounts:
    """Ranked counts of several ``(scores, labels)`` pairs pooled together.

    Only the non-zero scores of each part are kept and sorted (once, all parts together); the
    zero scores are counted. Used for thresholds over a whole validation split.
    """
    values, positive_values = [], []
    zero_pos = zero_neg = 0
    for scores, lab in parts:
        s = _as_scores(scores)
        y = np.asarray(lab, dtype=bool).ravel()
        if s.shape != y.shape:
            raise UadbenchError(f"scores ({s.size} values) and labels ({y.size}) differ in size")
        nz = np.flatnonzero(s)
        v = s[nz]
        values.append(v)
        positive_values.append(v[y[nz]])
        n_pos = int(np.count_nonzero(y))
        zero_pos += n_pos - positive_values[-1].size
        zero_neg += (s.size - nz.size) - (n_pos - positive_values[-1].size)
    if not values:
        return _ranked_from_nonzero(np.zeros(0, np.float32), np.zeros(0, np.float32), 0, 0)
    return _ranked_from_nonzero(
        np.concatenate(values), np.concatenate(positive_values), zero_pos, zero_neg
    )


# -- metrics from ranked counts ----------------------------------------------------------------


def average_precision(counts: RankedCounts) -> float:
    """Σ (R_n − R_{n−1}) P_n over distinct thresholds; NaN without positives."""
    n_pos = counts.n_pos
    if n_pos == 0:
        return math.nan
    tp = counts.tp.astype(np.float64)
    precision = tp / (tp + counts.fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_auc(counts: RankedCounts) -> float:
    """Area under the ROC curve (ties as trapezoids); NaN with only one class."""
    n_pos, n_neg = counts.n_pos, counts.n_neg
    if n_pos == 0 or n_neg == 0:
        return math.nan
    tp = counts.tp
    dfp = np.diff(counts.fp, prepend=0)
    tp_prev = np.concatenate([[0], tp[:-1]])
    twice_area = int(np.sum(dfp * (tp + tp_prev)))
    return twice_area / (2.0 * n_pos * n_neg)


def best_dice(counts: RankedCounts) -> tuple[float, int]:
    """Exact maximum over thresholds of Dice(score > t); returns (dice, block index).

    The block index ``i`` means "predict every voxel with score ``>= values[i]``"; -1 means the
    empty prediction. NaN (and -1) without positives.
    """
    n_pos = counts.n_pos
    if n_pos == 0:
        return math.nan, -1
    if counts.tp.size == 0:
        return 0.0, -1
    dice = 2.0 * counts.tp / (counts.tp + counts.fp + n_pos)
    i = int(np.argmax(dice))
    if dice[i] <= 0.0:
        return 0.0, -1
    return float(dice[i]), i


def compute_auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of ``scores`` for boolean ``labels`` (= sklearn's; NaN without positives)."""
    return average_precision(ranked_counts(scores, labels))


def compute_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for boolean ``labels`` (= sklearn's; NaN with one class only)."""
    return roc_auc(ranked_counts(scores, labels))


def dice_counts(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """(|P ∩ G|, |P|, |G|) of two boolean arrays."""
    p = np.asarray(prediction, dtype=bool)
    g = np.asarray(target, dtype=bool)
    if p.shape != g.shape:
        raise UadbenchError(f"prediction shape {p.shape} differs from target shape {g.shape}")
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))


def dice_from_counts(intersection: int, n_pred: int, n_target: int) -> float:
    denominator = n_pred + n_target
    return math.nan if denominator == 0 else 2.0 * intersection / denominator


def compute_dice(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice = 2|P ∩ G| / (|P| + |G|); NaN when both are empty."""
    return dice_from_counts(*dice_counts(prediction, target))


__all__ = [
    "ALL_PROTOCOLS",
    "FAIR_PROTOCOLS",
    "METRICS_VERSION",
    "METRIC_INFO",
    "MetricInfo",
    "ORACLE",
    "RankedCounts",
    "SIZE_BINS_ML",
    "SortedScores",
    "average_precision",
    "best_dice",
    "compute_auprc",
    "compute_auroc",
    "compute_dice",
    "dice_counts",
    "dice_from_counts",
    "metric_info",
    "metrics_version",
    "pooled_ranked_counts",
    "ranked_counts",
    "roc_auc",
]
