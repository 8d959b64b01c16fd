"""Scan- and slice-level detection: does a method's map tell lesion scans and slices from healthy ones?

Beside the voxel metrics, the protocol reports four dataset-level detection metrics (the scan- or
image-level AUROC / AP of the UPD, MedIAnomaly and BMAD benchmarks):

- ``auroc_scan`` / ``auprc_scan``: one score per test scan; scans with lesions (lesion mask given
  and non-empty) are the positives, every other test scan (the healthy test scans, and annotated
  scans with an empty mask) a negative;
- ``auroc_slice`` / ``auprc_slice``: one score per axial slice (the last axis, along which the
  slices were restacked) that holds at least one brain voxel; slices with at least one lesion
  voxel are the positives, all other such slices of all test scans the negatives.

The default score, for every method alike, is a high quantile of the post-processed map (steps 2-3
of the post-processing: erosion-masking, median filter) over the brain-mask voxels:
:data:`SCORE_QUANTILE` = 0.99 of the scan's brain voxels for the scan score, 0.99 of the slice's
brain voxels for a slice score (``numpy.quantile``, linear interpolation). A scan without brain
voxels scores 0, the value of its whole post-processed map. AUROC and AP (``auprc``: average
precision, Σ (R_n − R_{n−1}) P_n) equal ``sklearn.metrics.roc_auc_score`` and
``average_precision_score`` on these scores; they are undefined (absent) without positives, and
AUROC also without negatives.

Confidence intervals resample test subjects, as for every other metric (the same resamples): a
resampled scan brings all of its slices, so the slice-level interval is a cluster bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The quantile of the post-processed map over brain voxels that scores a scan or a slice.
SCORE_QUANTILE = 0.99
#: The detection metrics, each a (level, ranking metric) pair.
DETECTION_METRICS: dict[str, tuple[str, str]] = {
    "auroc_scan": ("scan", "auroc"),
    "auprc_scan": ("scan", "auprc"),
    "auroc_slice": ("slice", "auroc"),
    "auprc_slice": ("slice", "auprc"),
}
_CHUNK = 1 << 21  # bootstrap weights held at once (resamples x items)


@dataclass(frozen=True)
class DetectionScores:
    """One test scan's detection scores and labels: its score and whether it has lesions; the
    scores of its slices that hold brain voxels and whether each holds lesion voxels."""

    scan: float
    positive: bool
    slices: np.ndarray  # (S,) float64
    slice_positive: np.ndarray  # (S,) bool


def scan_score(processed: np.ndarray, brain: np.ndarray) -> float:
    """The :data:`SCORE_QUANTILE` quantile of ``processed`` over the brain voxels (0 without any)."""
    values = np.asarray(processed)[np.asarray(brain, dtype=bool)]
    return float(np.quantile(values.astype(np.float64), SCORE_QUANTILE)) if values.size else 0.0


def slice_scores(processed: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, slice indices) of the axial slices (last axis) that hold brain voxels; each score
    is the :data:`SCORE_QUANTILE` quantile of ``processed`` over the slice's brain voxels."""
    x = np.asarray(processed)
    b = np.asarray(brain, dtype=bool)
    index = np.flatnonzero(b.any(axis=(0, 1)))
    scores = np.array([np.quantile(x[:, :, z][b[:, :, z]].astype(np.float64), SCORE_QUANTILE) for z in index],
                      dtype=np.float64)
    return scores, index


def volume_scores(processed: np.ndarray, brain: np.ndarray, lesion: np.ndarray | None) -> DetectionScores:
    """The detection scores and labels of one test scan (``lesion``: None for a healthy scan)."""
    scores, index = slice_scores(processed, brain)
    if lesion is None:
        slice_positive = np.zeros(index.size, dtype=bool)
    else:
        slice_positive = np.asarray(np.asarray(lesion, dtype=bool).any(axis=(0, 1)))[index]
    positive = lesion is not None and bool(np.any(lesion))
    return DetectionScores(scan_score(processed, brain), positive, scores, slice_positive)


