"""Scan- and slice-level detection metrics against scikit-learn, through the whole protocol."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from uadbench.evaluation.catalogue import metric_info
from uadbench.evaluation.detection import DETECTION_METRICS, SCORE_QUANTILE, ranking_metrics, volume_scores
from uadbench.evaluation.postprocess import PostprocessSettings, postprocess_map
from uadbench.evaluation.protocol import EvalVolume, evaluate_crossfit, evaluate_dataset
from uadbench.evaluation.stats import bootstrap_resamples

SHAPE = (28, 28, 14)
SPACING = 2.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_equal_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    n, subjects = 300, 40
    scores = np.round(rng.random(n), 1 + seed)  # many ties
    owner = rng.integers(0, subjects, n)
    labels = rng.random(n) < 0.2 + 0.5 * scores
    plain = ranking_metrics(scores, labels)
    assert plain["auroc"][0] == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert plain["auprc"][0] == pytest.approx(average_precision_score(labels, scores), rel=1e-12)
    multiplicity = bootstrap_resamples(subjects, n_bootstrap=7, seed=seed)
    weighted = ranking_metrics(scores, labels, owner, multiplicity)
    for b, row in enumerate(multiplicity):
        w = row[owner]
        assert weighted["auroc"][b] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w), rel=1e-12)
        assert weighted["auprc"][b] == pytest.approx(average_precision_score(labels, scores, sample_weight=w), rel=1e-12)


def test_ranking_metrics_are_undefined_with_one_class():
    only_negatives = ranking_metrics(np.array([0.1, 0.5]), np.array([False, False]))
    assert np.isnan(only_negatives["auroc"][0]) and np.isnan(only_negatives["auprc"][0])
    only_positives = ranking_metrics(np.array([0.1, 0.5]), np.array([True, True]))
    assert np.isnan(only_positives["auroc"][0]) and only_positives["auprc"][0] == 1.0
    empty = ranking_metrics(np.zeros(0), np.zeros(0, bool))
    assert np.isnan(empty["auroc"][0])


def _volumes(prefix: str, n: int, seed: int, lesion: bool) -> list[EvalVolume]:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, k) for k in SHAPE], indexing="ij")
    brain = sum((g / 0.85) ** 2 for g in grid) < 1.0
    idx = np.meshgrid(*[np.arange(k) for k in SHAPE], indexing="ij")
    out = []
    for i in range(n):
        les = np.zeros(SHAPE, dtype=bool)
        if lesion:
            centre = [int(rng.integers(k // 3, 2 * k // 3)) for k in SHAPE]
            les = (sum((g - c) ** 2 for g, c in zip(idx, centre)) <= int(rng.integers(2, 4)) ** 2) & brain
        amap = (rng.random(SHAPE) * 0.5 + les * rng.uniform(0.0, 0.6)).astype(np.float32) * brain
        out.append(EvalVolume(f"{prefix}{i}", amap, brain, les if lesion else None, SPACING))
    return out


@pytest.fixture(scope="module")
def splits():
    return {"test": _volumes("t", 6, 1, True) + _volumes("h", 5, 2, False), "lesion_val": _volumes("lv", 3, 3, True),
            "healthy_val": _volumes("hv", 2, 4, False)}


def _reference(test: list[EvalVolume]):
    """Scan and slice scores, labels and owners computed here, from the protocol's post-processing."""
    settings = PostprocessSettings.for_spacing(SPACING)
    scan, scan_y, sl, sl_y, owner = [], [], [], [], []
    for i, v in enumerate(test):
        processed = postprocess_map(v.anomaly_map, v.brain_mask, settings)
        lesion = v.lesion_mask if v.lesion_mask is not None else np.zeros(SHAPE, bool)
        scan.append(np.quantile(processed[v.brain_mask], 0.99))
        scan_y.append(bool(lesion.any()))
        for z in range(SHAPE[2]):
            if v.brain_mask[:, :, z].any():
                sl.append(np.quantile(processed[:, :, z][v.brain_mask[:, :, z]], 0.99))
                sl_y.append(bool(lesion[:, :, z].any()))
                owner.append(i)
    return {"scan": (np.array(scan), np.array(scan_y), np.arange(len(test))),
            "slice": (np.array(sl), np.array(sl_y), np.array(owner))}


