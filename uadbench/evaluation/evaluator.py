"""The cumulative evaluation of one dataset: thresholds once, test volumes one at a time, aggregates.

:class:`DatasetEvaluator` is the MONAI-style form of the protocol (``update`` per test volume,
``aggregate``, ``reset``); :func:`uadbench.evaluation.protocol.evaluate_dataset` and
:func:`uadbench.evaluation.crossfit.evaluate_crossfit` are built on it.

Aggregates are means over the volumes that define the metric, except ``dice_pooled@*``
(2 Σ|P∩G| / Σ(|P| + |G|) over all annotated volumes), ``l1_ratio`` (Σ l1_lesion / Σ l1_healthy
over volumes with lesions, i.e. the ratio of the means) and ``detection_rate_*`` (detected lesions
/ lesions, pooled). The scan- and slice-level detection metrics (:mod:`uadbench.evaluation.detection`)
rank the scores of all test scans together. Each aggregate has a per-subject percentile bootstrap
95 % confidence interval, every metric on the same resamples of the test subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from uadbench.errors import UadbenchError
from uadbench.evaluation.catalogue import METRIC_INFO, ORACLE, volume_metrics
from uadbench.evaluation.checks import (
    check_disjoint,
    check_n_bootstrap,
    check_order,
    check_validation_splits,
    check_volume,
)
from uadbench.evaluation.detection import DetectionScores, detection_metrics, volume_scores
from uadbench.evaluation.results import DatasetEvaluation, EvalVolume, ThresholdInfo, VolumeResult
from uadbench.evaluation.stats import bootstrap_ratio_ci, bootstrap_resamples
from uadbench.evaluation.threshold_protocols import thresholds_checked
from uadbench.evaluation.volume import DETECTION_PROTOCOL, SettingsCache, evaluate_checked, processed_map


class DatasetEvaluator:
    """Cumulative form of :func:`~uadbench.evaluation.protocol.evaluate_dataset`: ``update`` per
    test volume, then ``aggregate``.

    Thresholds are fixed at construction (from the validation splits, as in ``evaluate_dataset``);
    test volumes can then be streamed one at a time, so a runner never holds a whole test split's
    maps in memory. ``reset`` forgets the test volumes, keeping the thresholds.
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
    def from_checked(
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
        self.thresholds = thresholds_checked(lesion_val, healthy_val, source_names, order)
        self._lesion_val_ids = {v.subject_id for v in lesion_val}
        self._healthy_val_ids = {v.subject_id for v in healthy_val}
        self._settings = SettingsCache(order)
        self._registered = volume_metrics()  # the metrics of other packages, looked up once
        self._results: list[VolumeResult] = []
        self._scores: list[DetectionScores] = []
        self._test_ids: set[str] = set()
        self._spacings: set[float] = set()

    def update(self, volume: EvalVolume) -> VolumeResult:
        """Evaluate one test volume and keep its metrics; returns them."""
        vol = check_volume(volume, "test")
        check_disjoint([vol.subject_id], self._lesion_val_ids, "lesion_val")
        check_disjoint([vol.subject_id], self._healthy_val_ids, "healthy_val")
        if vol.subject_id in self._test_ids:
            raise UadbenchError(f"test lists subject(s) more than once: {vol.subject_id}")
        return self.add_checked(vol)

    def add_checked(
        self,
        vol: EvalVolume,
        own: Mapping[str, float] | None = None,
        detection: str = DETECTION_PROTOCOL,
    ) -> VolumeResult:
        """Evaluate and keep a checked test volume (new, disjoint from the validation splits);
        ``own``: thresholds of this volume alone (its cross-fitting fold's); ``detection``: the
        protocol of the lesion-wise detection rates."""
        thresholds: Mapping[str, ThresholdInfo | float] = self.thresholds
        if own:
            thresholds = {**self.thresholds, **own}
        settings = self._settings(vol.spacing)
        processed = processed_map(vol, settings)
        result = evaluate_checked(vol, thresholds, settings, detection, processed, self._registered)
        self._results.append(result)
        self._scores.append(volume_scores(processed, vol.brain_mask, vol.lesion_mask))
        self._test_ids.add(vol.subject_id)
        self._spacings.add(vol.spacing)
        return result

    def reset(self) -> None:
        self._results = []
        self._scores = []
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
        resamples = None
        if self.n_bootstrap:
            resamples = bootstrap_resamples(
                len(results), n_bootstrap=self.n_bootstrap, seed=self.seed
            )
            for name in aggregates:
                num, den = num_den[name]
                cis[name] = bootstrap_ratio_ci(num, den, resamples=resamples)
        # dataset-level: the detection metrics rank every test scan's scores together
        detected, detected_counts, detected_cis = detection_metrics(self._scores, resamples)
        aggregates.update(detected)
        counts.update(detected_counts)
        cis.update(detected_cis)
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


__all__ = ["DatasetEvaluator"]
