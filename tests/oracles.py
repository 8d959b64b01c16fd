"""Test oracles: straightforward versions of the protocol's steps, to check and time the fast
paths of :mod:`uadbench.evaluation` against.

They live beside the tests, not in the package: ``import oracles`` works in tests and benchmarks
because pytest puts ``tests/`` on the path (``pythonpath`` in ``pyproject.toml``).

Each function does the obvious thing with scipy / scikit-learn / scikit-image, step by step as
METHOD_SPEC §4 describes the reference code: slice-wise erosion in a loop, the full
``scipy.ndimage.median_filter``, ``sklearn.metrics`` per volume, ``skimage.measure.label`` +
``regionprops(...).area_filled`` for the component filter, and the recursive greedy threshold
bisection evaluated with full-array Dice. They are slow, and obviously correct.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage
from skimage.measure import label, regionprops
from sklearn.metrics import average_precision_score, roc_auc_score

from uadbench.evaluation.postprocess import PostprocessSettings


def erode_and_mask(x: np.ndarray, brain_mask: np.ndarray, iterations: int) -> np.ndarray:
    cross = ndimage.generate_binary_structure(2, 1)
    out = np.array(x, dtype=np.float32, copy=True)
    for k in range(out.shape[2]):
        m = brain_mask[:, :, k] > 0
        if iterations > 0:
            m = ndimage.binary_erosion(m, structure=cross, iterations=iterations)
        out[:, :, k] = np.multiply(m, out[:, :, k])
    return out


def postprocess(x: np.ndarray, brain_mask: np.ndarray, settings: PostprocessSettings) -> np.ndarray:
    size = settings.median_size
    if settings.order == "code":
        y = erode_and_mask(x, brain_mask, settings.erosion_iterations)
        return ndimage.median_filter(y, size=(size,) * 3) if size > 1 else y
    y = ndimage.median_filter(np.asarray(x, np.float32), size=(size,) * 3) if size > 1 else x
    return erode_and_mask(y, brain_mask, settings.erosion_iterations)


def filter_components(binary: np.ndarray, max_voxels: int) -> np.ndarray:
    out = np.array(binary, dtype=bool, copy=True)
    labels = label(out, connectivity=3)
    for prop in regionprops(labels):
        if prop.area_filled <= max_voxels:
            out[labels == prop.label] = False
    return out


def dice(p: np.ndarray, g: np.ndarray) -> float:
    psum = int(np.sum(p))
    gsum = int(np.sum(g))
    denominator = psum + gsum
    return math.nan if denominator == 0 else 2 * int(np.sum(p & g)) / denominator


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    y = np.asarray(labels, dtype=bool).ravel()
    if not y.any():
        return math.nan
    return float(average_precision_score(y.astype(int), np.asarray(scores).ravel()))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    y = np.asarray(labels, dtype=bool).ravel()
    if y.all() or not y.any():
        return math.nan
    return float(roc_auc_score(y.astype(int), np.asarray(scores).ravel()))


def greedy_bisection(x: np.ndarray, y: np.ndarray, steps: int = 10) -> tuple[float, float]:
    """The reference search (METHOD_SPEC §4.3), recursive as written; returns (dice, point).

    Points are float64 and ``x > point`` is evaluated in float64.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=bool).ravel()

    def search(low, high, step, best_val, best_point):
        if step == steps:
            return best_val, best_point
        if low == high:
            high = 1.0
        center = low + (high - low) * 0.5
        q_low = low + (high - low) * 0.25
        q_high = low + (high - low) * 0.75
        d_low = dice(x > q_low, y)
        d_high = dice(x > q_high, y)
        if d_low >= d_high:
            if d_low >= best_val:
                best_val, best_point = d_low, q_low
            return search(low, center, step + 1, best_val, best_point)
        if d_high >= best_val:
            best_val, best_point = d_high, q_high
        return search(center, high, step + 1, best_val, best_point)

    return search(0.0, float(np.max(x)), 0, 0.0, 0.0)


def evaluate_volume(
    anomaly_map: np.ndarray,
    brain_mask: np.ndarray,
    lesion_mask: np.ndarray,
    thresholds: dict[str, float],
    settings: PostprocessSettings,
) -> dict[str, float]:
    """The per-volume metrics of a lesion volume, the straightforward way."""
    processed = postprocess(anomaly_map, brain_mask, settings)
    lesion = np.asarray(lesion_mask, dtype=bool)
    brain = np.asarray(brain_mask, dtype=bool)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["auprc"] = auprc(processed, lesion)
        out["auroc"] = auroc(processed, lesion)
        out["auprc_brain"] = auprc(processed[brain], lesion[brain])
        out["auroc_brain"] = auroc(processed[brain], lesion[brain])
    for name, t in thresholds.items():
        pred = filter_components(processed.astype(np.float64) > t, settings.max_dropped_voxels)
        out[f"dice@{name}"] = dice(pred, lesion)
    return out


__all__ = [
    "auprc",
    "auroc",
    "dice",
    "erode_and_mask",
    "evaluate_volume",
    "filter_components",
    "greedy_bisection",
    "postprocess",
]