def test_evaluate_dataset_reports_detection_metrics_equal_to_sklearn(splits):
    n_boot = 40
    result = evaluate_dataset(splits["test"], lesion_val=splits["lesion_val"], healthy_val=splits["healthy_val"],
                              n_bootstrap=n_boot, seed=5)
    ref = _reference(splits["test"])
    resamples = bootstrap_resamples(len(splits["test"]), n_bootstrap=n_boot, seed=5)
    assert SCORE_QUANTILE == 0.99
    for name, (level, metric) in DETECTION_METRICS.items():
        scores, labels, owner = ref[level]
        assert 0 < labels.sum() < labels.size  # both classes at both levels
        sk = roc_auc_score if metric == "auroc" else average_precision_score
        assert result.aggregates[name] == pytest.approx(sk(labels, scores), rel=1e-12), name
        assert result.counts[name] == len(splits["test"])
        # the CI: the same resamples of subjects as every other metric; a scan brings its slices
        drawn = [labels[row[owner] > 0] for row in resamples]  # AP needs a positive, AUROC a negative too
        boot = [sk(labels, scores, sample_weight=row[owner]) for row, y in zip(resamples, drawn)
                if y.any() and (metric == "auprc" or not y.all())]
        assert result.confidence_intervals[name] == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])), rel=1e-12)
        info = metric_info(name)
        assert info.direction == "higher" and info.percent and not info.upper_bound
        assert name not in {k for values in result.per_volume.values() for k in values}  # dataset-level only
    # the map is informative: lesion scans score higher than healthy ones
    assert result.aggregates["auroc_scan"] > 0.8


def test_detection_scores_of_one_volume_follow_its_masks():
    brain = np.zeros((6, 6, 5), bool)
    brain[1:5, 1:5, 1:4] = True  # slices 1, 2, 3 hold brain
    lesion = np.zeros_like(brain)
    lesion[2, 2, 3] = True
    processed = np.arange(brain.size, dtype=np.float32).reshape(brain.shape) * brain
    scores = volume_scores(processed, brain, lesion)
    assert scores.positive and scores.slice_positive.tolist() == [False, False, True]
    assert scores.slices.tolist() == pytest.approx([np.quantile(processed[:, :, z][brain[:, :, z]], 0.99) for z in (1, 2, 3)])
    assert scores.scan == pytest.approx(np.quantile(processed[brain], 0.99))
    healthy = volume_scores(processed, brain, None)
    assert not healthy.positive and not healthy.slice_positive.any()
    assert not volume_scores(processed, brain, np.zeros_like(brain)).positive  # an empty mask is a negative
    assert volume_scores(processed, np.zeros_like(brain), None).scan == 0.0


def test_without_healthy_scans_the_scan_auroc_is_undefined_and_absent(splits):
    lesioned = splits["test"][:6]
    result = evaluate_dataset(lesioned, lesion_val=splits["lesion_val"], n_bootstrap=10)
    assert "auroc_scan" not in result.aggregates and result.aggregates["auprc_scan"] == 1.0
    assert {"auroc_slice", "auprc_slice"} <= set(result.aggregates)  # lesion-free slices are negatives


def test_cross_fitting_reports_the_same_detection_metrics(splits):
    cases = splits["test"] + splits["lesion_val"]
    result = evaluate_crossfit(cases, k=3, n_bootstrap=0)
    ref = _reference(cases)
    scores, labels, _ = ref["scan"]
    assert result.aggregates["auroc_scan"] == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert not result.confidence_intervals
