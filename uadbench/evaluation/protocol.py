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

With few annotated cases (three MSLUB patients: one for the threshold, two to test),
:func:`evaluate_crossfit` offers threshold cross-fitting instead of a labelled validation split:
the annotated cases are dealt into k folds (:func:`~uadbench.evaluation.thresholds.crossfit_folds`)
and each case is tested exactly once, at the threshold chosen on the other folds' pooled maps.
Its protocols are named ``crossfit-bisection@k`` and ``crossfit-exact@k``; their provenance lists
every fold's threshold (``ThresholdInfo.value`` is None: there is one threshold per fold).

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

The data types (:class:`EvalVolume`, :class:`ThresholdInfo`, :class:`VolumeResult`,
:class:`DatasetEvaluation`) live in :mod:`uadbench.evaluation.results` and are re-exported here;
the input checks live in :mod:`uadbench.evaluation.checks`. Each public entry point checks its
splits once and works on the checked copies afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from scipy import ndimage

from uadbench.errors import UadbenchError
from uadbench.evaluation import image_quality
from uadbench.evaluation.checks import (
    check_disjoint,
    check_n_bootstrap,
    check_order,
    check_split,
    check_validation_splits,
    check_volume,
    to_numpy,
)
from uadbench.evaluation.metrics import (
    METRIC_INFO,
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
from uadbench.evaluation.results import DatasetEvaluation, EvalVolume, ThresholdInfo, VolumeResult
from uadbench.evaluation.stats import bootstrap_ratio_ci, bootstrap_resamples
from uadbench.evaluation.thresholds import bisection_threshold, crossfit_folds, exact_threshold, fpr_threshold

#: Version of the protocol's numbers. Bump it with any change that changes a number
#: :func:`evaluate_dataset` produces for some input (here or in post-processing, thresholds,
#: statistics or image quality; the metric functions have ``metrics.METRICS_VERSION``), so that
#: cached evaluations keyed on it are recomputed. Refactors that keep every number do not bump it.
PROTOCOL_VERSION = "1"

HEALTHY_FPRS: dict[str, float] = {
    "healthy-fpr@1%": 0.01,
    "healthy-fpr@5%": 0.05,
    "healthy-fpr@10%": 0.10,
}
DETECTION_PROTOCOL = "val-bisection"
CROSSFIT_SEARCHES = ("bisection", "exact")
_FULL_26 = np.ones((3, 3, 3), dtype=bool)


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
    """Steps 2-3 on a checked volume: on the host, or on the device its map was left on."""
    if isinstance(vol.anomaly_map, np.ndarray):
        return postprocess_map(vol.anomaly_map, vol.brain_mask, settings)
    from uadbench.evaluation.torch_postprocess import postprocess_map_torch  # imports torch

    return postprocess_map_torch(vol.anomaly_map, vol.brain_mask, settings)


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
    lesion, healthy = check_validation_splits(lesion_val, healthy_val)
    return _thresholds(lesion, healthy, source_names, order)


def _thresholds(
    lesion_val: Sequence[EvalVolume],
    healthy_val: Sequence[EvalVolume],
    source_names: Mapping[str, str] | None,
    order: str,
) -> dict[str, ThresholdInfo]:
    """:func:`compute_thresholds` on checked splits."""
    names = dict(source_names or {})
    settings = _SettingsCache(order)
    out: dict[str, ThresholdInfo] = {}
    if lesion_val:
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


def evaluate_volume(
    vol: EvalVolume,
    thresholds: Mapping[str, ThresholdInfo | float],
    *,
    order: str = "code",
    settings: PostprocessSettings | None = None,
) -> VolumeResult:
    """Every per-volume metric of one test volume at the given fair thresholds."""
    vol = check_volume(vol, "test")
    settings = settings or PostprocessSettings.for_spacing(vol.spacing, order=order)
    return _evaluate_checked(vol, thresholds, settings)


def _evaluate_checked(
    vol: EvalVolume,
    thresholds: Mapping[str, ThresholdInfo | float],
    settings: PostprocessSettings,
    detection: str = DETECTION_PROTOCOL,
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
        check_order(order)
        check_n_bootstrap(n_bootstrap)
        lesion, healthy = check_validation_splits(lesion_val, healthy_val)
        self._start(lesion, healthy, source_names, order, n_bootstrap, seed)

    @classmethod
    def _from_checked(
        cls,
        lesion_val: Sequence[EvalVolume],
        healthy_val: Sequence[EvalVolume],
        source_names: Mapping[str, str] | None,
        order: str,
        n_bootstrap: int,
        seed: int,
    ) -> DatasetEvaluator:
        """An evaluator on validation splits and arguments that are already checked."""
        evaluator = cls.__new__(cls)
        evaluator._start(lesion_val, healthy_val, source_names, order, n_bootstrap, seed)
        return evaluator

    def _start(
        self,
        lesion_val: Sequence[EvalVolume],
        healthy_val: Sequence[EvalVolume],
        source_names: Mapping[str, str] | None,
        order: str,
        n_bootstrap: int,
        seed: int,
    ) -> None:
        self.order = order
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.thresholds = _thresholds(lesion_val, healthy_val, source_names, order)
        self._lesion_val_ids = {v.subject_id for v in lesion_val}
        self._healthy_val_ids = {v.subject_id for v in healthy_val}
        self._settings = _SettingsCache(order)
        self._results: list[VolumeResult] = []
        self._test_ids: set[str] = set()
        self._spacings: set[float] = set()

    def update(self, volume: EvalVolume) -> VolumeResult:
        """Evaluate one test volume and keep its metrics; returns them."""
        vol = check_volume(volume, "test")
        check_disjoint([vol.subject_id], self._lesion_val_ids, "lesion_val")
        check_disjoint([vol.subject_id], self._healthy_val_ids, "healthy_val")
        if vol.subject_id in self._test_ids:
            raise UadbenchError(f"test lists subject(s) more than once: {vol.subject_id}")
        return self._add(vol)

    def _add(
        self,
        vol: EvalVolume,
        own: Mapping[str, float] | None = None,
        detection: str = DETECTION_PROTOCOL,
    ) -> VolumeResult:
        """Evaluate and keep a checked test volume (new, disjoint from the validation splits);
        ``own``: thresholds of this volume alone (its cross-fitting fold's)."""
        thresholds: Mapping[str, ThresholdInfo | float] = self.thresholds
        if own:
            thresholds = {**self.thresholds, **own}
        result = _evaluate_checked(vol, thresholds, self._settings(vol.spacing), detection)
        self._results.append(result)
        self._test_ids.add(vol.subject_id)
        self._spacings.add(vol.spacing)
        return result

    def reset(self) -> None:
        self._results = []
        self._test_ids = set()
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
    # 1. check the arguments and each split, once, before any map is processed
    check_order(order)
    check_n_bootstrap(n_bootstrap)
    test = list(test)
    if not test:
        raise UadbenchError("the test split is empty; nothing to evaluate")
    test = check_split(test, "test")
    lesion, healthy = check_validation_splits(lesion_val, healthy_val)
    test_ids = [v.subject_id for v in test]
    check_disjoint(test_ids, [v.subject_id for v in lesion], "lesion_val")
    check_disjoint(test_ids, [v.subject_id for v in healthy], "healthy_val")
    # 2. thresholds from the validation splits
    evaluator = DatasetEvaluator._from_checked(
        lesion, healthy, source_names, order, n_bootstrap, seed
    )
    # 3. per-volume metrics, 4. aggregates and confidence intervals
    for vol in test:
        evaluator._add(vol)
    return evaluator.aggregate()


def crossfit_protocol(search: str, k: int) -> str:
    """The name of a cross-fitting protocol: ``crossfit-bisection@5``, ``crossfit-exact@3``."""
    if search not in CROSSFIT_SEARCHES:
        raise UadbenchError(f"unknown cross-fitting search {search!r}; valid: {', '.join(CROSSFIT_SEARCHES)}")
    return f"crossfit-{search}@{k}"


def crossfit_thresholds(
    cases: Sequence[EvalVolume],
    k: int,
    *,
    source_name: str = "annotated cases",
    order: str = "code",
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, ThresholdInfo]]:
    """Per-case thresholds of k-fold cross-fitting over the annotated ``cases`` (checked).

    Returns (subject id -> {protocol: threshold}, protocol -> provenance). Each case's threshold
    is chosen (bisection and exact, as ``val-bisection`` / ``val-exact``) on the pooled
    post-processed maps of the cases in the other folds; a case never sees its own labels.
    """
    settings = _SettingsCache(order)
    ids = [v.subject_id for v in cases]
    folds = crossfit_folds(ids, k, seed=seed)
    by_id = {v.subject_id: v for v in cases}
    processed = {v.subject_id: _processed(v, settings(v.spacing)) for v in cases}
    names = {search: crossfit_protocol(search, k) for search in CROSSFIT_SEARCHES}
    per_case: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, float]] = {name: {} for name in names.values()}
    for i, fold in enumerate(folds):
        held_out = set(fold)
        others = [sid for sid in ids if sid not in held_out]
        if not any(np.any(by_id[sid].lesion_mask) for sid in others):
            raise UadbenchError(
                f"cross-fitting fold {i} ({', '.join(fold)}): the other folds have no lesion voxels, so no "
                "threshold can be chosen for it; use fewer folds or more annotated cases with lesions"
            )
        counts = pooled_ranked_counts((processed[sid], by_id[sid].lesion_mask) for sid in others)
        chosen = {"bisection": bisection_threshold(counts), "exact": exact_threshold(counts)}
        for search, name in names.items():
            details[name][f"fold{i}_threshold"] = chosen[search].value
            details[name][f"fold{i}_val_pooled_dice"] = chosen[search].score
            details[name][f"fold{i}_n_tested"] = float(len(fold))
        for sid in fold:
            per_case[sid] = {name: chosen[search].value for search, name in names.items()}
    method = {"bisection": "reference 10-step bisection", "exact": "exact pooled-Dice optimum"}
    infos = {
        name: ThresholdInfo(
            name,
            None,
            f"cross-fitting, {k} folds over {len(ids)} {source_name}: each case tested once at the threshold "
            f"chosen ({method[search]}) on the other folds",
            len(ids),
            details[name],
        )
        for search, name in names.items()
    }
    return per_case, infos


