"""The metric contract, checked for every registered metric by the check a plugin author runs
(:func:`uadbench.testing.check_metric`): each catalogue entry, and the voxel-ranking metrics'
values against their reference definitions (sklearn, and a brute-force best Dice)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from uadbench.evaluation.metrics import MetricInfo, best_dice, compute_auprc, compute_auroc, compute_dice, ranked_counts
from uadbench.registry import METRICS
from uadbench.testing import check_metric


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name):
    check_metric(name)


def _brute_force_best_dice(scores: np.ndarray, labels: np.ndarray) -> float:
    return max([0.0] + [compute_dice(scores >= t, labels) for t in np.unique(scores)])


@pytest.mark.parametrize("name, compute, reference", [
    ("auprc", compute_auprc, lambda s, y: average_precision_score(y.ravel(), s.ravel())),
    ("auroc", compute_auroc, lambda s, y: roc_auc_score(y.ravel(), s.ravel())),
    ("dice@oracle", lambda s, y: best_dice(ranked_counts(s, y))[0], _brute_force_best_dice),
])
def test_ranking_metrics_equal_their_definitions(name, compute, reference):
    check_metric(name, compute=compute, reference=reference)


# -- the check catches what it says it catches -------------------------------------------------------------------
AUPRC = MetricInfo("my-auprc", "average precision of the map", percent=True)


def test_a_good_metric_passes():
    check_metric(AUPRC, compute=compute_auprc, reference=lambda s, y: average_precision_score(y.ravel(), s.ravel()))


@pytest.mark.parametrize("info, compute, message", [
    (dataclasses.replace(AUPRC, direction="lower"), compute_auprc, "declares lower is better, but a perfect map scores 1.0"),
    (AUPRC, lambda s, y: 100 * compute_auprc(s, y), "lies outside \\[0.0, 1.0\\]"),
    (AUPRC, lambda s, y: float("nan") if np.array_equal(s, y) else compute_auprc(s, y), "expected a finite number"),
    (AUPRC, lambda s, y: compute_auroc(s, y), "but its definition gives"),
    (dataclasses.replace(AUPRC, description=""), compute_auprc, "the description must be one non-empty line"),
    (dataclasses.replace(AUPRC, percent=1), compute_auprc, "percent must be True or False"),
])
def test_check_metric_catches_a_broken_rule(info, compute, message):
    reference = None if "outside" in message else lambda s, y: average_precision_score(y.ravel(), s.ravel())
    with pytest.raises(AssertionError, match=message):
        check_metric(info, compute=compute, reference=reference)


def test_a_metric_registered_without_its_catalogue_entry_is_refused():
    def bare(scores, labels):
        return compute_auprc(scores, labels)

    METRICS.register("test-bare-metric", bare)
    try:
        with pytest.raises(AssertionError, match="registered as function; register a uadbench.evaluation.metrics.MetricInfo"):
            check_metric("test-bare-metric")
    finally:
        METRICS.unregister("test-bare-metric")


def test_a_volume_metric_is_checked_through_its_own_compute():
    from uadbench.evaluation.catalogue import VolumeMetric

    def hot_fraction(processed, lesion, brain, spacing):
        return float(np.mean(processed[brain] > 0.5))

    def writes(processed, lesion, brain, spacing):
        processed[0, 0, 0] = 1.0
        return 0.0

    def drifts(processed, lesion, brain, spacing, _calls=[0]):  # noqa: B006  (a deliberately stateful metric)
        _calls[0] += 1
        return float(_calls[0])

    check_metric(VolumeMetric("hot", "fraction of brain voxels above 0.5", direction="lower", compute=hot_fraction))
    with pytest.raises(AssertionError, match="read-only"):
        check_metric(VolumeMetric("writes", "writes into its input", compute=writes))
    with pytest.raises(AssertionError, match="must be deterministic"):
        check_metric(VolumeMetric("drifts", "changes between calls", compute=drifts))
