"""The metrics of one test volume: every per-volume number the protocol reports.

:func:`evaluate_volume` post-processes a volume's map (steps 2-3 of the post-processing,
:mod:`uadbench.evaluation.postprocess`) and computes, at the thresholds it is given:

- AUPRC / AUROC over all voxels (the paper) and over brain voxels, and the oracle best Dice
  (volumes with lesions);
- Dice per threshold protocol after the small-component filter (annotated volumes), with the
  pooled-Dice numerator and denominator for ``dice_pooled@*``;
- lesion-wise detection by lesion size at the detection protocol's threshold (volumes with lesions);
- the false-positive volume per protocol (volumes without lesions);
- l1 of the raw residual on lesion vs other voxels; SSIM / PSNR / l1 of the reconstruction on
  volumes without lesions, and the histogram entropy difference on brain voxels;
- every per-volume metric registered by another package (a
  :class:`~uadbench.evaluation.catalogue.VolumeMetric`, found through the ``uadbench.metrics``
  entry points), on the post-processed map, the masks and the spacing.

Lesion-wise detection: lesions are the 26-connected components of the lesion mask; one counts as
detected when at least one of its voxels is predicted (after the component filter). Size bins by
lesion volume: small < 0.1 ml (12 voxels at 2 mm), medium 0.1-1 ml, large >= 1 ml (125 voxels at
2 mm); see ``metrics.SIZE_BINS_ML``. At 2 mm predicted components of <= 7 voxels (0.056 ml) are
removed, which bounds small-lesion detection by design.

Values that are undefined for a volume (NaN: AUPRC without lesions, Dice with empty prediction and
empty target) are left out of its metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from scipy import ndimage

from uadbench.errors import UadbenchError
from uadbench.evaluation import image_quality
from uadbench.evaluation.catalogue import VolumeMetric, volume_metrics
from uadbench.evaluation.checks import check_volume, to_numpy
from uadbench.evaluation.metrics import (
    ORACLE,
    SIZE_BINS_ML,
    SortedScores,
    average_precision,
    best_dice,
    dice_counts,
    dice_from_counts,
    roc_auc,
)
from uadbench.evaluation.postprocess import PostprocessSettings, binarize, postprocess_map
from uadbench.evaluation.results import EvalVolume, ThresholdInfo, VolumeResult

#: The threshold protocol of the lesion-wise detection rates.
DETECTION_PROTOCOL = "val-bisection"
_FULL_26 = np.ones((3, 3, 3), dtype=bool)


class SettingsCache:
    """Post-processing settings per voxel spacing, for one order (``"code"`` or ``"paper"``)."""

    def __init__(self, order: str) -> None:
        self.order = order
        self._cache: dict[float, PostprocessSettings] = {}

    def __call__(self, spacing: float) -> PostprocessSettings:
        key = float(spacing)
        if key not in self._cache:
            self._cache[key] = PostprocessSettings.for_spacing(key, order=self.order)
        return self._cache[key]


def processed_map(vol: EvalVolume, settings: PostprocessSettings) -> np.ndarray:
    """Post-processing steps 2-3 on a checked volume: on the host, or on the device its map was
    left on (the result is on the host either way)."""
    if isinstance(vol.anomaly_map, np.ndarray):
        return postprocess_map(vol.anomaly_map, vol.brain_mask, settings)
    from uadbench.evaluation.torch_postprocess import postprocess_map_torch  # imports torch

    return postprocess_map_torch(vol.anomaly_map, vol.brain_mask, settings)


def _raw_residual(vol: EvalVolume) -> np.ndarray:
    if vol.image is not None and vol.reconstruction is not None:
        return np.abs(
            np.asarray(vol.image, dtype=np.float32) - np.asarray(vol.reconstruction, np.float32)
        )
    return to_numpy(vol.anomaly_map).astype(np.float32, copy=False)


def _detection(
    prediction: np.ndarray, lesion: np.ndarray, voxel_ml: float
) -> dict[str, tuple[int, int]]:
    labels, n = ndimage.label(lesion, structure=_FULL_26)
    out = {name: (0, 0) for name in SIZE_BINS_ML}
    if n == 0:
        return out
    sizes_ml = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_ml
    hit = np.bincount(labels[prediction].ravel(), minlength=n + 1)[1:] > 0
    for name, (lo, hi) in SIZE_BINS_ML.items():
        in_bin = (sizes_ml >= lo) & (sizes_ml < hi)
        out[name] = (int(np.count_nonzero(hit & in_bin)), int(np.count_nonzero(in_bin)))
    return out


def _registered(vol: EvalVolume, processed: np.ndarray, lesion: np.ndarray | None, brain: np.ndarray,
                metrics: Sequence[VolumeMetric]) -> dict[str, float]:
    """The values of registered per-volume metrics (NaN where undefined), on read-only arrays."""
    views = []
    for arr in (processed, lesion, brain):
        view = None if arr is None else arr.view()
        if view is not None:
            view.flags.writeable = False
        views.append(view)
    out: dict[str, float] = {}
    for metric in metrics:
        try:
            value = cast(Callable[..., Any], metric.compute)(views[0], views[1], views[2], float(vol.spacing))
        except Exception as exc:
            raise UadbenchError(
                f"metric {metric.name!r} failed on volume {vol.subject_id!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise UadbenchError(
                f"metric {metric.name!r} returned {type(value).__name__} on volume {vol.subject_id!r}; "
                "a volume metric returns a float (NaN where it is undefined)"
            )
        out[metric.name] = float(value)
    return out


def evaluate_volume(
    vol: EvalVolume,
    thresholds: Mapping[str, ThresholdInfo | float],
    *,
    order: str = "code",
    settings: PostprocessSettings | None = None,
) -> VolumeResult:
    """Every per-volume metric of one test volume at the given fair thresholds (registered
    metrics of other packages included)."""
    vol = check_volume(vol, "test")
    settings = settings or PostprocessSettings.for_spacing(vol.spacing, order=order)
    return evaluate_checked(vol, thresholds, settings)


def evaluate_checked(
    vol: EvalVolume,
    thresholds: Mapping[str, ThresholdInfo | float],
    settings: PostprocessSettings,
    detection: str = DETECTION_PROTOCOL,
    processed: np.ndarray | None = None,
    registered: Sequence[VolumeMetric] | None = None,
) -> VolumeResult:
    """:func:`evaluate_volume` on a checked volume; ``detection``: the protocol of the lesion-wise
    detection rates; ``processed``: the volume's post-processed map, when the caller has it;
    ``registered``: the registered volume metrics to compute (None: every one registered now)."""
    if processed is None:
        processed = processed_map(vol, settings)
    brain = np.asarray(vol.brain_mask, dtype=bool)
    voxel_ml = float(vol.spacing) ** 3 / 1000.0
    annotated = vol.lesion_mask is not None
    lesion = np.asarray(vol.lesion_mask, dtype=bool) if annotated else np.zeros_like(brain)
    has_lesion = annotated and bool(lesion.any())
    m: dict[str, float] = {}
    ratios: dict[str, tuple[float, float]] = {}

    raw = _raw_residual(vol)
    if has_lesion:
        m["l1_lesion"] = float(np.mean(raw[lesion], dtype=np.float64))
    if not lesion.all():
        m["l1_healthy"] = float(np.mean(raw[~lesion], dtype=np.float64))
    if "l1_lesion" in m and "l1_healthy" in m:
        m["l1_ratio"] = m["l1_lesion"] / m["l1_healthy"] if m["l1_healthy"] > 0 else math.nan
        ratios["l1_ratio"] = (m["l1_lesion"], m["l1_healthy"])

    if has_lesion:
        sorted_scores = SortedScores(processed, lesion)
        c_all = sorted_scores.counts()
        c_brain = sorted_scores.counts(brain)
        m["auprc"] = average_precision(c_all)
        m["auroc"] = roc_auc(c_all)
        m["auprc_brain"] = average_precision(c_brain)
        m["auroc_brain"] = roc_auc(c_brain)
        m[f"dice@{ORACLE}"] = best_dice(c_all)[0]

    for protocol, info in thresholds.items():
        value = info.value if isinstance(info, ThresholdInfo) else info
        if protocol == ORACLE or value is None:
            continue
        prediction = binarize(processed, float(value), settings)
        if annotated:
            inter, n_pred, n_target = dice_counts(prediction, lesion)
            m[f"dice@{protocol}"] = dice_from_counts(inter, n_pred, n_target)
            ratios[f"dice_pooled@{protocol}"] = (2.0 * inter, float(n_pred + n_target))
            if has_lesion and protocol == detection:
                for name, (hit, total) in _detection(prediction, lesion, voxel_ml).items():
                    key = f"detection_rate_{name}@{protocol}"
                    if total:
                        m[key] = hit / total
                        ratios[key] = (float(hit), float(total))
        if not has_lesion:
            m[f"fp_volume_ml@{protocol}"] = int(np.count_nonzero(prediction)) * voxel_ml

    if vol.image is not None and vol.reconstruction is not None:
        if not has_lesion:
            m["l1_recon"] = image_quality.l1_error(vol.image, vol.reconstruction)
            m["psnr"] = image_quality.psnr(vol.image, vol.reconstruction)
            if min(np.shape(vol.image)) >= 7:
                m["ssim"] = image_quality.ssim(vol.image, vol.reconstruction)
        m["entropy_diff"] = image_quality.entropy_difference(
            vol.image, vol.reconstruction, brain & ~lesion
        )

    m.update(_registered(vol, processed, lesion if annotated else None, brain,
                         volume_metrics() if registered is None else registered))
    metrics = {k: float(v) for k, v in m.items() if not (isinstance(v, float) and math.isnan(v))}
    return VolumeResult(vol.subject_id, metrics, ratios)


__all__ = ["DETECTION_PROTOCOL", "SettingsCache", "evaluate_checked", "evaluate_volume", "processed_map"]