def evaluate_crossfit(
    cases: Sequence[EvalVolume],
    *,
    k: int,
    healthy_val: Sequence[EvalVolume] | None = None,
    source_names: Mapping[str, str] | None = None,
    order: str = "code",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> DatasetEvaluation:
    """Evaluate with threshold cross-fitting: every annotated case is a test case, exactly once.

    ``cases``: the annotated volumes (lesion mask given; typically a dataset's validation and test
    splits together) and, optionally, healthy test scans (no lesion mask), which take only the
    ``healthy-fpr@k%`` thresholds (false-positive volume, reconstruction quality). The annotated
    cases are dealt into ``k`` folds (``k`` = their number: leave one out); each is evaluated at
    the ``crossfit-bisection@k`` and ``crossfit-exact@k`` thresholds chosen on the other folds,
    and the lesion detection rates use ``crossfit-bisection@k``. ``healthy_val``, ``source_names``
    (keys ``"cases"``, ``"healthy_val"``), ``order``, ``n_bootstrap`` and ``seed`` (bootstrap and
    fold assignment) are as in :func:`evaluate_dataset`; there is no ``val-*`` protocol.
    """
    check_order(order)
    check_n_bootstrap(n_bootstrap)
    cases = list(cases)
    if not cases:
        raise UadbenchError("cross-fitting has no cases; pass the annotated volumes")
    cases = check_split(cases, "cases")
    _, healthy = check_validation_splits(None, healthy_val)
    check_disjoint([v.subject_id for v in cases], [v.subject_id for v in healthy], "healthy_val")
    annotated = [v for v in cases if v.lesion_mask is not None]
    names = dict(source_names or {})
    per_case, infos = crossfit_thresholds(annotated, k, source_name=names.get("cases", "annotated cases"), order=order, seed=seed)
    evaluator = DatasetEvaluator._from_checked([], healthy, source_names, order, n_bootstrap, seed)
    evaluator.thresholds.update(infos)
    detection = crossfit_protocol("bisection", k)
    for vol in cases:
        evaluator._add(vol, per_case.get(vol.subject_id), detection)
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
    """``d`` in the metric catalogue's order, unknown names last (alphabetically)."""
    rank = {name: i for i, name in enumerate(METRIC_INFO)}
    return dict(sorted(d.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


__all__ = [
    "DatasetEvaluation",
    "DatasetEvaluator",
    "EvalVolume",
    "HEALTHY_FPRS",
    "PROTOCOL_VERSION",
    "ThresholdInfo",
    "VolumeResult",
    "compute_thresholds",
    "crossfit_protocol",
    "crossfit_thresholds",
    "evaluate_crossfit",
    "evaluate_dataset",
    "evaluate_volume",
]