def ranking_metrics(
    scores: np.ndarray, labels: np.ndarray, owner: np.ndarray | None = None, multiplicity: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """AUROC and AP of ``scores`` for boolean ``labels``, once per row of ``multiplicity``.

    ``owner`` (n,) gives each item's subject (default: each item its own); ``multiplicity``
    (B, subjects) weighs each subject's items in each of B rows (bootstrap resamples; default:
    one row of ones). Returns ``{"auroc": (B,), "auprc": (B,)}``, NaN where a row has no positive
    (AUROC also: no negative). Ties are one threshold, as in scikit-learn: with weights the values
    equal ``roc_auc_score`` / ``average_precision_score`` with ``sample_weight``.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    own = np.arange(s.size) if owner is None else np.asarray(owner, dtype=np.int64).ravel()
    mult = np.ones((1, int(own.max()) + 1 if own.size else 0)) if multiplicity is None else np.asarray(multiplicity, float)
    n_rows = mult.shape[0]
    out = {"auroc": np.full(n_rows, math.nan), "auprc": np.full(n_rows, math.nan)}
    if s.size == 0:
        return out
    order = np.argsort(-s, kind="stable")
    s, y, own = s[order], y[order], own[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))  # blocks of tied scores
    step = max(1, _CHUNK // s.size)
    for lo in range(0, n_rows, step):
        w = mult[lo:lo + step][:, own]  # (b, n) weight of each item
        pos = np.add.reduceat(w * y, starts, axis=1)
        neg = np.add.reduceat(w * ~y, starts, axis=1)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        n_pos, n_neg = tp[:, -1], fp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc = np.sum(neg * (2.0 * tp - pos), axis=1) / (2.0 * n_pos * n_neg)
            precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
            auprc = np.sum(pos * precision, axis=1) / n_pos
        out["auroc"][lo:lo + step] = np.where((n_pos > 0) & (n_neg > 0), auroc, math.nan)
        out["auprc"][lo:lo + step] = np.where(n_pos > 0, auprc, math.nan)
    return out


def detection_metrics(
    volumes: Sequence[DetectionScores], resamples: np.ndarray | None = None, level: float = 0.95
) -> tuple[dict[str, float], dict[str, int], dict[str, tuple[float, float]]]:
    """(aggregates, counts, confidence intervals) of the detection metrics over test scans.

    ``resamples`` (B, scans): bootstrap multiplicities of the scans (None: no intervals); the
    interval is the percentile one, as for the other metrics. ``counts``: the scans behind each
    metric. Undefined metrics are absent.
    """
    n = len(volumes)
    if n == 0:
        return {}, {}, {}
    levels = {
        "scan": (np.array([v.scan for v in volumes]), np.array([v.positive for v in volumes]), np.arange(n)),
        "slice": (np.concatenate([v.slices for v in volumes]),
                  np.concatenate([v.slice_positive for v in volumes]),
                  np.repeat(np.arange(n), [v.slices.size for v in volumes])),
    }
    aggregates: dict[str, float] = {}
    counts: dict[str, int] = {}
    cis: dict[str, tuple[float, float]] = {}
    alpha = (1.0 - level) / 2.0
    for lvl, (scores, labels, owner) in levels.items():
        point = ranking_metrics(scores, labels, owner, np.ones((1, n)))
        boot = ranking_metrics(scores, labels, owner, resamples) if resamples is not None else None
        for name, (metric_level, metric) in DETECTION_METRICS.items():
            if metric_level != lvl or math.isnan(point[metric][0]):
                continue
            aggregates[name] = float(point[metric][0])
            counts[name] = int(np.unique(owner).size)
            if boot is not None:
                stats = boot[metric][np.isfinite(boot[metric])]
                if stats.size:
                    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
                    cis[name] = (float(lo), float(hi))
                else:
                    cis[name] = (math.nan, math.nan)
    return aggregates, counts, cis


__all__ = [
    "DETECTION_METRICS",
    "SCORE_QUANTILE",
    "DetectionScores",
    "detection_metrics",
    "ranking_metrics",
    "scan_score",
    "slice_scores",
    "volume_scores",
]
