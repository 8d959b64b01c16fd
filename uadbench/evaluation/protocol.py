"""The evaluation protocol: one call turns a method's anomaly maps into every reported number.

:func:`evaluate_dataset` follows the paper's protocol (Behrendt et al., arXiv 2312.04215, as
implemented in the reference code, METHOD_SPEC §4) for every method alike:

1. post-process each map (:mod:`uadbench.evaluation.postprocess`: erosion-masking, median);
2. choose thresholds, each with its provenance (:class:`ThresholdInfo`):
   ``val-bisection`` / ``val-exact`` on the labelled validation split, ``healthy-fpr@k%`` on
   healthy validation scans, and ``oracle`` (per test volume; an upper bound, never fair);
3. per test volume: AUPRC / AUROC over all voxels (the paper) and over brain voxels, Dice per
   protocol after the small-component filter, l1 of the raw residual on lesion vs other voxels,
   detection rate by lesion size; on healthy scans the false-positive volume and the
   reconstruction quality;
4. aggregate over volumes with per-subject bootstrap 95 % confidence intervals.

Conventions: a volume "has lesions" when its lesion mask is given and non-empty. Per-volume
metrics that are undefined for a volume (AUPRC without lesions, Dice with empty prediction and
empty target) are left out of that volume's entry and out of the mean. Aggregates are means over
the volumes that define the metric, except ``dice_pooled@*`` (2 Σ|P∩G| / Σ(|P| + |G|) over all
annotated volumes), ``l1_ratio`` (Σ l1_lesion / Σ l1_healthy over volumes with lesions, i.e.
the ratio of the means) and ``detection_rate_*`` (detected lesions / lesions, pooled).

Lesion-wise detection: lesions are the 26-connected components of the lesion mask; one counts as
detected when at least one of its voxels is predicted (after the component filter) at the
``val-bisection`` threshold. Size bins by lesion volume: small < 0.1 ml (12 voxels at 2 mm),
medium 0.1-1 ml, large >= 1 ml (125 voxels at 2 mm); see ``metrics.SIZE_BINS_ML``. Note that at
2 mm predicted components of <= 7 voxels (0.056 ml) are removed, which bounds small-lesion
detection by design.

Maps and masks may be numpy arrays or torch tensors. A map that is a CUDA tensor is post-processed
on its device (:mod:`uadbench.evaluation.torch_postprocess`, same values); everything else runs on
the host.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from uadbench.errors import UadbenchError
from uadbench.evaluation import reconstruction as _reco
from uadbench.evaluation.metrics import (
    ORACLE,
    SIZE_BINS_ML,
    SortedScores,
    average_precision,
    best_dice,
    dice_counts,
    dice_from_counts,
    pooled_ranked_counts,
    roc_auc,
)
from uadbench.evaluation.postprocess import PostprocessSettings, binarize, postprocess_map
from uadbench.evaluation.stats import bootstrap_ratio_ci, bootstrap_resamples
from uadbench.evaluation.thresholds import bisection_threshold, exact_threshold, fpr_threshold

HEALTHY_FPRS: dict[str, float] = {
    "healthy-fpr@1%": 0.01,
    "healthy-fpr@5%": 0.05,
    "healthy-fpr@10%": 0.10,
}
DETECTION_PROTOCOL = "val-bisection"
_FULL_26 = np.ones((3, 3, 3), dtype=bool)


# -- data classes ------------------------------------------------------------------------------


@dataclass
class EvalVolume:
    """One evaluation volume: a method's raw anomaly map and the harness's masks.

    ``anomaly_map`` (X, Y, Z) float32, slices restacked along Z; ``brain_mask`` bool;
    ``lesion_mask`` bool or None for healthy scans; ``spacing`` isotropic voxel size in mm;
    ``image`` / ``reconstruction`` optional, in [0, 1], for l1 and reconstruction quality.
    """

    subject_id: str
    anomaly_map: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None
    spacing: float
    image: np.ndarray | None = None
    reconstruction: np.ndarray | None = None


@dataclass
class ThresholdInfo:
    """Where a threshold came from. ``value`` is None for the per-volume oracle."""

    protocol: str
    value: float | None
    source: str
    n_volumes: int
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


@dataclass
class DatasetEvaluation:
    """Every number of one (method, dataset) evaluation, with provenance."""

    per_volume: dict[str, dict[str, float]]
    aggregates: dict[str, float]
    confidence_intervals: dict[str, tuple[float, float]]
    thresholds: dict[str, ThresholdInfo]
    counts: dict[str, int] = field(default_factory=dict)  # volumes behind each aggregate
    settings: dict[str, Any] = field(default_factory=dict)  # post-processing, bootstrap

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; undefined (NaN / inf) numbers become None."""
        return _json_safe(
            {
                "per_volume": self.per_volume,
                "aggregates": self.aggregates,
                "confidence_intervals": {k: list(v) for k, v in self.confidence_intervals.items()},
                "thresholds": {k: v.to_dict() for k, v in self.thresholds.items()},
                "counts": self.counts,
                "settings": self.settings,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetEvaluation":
        """Inverse of :meth:`to_dict` (None read back as NaN)."""
        try:
            return cls(
                per_volume={
                    sid: {k: _from_json_number(v) for k, v in m.items()}
                    for sid, m in data["per_volume"].items()
                },
                aggregates={k: _from_json_number(v) for k, v in data["aggregates"].items()},
                confidence_intervals={
                    k: (_from_json_number(v[0]), _from_json_number(v[1]))
                    for k, v in data.get("confidence_intervals", {}).items()
                },
                thresholds={k: _threshold_from_dict(v) for k, v in data["thresholds"].items()},
                counts={k: int(v) for k, v in data.get("counts", {}).items()},
                settings=dict(data.get("settings", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UadbenchError(
                f"not a serialised DatasetEvaluation ({type(exc).__name__}: {exc}); expected the "
                "output of DatasetEvaluation.to_dict()"
            ) from None


def _threshold_from_dict(d: Mapping[str, Any]) -> ThresholdInfo:
    return ThresholdInfo(
        protocol=str(d["protocol"]),
        value=None if d.get("value") is None else float(d["value"]),
        source=str(d["source"]),
        n_volumes=int(d["n_volumes"]),
        details={k: (math.nan if v is None else float(v)) for k, v in d.get("details", {}).items()},
    )


def _from_json_number(v: Any) -> float:
    return math.nan if v is None else float(v)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# -- validation ----------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _is_device_tensor(x: Any) -> bool:
    """A torch tensor on a GPU (or other non-CPU device)."""
    device = getattr(x, "device", None)
    return hasattr(x, "detach") and getattr(device, "type", "cpu") != "cpu"


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array-like; torch tensors (CPU or GPU) are detached and copied to host."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_volume(vol: EvalVolume, role: str) -> EvalVolume:
    """Validate one volume; return it with numpy arrays (float32 map, bool masks)."""
    if not isinstance(vol, EvalVolume):
        raise UadbenchError(f"{role} must hold EvalVolume objects, got {type(vol).__name__}")
    sid = vol.subject_id
    if not isinstance(sid, str) or not sid:
        raise UadbenchError(f"{role} volume has an invalid subject_id {sid!r}; use a non-empty str")
    on_device = _is_device_tensor(vol.anomaly_map)
    if on_device:  # keep it there: post-processing runs on the device
        amap = vol.anomaly_map.detach()
        amap = amap if amap.is_floating_point() else amap.to(dtype=_torch().float32)
        shape = tuple(amap.shape)
        finite = bool(_torch().isfinite(amap).all())
        n_nan = int(_torch().isnan(amap).sum()) if not finite else 0
        n_inf = int(_torch().isinf(amap).sum()) if not finite else 0
        kind_ok = True
    else:
        amap = _to_numpy(vol.anomaly_map)
        shape = amap.shape
        kind_ok = amap.dtype != bool and (
            np.issubdtype(amap.dtype, np.floating) or np.issubdtype(amap.dtype, np.integer)
        )
        finite = kind_ok and bool(np.all(np.isfinite(amap)))
        n_nan = int(np.count_nonzero(np.isnan(amap))) if kind_ok and not finite else 0
        n_inf = int(np.count_nonzero(np.isinf(amap))) if kind_ok and not finite else 0
    if len(shape) != 3:
        raise UadbenchError(
            f"{role} volume {sid!r}: anomaly map must be 3D (X, Y, Z), got shape {shape}"
        )
    if not kind_ok:
        raise UadbenchError(f"{role} volume {sid!r}: anomaly map must be real, got {amap.dtype}")
    if not finite:
        raise UadbenchError(
            f"{role} volume {sid!r}: anomaly map contains {n_nan} NaN and {n_inf} infinite "
            "values; a method must return finite scores for every voxel"
        )
    if vol.brain_mask is None:
        raise UadbenchError(f"{role} volume {sid!r}: brain_mask is required")
    arrays: dict[str, np.ndarray | None] = {}
    for name in ("brain_mask", "lesion_mask", "image", "reconstruction"):
        arr = getattr(vol, name)
        if arr is None:
            arrays[name] = None
            continue
        arr = _to_numpy(arr)
        if arr.shape != shape:
            raise UadbenchError(
                f"{role} volume {sid!r}: {name} shape {arr.shape} differs from anomaly map "
                f"shape {shape}"
            )
        arrays[name] = arr > 0 if name.endswith("_mask") else arr.astype(np.float32, copy=False)
    spacing = PostprocessSettings.for_spacing(vol.spacing)  # validates spacing
    del spacing
    return EvalVolume(
        subject_id=sid,
        anomaly_map=amap if on_device else amap.astype(np.float32, copy=False),
        brain_mask=arrays["brain_mask"],  # type: ignore[arg-type]
        lesion_mask=arrays["lesion_mask"],
        spacing=float(vol.spacing),
        image=arrays["image"],
        reconstruction=arrays["reconstruction"],
    )


def _check_split(volumes: Sequence[EvalVolume], role: str) -> list[EvalVolume]:
    checked = [_check_volume(vol, role) for vol in volumes]
    seen: set[str] = set()
    dupes: set[str] = set()
    for vol in checked:
        (dupes if vol.subject_id in seen else seen).add(vol.subject_id)
    if dupes:
        raise UadbenchError(f"{role} lists subject(s) more than once: {', '.join(sorted(dupes))}")
    return checked


def _check_disjoint(test_ids: Iterable[str], other_ids: Iterable[str], role: str) -> None:
    shared = sorted(set(test_ids) & set(other_ids))
    if shared:
        shown = ", ".join(shared[:10]) + (f" (+{len(shared) - 10} more)" if len(shared) > 10 else "")
        raise UadbenchError(
            f"{role} shares {len(shared)} subject(s) with the test split: {shown}; thresholds "
            "must come from subjects disjoint from the test subjects"
        )


# -- post-processing -----------------------------------------------------------------------------


class _SettingsCache:
    def __init__(self, order: str) -> None:
        self.order = order
        self._cache: dict[float, PostprocessSettings] = {}

    def __call__(self, spacing: float) -> PostprocessSettings:
        key = float(spacing)
        if key not in self._cache:
            self._cache[key] = PostprocessSettings.for_spacing(key, order=self.order)
        return self._cache[key]


def _processed(vol: EvalVolume, settings: PostprocessSettings) -> np.ndarray:
    if _is_device_tensor(vol.anomaly_map):
        from uadbench.evaluation.torch_postprocess import postprocess_map_torch

        return postprocess_map_torch(vol.anomaly_map, vol.brain_mask, settings)
    return postprocess_map(vol.anomaly_map, vol.brain_mask, settings)


# -- thresholds ----------------------------------------------------------------------------------


def compute_thresholds(
    *,
    lesion_val: Sequence[EvalVolume] | None = None,
    healthy_val: Sequence[EvalVolume] | None = None,
    source_names: Mapping[str, str] | None = None,
    order: str = "code",
) -> dict[str, ThresholdInfo]:
    """Fair thresholds (val-bisection, val-exact, healthy-fpr@k%) with their provenance.

    Protocols whose data is missing (None or empty) are absent from the result.
    """
    names = dict(source_names or {})
    settings = _SettingsCache(order)
    out: dict[str, ThresholdInfo] = {}
    if lesion_val:
        lesion_val = _check_split(lesion_val, "lesion_val")
        for vol in lesion_val:
            if vol.lesion_mask is None:
                raise UadbenchError(
                    f"lesion_val volume {vol.subject_id!r} has no lesion mask; the validation "
                    "split for Dice thresholds must be labelled (pass healthy scans as healthy_val)"
                )
        counts = pooled_ranked_counts(
            (_processed(v, settings(v.spacing)), v.lesion_mask) for v in lesion_val
        )
        source = f"{names.get('lesion_val', 'lesion validation split')} ({len(lesion_val)} volumes)"
        bis = bisection_threshold(counts)
        ex = exact_threshold(counts)
        out["val-bisection"] = ThresholdInfo(
            "val-bisection",
            bis.value,
            source,
            len(lesion_val),
            {"val_pooled_dice": bis.score},
        )
        out["val-exact"] = ThresholdInfo(
            "val-exact", ex.value, source, len(lesion_val), {"val_pooled_dice": ex.score}
        )
    if healthy_val:
        healthy_val = _check_split(healthy_val, "healthy_val")
        counts = pooled_ranked_counts(
            (
                _processed(v, settings(v.spacing))[np.asarray(v.brain_mask, dtype=bool)],
                np.zeros(int(np.count_nonzero(v.brain_mask)), dtype=bool),
            )
            for v in healthy_val
        )
        n_vox = counts.n_neg
        source = (
            f"{names.get('healthy_val', 'healthy validation scans')} ({len(healthy_val)} volumes, "
            f"{n_vox} brain voxels)"
        )
        for protocol, rate in HEALTHY_FPRS.items():
            res = fpr_threshold(counts, rate)
            out[protocol] = ThresholdInfo(
                protocol, res.value, source, len(healthy_val), {"healthy_val_fpr": res.score}
            )
    return out


# -- per-volume metrics --------------------------------------------------------------------------


@dataclass
class VolumeResult:
    """Metrics of one test volume plus the (numerator, denominator) pairs of pooled aggregates."""

    subject_id: str
    metrics: dict[str, float]
    ratios: dict[str, tuple[float, float]]


def _raw_residual(vol: EvalVolume) -> np.ndarray:
    if vol.image is not None and vol.reconstruction is not None:
        return np.abs(
            np.asarray(vol.image, dtype=np.float32) - np.asarray(vol.reconstruction, np.float32)
        )
    return _to_numpy(vol.anomaly_map).astype(np.float32, copy=False)


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


def evaluate_volume(
    vol: EvalVolume,
    thresholds: Mapping[str, ThresholdInfo | float],
    *,
    order: str = "code",
    settings: PostprocessSettings | None = None,
) -> VolumeResult:
    """Every per-volume metric of one test volume at the given fair thresholds."""
    vol = _check_volume(vol, "test")
    settings = settings or PostprocessSettings.for_spacing(vol.spacing, order=order)
    return _evaluate_checked(vol, thresholds, settings)


def _evaluate_checked(
    vol: EvalVolume, thresholds: Mapping[str, ThresholdInfo | float], settings: PostprocessSettings
) -> VolumeResult:
    processed = _processed(vol, settings)
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
            if has_lesion and protocol == DETECTION_PROTOCOL:
                for name, (hit, total) in _detection(prediction, lesion, voxel_ml).items():
                    key = f"detection_rate_{name}@{protocol}"
                    if total:
                        m[key] = hit / total
                        ratios[key] = (float(hit), float(total))
        if not has_lesion:
            m[f"fp_volume_ml@{protocol}"] = int(np.count_nonzero(prediction)) * voxel_ml

    if vol.image is not None and vol.reconstruction is not None:
        if not has_lesion:
            m["l1_recon"] = _reco.l1_error(vol.image, vol.reconstruction)
            m["psnr"] = _reco.psnr(vol.image, vol.reconstruction)
            if min(np.shape(vol.image)) >= 7:
                m["ssim"] = _reco.ssim(vol.image, vol.reconstruction)
        m["entropy_diff"] = _reco.entropy_difference(
            vol.image, vol.reconstruction, brain & ~lesion
        )

    metrics = {k: float(v) for k, v in m.items() if not (isinstance(v, float) and math.isnan(v))}
    return VolumeResult(vol.subject_id, metrics, ratios)


# -- the dataset -------------------------------------------------------------------------------


class DatasetEvaluator:
    """Cumulative form of :func:`evaluate_dataset`: ``update`` per test volume, then ``aggregate``.

    Thresholds are fixed at construction (from the validation splits, as in
    :func:`evaluate_dataset`); test volumes can then be streamed one at a time, so a runner never
    holds a whole test split's maps in memory. ``reset`` forgets the test volumes, keeping the
    thresholds.
    """

    def __init__(
        self,
        *,
        lesion_val: Sequence[EvalVolume] | None = None,
        healthy_val: Sequence[EvalVolume] | None = None,
        source_names: Mapping[str, str] | None = None,
        order: str = "code",
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> None:
        if order not in ("code", "paper"):
            raise UadbenchError(
                f"unknown post-processing order {order!r}; valid: 'code' (erode then median, the "
                "reference implementation) or 'paper' (median then erode)"
            )
        if n_bootstrap < 0:
            raise UadbenchError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
        self.order = order
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.thresholds = compute_thresholds(
            lesion_val=lesion_val, healthy_val=healthy_val, source_names=source_names, order=order
        )  # validates both splits
        self._lesion_val_ids = {v.subject_id for v in lesion_val or ()}
        self._healthy_val_ids = {v.subject_id for v in healthy_val or ()}
        self._settings = _SettingsCache(order)
        self._results: list[VolumeResult] = []
        self._spacings: set[float] = set()

    def update(self, volume: EvalVolume) -> VolumeResult:
        """Evaluate one test volume and keep its metrics; returns them."""
        vol = _check_volume(volume, "test")
        _check_disjoint([vol.subject_id], self._lesion_val_ids, "lesion_val")
        _check_disjoint([vol.subject_id], self._healthy_val_ids, "healthy_val")
        if any(r.subject_id == vol.subject_id for r in self._results):
            raise UadbenchError(f"test lists subject(s) more than once: {vol.subject_id}")
        result = _evaluate_checked(vol, self.thresholds, self._settings(vol.spacing))
        self._results.append(result)
        self._spacings.add(vol.spacing)
        return result

    def reset(self) -> None:
        self._results = []
        self._spacings = set()

    def aggregate(self) -> DatasetEvaluation:
        """Aggregates, bootstrap CIs and provenance over the volumes seen so far."""
        results = self._results
        if not results:
            raise UadbenchError("no test volume was evaluated; call update() first")
        thresholds = dict(self.thresholds)
        n_lesion = sum(1 for r in results if f"dice@{ORACLE}" in r.metrics)
        if n_lesion:
            thresholds[ORACLE] = ThresholdInfo(
                ORACLE, None, "per test volume (upper bound)", n_lesion, {}
            )
        per_volume = {r.subject_id: dict(r.metrics) for r in results}
        num_den = _numerators_denominators(results)
        aggregates: dict[str, float] = {}
        counts: dict[str, int] = {}
        for name, (num, den) in num_den.items():
            if den.sum() > 0:
                aggregates[name] = float(num.sum() / den.sum())
                counts[name] = int(np.count_nonzero(den))
        cis: dict[str, tuple[float, float]] = {}
        if self.n_bootstrap:
            resamples = bootstrap_resamples(
                len(results), n_bootstrap=self.n_bootstrap, seed=self.seed
            )
            for name in aggregates:
                num, den = num_den[name]
                cis[name] = bootstrap_ratio_ci(num, den, resamples=resamples)
        info = {
            "order": self.order,
            "postprocess": {
                f"{s:g}mm": asdict(self._settings(s)) for s in sorted(self._spacings)
            },
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "ci_level": 0.95,
        }
        return DatasetEvaluation(
            per_volume=per_volume,
            aggregates=_ordered(aggregates),
            confidence_intervals=_ordered(cis),
            thresholds=thresholds,
            counts=_ordered(counts),
            settings=info,
        )


def evaluate_dataset(
    test: Sequence[EvalVolume],
    *,
    lesion_val: Sequence[EvalVolume] | None = None,
    healthy_val: Sequence[EvalVolume] | None = None,
    source_names: Mapping[str, str] | None = None,
    order: str = "code",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> DatasetEvaluation:
    """Evaluate a method's maps on one dataset with the harness's protocol.

    ``test``: the test split. ``lesion_val``: labelled validation split of the same dataset
    (enables ``val-bisection`` and ``val-exact``). ``healthy_val``: healthy validation scans
    (enables ``healthy-fpr@1%/5%/10%``). Validation subjects must not appear in ``test``.
    ``source_names`` names the two validation sources in the provenance text. ``order``:
    ``"code"`` (erode, then median; the reference) or ``"paper"`` (median, then erode).
    ``n_bootstrap`` resamples of the test subjects give the 95 % CIs (0: none), drawn with
    ``seed``.
    """
    if order not in ("code", "paper"):
        raise UadbenchError(
            f"unknown post-processing order {order!r}; valid: 'code' (erode then median, the "
            "reference implementation) or 'paper' (median then erode)"
        )
    test = list(test)
    if not test:
        raise UadbenchError("the test split is empty; nothing to evaluate")
    test = _check_split(test, "test")
    test_ids = [v.subject_id for v in test]
    if lesion_val:
        lesion_val = _check_split(lesion_val, "lesion_val")
        _check_disjoint(test_ids, [v.subject_id for v in lesion_val], "lesion_val")
    if healthy_val:
        healthy_val = _check_split(healthy_val, "healthy_val")
        _check_disjoint(test_ids, [v.subject_id for v in healthy_val], "healthy_val")
    evaluator = DatasetEvaluator(
        lesion_val=lesion_val,
        healthy_val=healthy_val,
        source_names=source_names,
        order=order,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    for vol in test:
        evaluator.update(vol)
    return evaluator.aggregate()


def _numerators_denominators(
    results: Sequence[VolumeResult],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    n = len(results)
    names: list[str] = []
    for r in results:
        for k in list(r.metrics) + list(r.ratios):
            if k not in names:
                names.append(k)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        num = np.zeros(n)
        den = np.zeros(n)
        for i, r in enumerate(results):
            if name in r.ratios:
                num[i], den[i] = r.ratios[name]
            elif name in r.metrics and not _is_pooled(name):
                num[i], den[i] = r.metrics[name], 1.0
        out[name] = (num, den)
    return out


def _is_pooled(name: str) -> bool:
    """Metrics aggregated as a pooled ratio, never as a mean of per-volume values."""
    return name == "l1_ratio" or name.startswith(("dice_pooled@", "detection_rate_"))


def _ordered(d: dict[str, Any]) -> dict[str, Any]:
    from uadbench.evaluation.metrics import METRIC_INFO

    rank = {name: i for i, name in enumerate(METRIC_INFO)}
    return dict(sorted(d.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


__all__ = [
    "DatasetEvaluation",
    "DatasetEvaluator",
    "EvalVolume",
    "HEALTHY_FPRS",
    "ThresholdInfo",
    "VolumeResult",
    "compute_thresholds",
    "evaluate_dataset",
    "evaluate_volume",
]
