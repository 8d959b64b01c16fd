"""Tests of the evaluation protocol against scipy / scikit-learn / scikit-image references."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats
from skimage.measure import label, regionprops
from sklearn.metrics import average_precision_score, roc_auc_score

import oracles
import uadbench
from uadbench.errors import UadbenchError
from uadbench.evaluation import checks
from uadbench.evaluation.image_quality import reconstruction_quality
from uadbench.evaluation.metrics import (
    METRIC_INFO,
    MetricInfo,
    SortedScores,
    average_precision,
    best_dice,
    compute_auprc,
    compute_auroc,
    compute_dice,
    metric_info,
    pooled_ranked_counts,
    ranked_counts,
    roc_auc,
)
from uadbench.evaluation.postprocess import (
    PostprocessSettings,
    binarize,
    erode_brain_mask,
    median_filter_3d,
    postprocess_map,
    remove_small_components,
    threshold_float32,
)
from uadbench.evaluation.protocol import (
    DatasetEvaluation,
    DatasetEvaluator,
    EvalVolume,
    compute_thresholds,
    evaluate_crossfit,
    evaluate_dataset,
)
from uadbench.evaluation.stats import (
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    compare_per_subject,
    paired_permutation_test,
)
from uadbench.evaluation.thresholds import (
    bisection_threshold,
    crossfit_folds,
    exact_threshold,
    fpr_threshold,
    pooled_dice_at,
)

# -- synthetic volumes ---------------------------------------------------------------------------


def _brain(shape):
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return sum((g / 0.8) ** 2 for g in grid) < 1.0


def make_volume(
    sid,
    rng,
    shape=(32, 32, 16),
    lesion=True,
    spacing=2.0,
    noise=0.1,
    with_recon=False,
):
    brain = _brain(shape)
    les = np.zeros(shape, dtype=bool)
    if lesion:
        for _ in range(rng.integers(1, 3)):
            c = [rng.integers(n // 3, 2 * n // 3) for n in shape]
            r = rng.integers(2, 4)
            grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
            les |= sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= r**2
        les &= brain
    amap = (rng.random(shape) * noise + les * rng.uniform(0.05, 0.4)).astype(np.float32)
    amap *= brain
    image = recon = None
    if with_recon:
        image = (rng.random(shape) * brain).astype(np.float32)
        recon = np.clip(image + amap * rng.choice([-1, 1], size=shape), 0, 1).astype(np.float32)
        amap = np.abs(image - recon)
    return EvalVolume(
        subject_id=sid,
        anomaly_map=amap,
        brain_mask=brain,
        lesion_mask=les if lesion else None,
        spacing=spacing,
        image=image,
        reconstruction=recon,
    )


def make_split(prefix, n, seed, **kw):
    rng = np.random.default_rng(seed)
    return [make_volume(f"{prefix}{i:02d}", rng, **kw) for i in range(n)]


def _sk_ap(scores, labels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return average_precision_score(np.ravel(labels).astype(int), np.ravel(scores))


# -- AUPRC / AUROC -------------------------------------------------------------------------------

ADVERSARIAL = {
    "random": lambda r: (r.random(500), r.random(500) < 0.2),
    "heavy_ties": lambda r: (r.integers(0, 4, 400).astype(np.float32), r.random(400) < 0.3),
    "mostly_zero": lambda r: (r.random(600) * (r.random(600) < 0.2), r.random(600) < 0.1),
    "negative_scores": lambda r: (r.normal(size=300) * (r.random(300) < 0.5), r.random(300) < 0.4),
    "constant": lambda r: (np.full(50, 0.3), r.random(50) < 0.5),
    "constant_zero": lambda r: (np.zeros(50), np.arange(50) < 7),
    "single_positive": lambda r: (r.random(100), np.arange(100) == 17),
    "single_negative": lambda r: (r.random(100), np.arange(100) != 3),
    "tiny": lambda r: (np.array([0.0, 1.0]), np.array([False, True])),
    "perfect": lambda r: (np.arange(20.0), np.arange(20) >= 15),
    "inverted": lambda r: (np.arange(20.0), np.arange(20) < 5),
    "float32_close": lambda r: (
        (0.1 + r.integers(0, 3, 200) * np.finfo(np.float32).eps).astype(np.float32),
        r.random(200) < 0.5,
    ),
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_auprc_auroc_match_sklearn(case):
    rng = np.random.default_rng(hash(case) % 2**32)
    scores, labels = ADVERSARIAL[case](rng)
    assert compute_auprc(scores, labels) == pytest.approx(_sk_ap(scores, labels), abs=1e-9)
    assert compute_auroc(scores, labels) == pytest.approx(
        roc_auc_score(labels.astype(int), scores), abs=1e-9
    )


def test_auprc_auroc_on_volume_match_sklearn_all_and_brain():
    rng = np.random.default_rng(1)
    vol = make_volume("s", rng, shape=(40, 36, 20))
    processed = postprocess_map(vol.anomaly_map, vol.brain_mask, PostprocessSettings())
    assert (processed == 0).mean() > 0.5  # the zero block is real
    ss = SortedScores(processed, vol.lesion_mask)
    y = vol.lesion_mask.ravel().astype(int)
    assert average_precision(ss.counts()) == pytest.approx(_sk_ap(processed, y), abs=1e-9)
    assert roc_auc(ss.counts()) == pytest.approx(roc_auc_score(y, processed.ravel()), abs=1e-9)
    b = vol.brain_mask
    yb = vol.lesion_mask[b].astype(int)
    assert average_precision(ss.counts(b)) == pytest.approx(_sk_ap(processed[b], yb), abs=1e-9)
    assert roc_auc(ss.counts(b)) == pytest.approx(roc_auc_score(yb, processed[b]), abs=1e-9)


@pytest.mark.parametrize("n_pos", [0, "all"])
def test_undefined_ranking_metrics_are_nan(n_pos):
    scores = np.random.default_rng(0).random(30)
    labels = np.zeros(30, bool) if n_pos == 0 else np.ones(30, bool)
    assert math.isnan(compute_auroc(scores, labels))
    if n_pos == 0:
        assert math.isnan(compute_auprc(scores, labels))
    else:
        assert compute_auprc(scores, labels) == pytest.approx(_sk_ap(scores, labels)) == 1.0


def test_pooled_counts_equal_counts_of_concatenation():
    rng = np.random.default_rng(2)
    parts = [(rng.random(200) * (rng.random(200) < 0.4), rng.random(200) < 0.1) for _ in range(4)]
    pooled = pooled_ranked_counts(parts)
    direct = ranked_counts(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    np.testing.assert_array_equal(pooled.values, direct.values)
    np.testing.assert_array_equal(pooled.tp, direct.tp)
    np.testing.assert_array_equal(pooled.fp, direct.fp)


def test_best_dice_is_max_over_all_thresholds():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 30, 300).astype(np.float64)
    labels = rng.random(300) < 0.3
    brute = max(compute_dice(scores > t, labels) for t in np.concatenate([[-1.0], np.unique(scores)]))
    assert best_dice(ranked_counts(scores, labels))[0] == pytest.approx(brute, abs=1e-12)


# -- Dice ------------------------------------------------------------------------------------------


def test_dice_values():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert compute_dice(a, b) == pytest.approx(0.5)
    assert compute_dice(a, a) == 1.0
    assert compute_dice(a, ~a) == 0.0
    assert math.isnan(compute_dice(np.zeros(4, bool), np.zeros(4, bool)))
    with pytest.raises(UadbenchError):
        compute_dice(a, b[:3])


# -- post-processing -------------------------------------------------------------------------------


def test_settings_scale_with_voxel_size():
    s2 = PostprocessSettings.for_spacing(2.0)
    assert (s2.erosion_iterations, s2.median_size, s2.max_dropped_voxels) == (3, 5, 7)
    s1 = PostprocessSettings.for_spacing(1.0)
    assert (s1.erosion_iterations, s1.median_size, s1.max_dropped_voxels) == (6, 11, 56)
    s4 = PostprocessSettings.for_spacing(4.0)
    assert (s4.erosion_iterations, s4.median_size, s4.max_dropped_voxels) == (2, 3, 0)
    with pytest.raises(UadbenchError, match="spacing"):
        PostprocessSettings.for_spacing(0)
    with pytest.raises(UadbenchError, match="order"):
        PostprocessSettings.for_spacing(2.0, order="sideways")


def test_erosion_matches_slicewise_scipy():
    rng = np.random.default_rng(4)
    mask = rng.random((20, 18, 6)) < 0.8
    eroded = erode_brain_mask(mask, 2)
    cross = ndimage.generate_binary_structure(2, 1)
    for k in range(mask.shape[2]):
        np.testing.assert_array_equal(
            eroded[:, :, k], ndimage.binary_erosion(mask[:, :, k], cross, iterations=2)
        )


@pytest.mark.parametrize(
    "shape,size,density,signed",
    [
        ((96, 96, 50), 5, "brain", False),
        ((30, 25, 12), 5, "sparse", True),
        ((30, 25, 12), 3, "dense", False),
        ((9, 9, 9), 11, "brain", False),
        ((6, 5, 4), 5, "dense", True),
        ((3, 3, 3), 5, "dense", False),
        ((12, 12, 12), 5, "ties", False),
    ],
)
def test_median_filter_identical_to_scipy(shape, size, density, signed):
    rng = np.random.default_rng(5)
    x = rng.random(shape).astype(np.float32)
    if density == "brain":
        x *= erode_brain_mask(_brain(shape), 1)
    elif density == "sparse":
        x *= rng.random(shape) < 0.55
    elif density == "ties":
        x = (rng.integers(0, 3, shape) * (rng.random(shape) < 0.6)).astype(np.float32)
    if signed:
        x *= rng.choice(np.array([-1, 1], np.float32), size=shape)
    ours = median_filter_3d(x, size)
    ref = ndimage.median_filter(x, size=size)
    assert ours.dtype == ref.dtype
    np.testing.assert_array_equal(ours, ref)
    if not signed:  # no -0.0 in the input: identical bit patterns
        np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("order", ["code", "paper"])
def test_postprocess_matches_straightforward(order):
    rng = np.random.default_rng(6)
    vol = make_volume("s", rng, shape=(40, 36, 20), noise=0.3)
    settings = PostprocessSettings.for_spacing(2.0, order=order)
    ours = postprocess_map(vol.anomaly_map, vol.brain_mask, settings)
    ref = oracles.postprocess(vol.anomaly_map, vol.brain_mask, settings)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("limit", [7, 26, 30])
def test_component_filter_matches_skimage_filled_area(limit):
    rng = np.random.default_rng(7)
    binary = rng.random((30, 30, 20)) < 0.12
    # a hollow 3x3x3 cube: 26 voxels, filled size 27; a pure size rule would drop it at limit 26
    binary[0:6, 0:6, 0:6] = False
    binary[1:4, 1:4, 1:4] = True
    binary[2, 2, 2] = False
    ours = remove_small_components(binary, limit)
    np.testing.assert_array_equal(ours, oracles.filter_components(binary, limit))
    assert ours[1:4, 1:4, 1:4].sum() == (26 if limit < 27 else 0)
    labels = label(ours, connectivity=3)
    assert all(p.area_filled > limit for p in regionprops(labels))


def test_threshold_float32_is_exact_float64_comparison():
    rng = np.random.default_rng(8)
    x = rng.random(2000).astype(np.float32)
    for t in list(rng.random(50)) + [float(x[3]), float(x[3]) + 1e-12, float(x[3]) - 1e-12]:
        np.testing.assert_array_equal(x > threshold_float32(t), x.astype(np.float64) > t)


# -- thresholds ------------------------------------------------------------------------------------


def _pooled_processed(volumes):
    settings = PostprocessSettings()
    maps = [postprocess_map(v.anomaly_map, v.brain_mask, settings) for v in volumes]
    return maps, [v.lesion_mask for v in volumes]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bisection_matches_reference_algorithm(seed):
    maps, labels = _pooled_processed(make_split("v", 4, seed, noise=0.2 + 0.2 * seed))
    counts = pooled_ranked_counts(zip(maps, labels))
    ours = bisection_threshold(counts)
    ref_dice, ref_point = oracles.greedy_bisection(
        np.concatenate([m.ravel() for m in maps]), np.concatenate([m.ravel() for m in labels])
    )
    assert ours.value == ref_point
    assert ours.score == ref_dice


def test_exact_threshold_beats_bisection_and_is_optimal():
    maps, labels = _pooled_processed(make_split("v", 4, 11, noise=0.3))
    counts = pooled_ranked_counts(zip(maps, labels))
    bis, ex = bisection_threshold(counts), exact_threshold(counts)
    assert ex.score >= bis.score
    x = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    y = np.concatenate([m.ravel() for m in labels])
    assert oracles.dice(x > ex.value, y) == pytest.approx(ex.score, abs=1e-12)
    assert pooled_dice_at(counts, ex.value) == pytest.approx(ex.score, abs=1e-12)
    candidates = np.unique(x)[::7]
    assert max(oracles.dice(x > t, y) for t in candidates) <= ex.score + 1e-12


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.10])
def test_fpr_threshold_gives_requested_rate(rate):
    rng = np.random.default_rng(9)
    scores = rng.random(20000).astype(np.float32)
    res = fpr_threshold(ranked_counts(scores, np.zeros(scores.size, bool)), rate)
    achieved = np.mean(scores > threshold_float32(res.value))
    assert achieved <= rate
    assert achieved == pytest.approx(rate, abs=1.0 / scores.size)
    assert achieved == pytest.approx(res.score)


def test_fpr_threshold_with_many_zero_scores_never_exceeds_rate():
    scores = np.zeros(1000, np.float32)
    scores[:30] = np.linspace(0.1, 1.0, 30)
    res = fpr_threshold(ranked_counts(scores, np.zeros(1000, bool)), 0.10)
    assert res.value == 0.0
    assert np.mean(scores > res.value) == pytest.approx(0.03)


# -- the protocol ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    return {
        "test": make_split("t", 5, 20, noise=0.15),
        "lesion_val": make_split("lv", 4, 21, noise=0.15),
        "healthy_val": make_split("hv", 3, 22, lesion=False, noise=0.15),
        "healthy_test": make_split("ht", 3, 23, lesion=False, noise=0.15, with_recon=True),
    }


@pytest.fixture(scope="module")
def evaluation(splits):
    return evaluate_dataset(
        splits["test"],
        lesion_val=splits["lesion_val"],
        healthy_val=splits["healthy_val"],
        source_names={"lesion_val": "synthetic/val", "healthy_val": "synthetic-healthy/val"},
        n_bootstrap=200,
    )


def test_evaluate_dataset_reports_every_metric_with_provenance(evaluation):
    agg = evaluation.aggregates
    for name in ["auprc", "auroc", "auprc_brain", "auroc_brain", "dice@oracle", "l1_lesion",
                 "l1_healthy", "l1_ratio"]:
        assert name in agg, name
    for p in ["val-bisection", "val-exact", "healthy-fpr@1%", "healthy-fpr@5%", "healthy-fpr@10%"]:
        assert f"dice@{p}" in agg and f"dice_pooled@{p}" in agg
        assert evaluation.thresholds[p].value is not None
    assert evaluation.thresholds["oracle"].value is None
    assert "upper bound" in evaluation.thresholds["oracle"].source
    assert evaluation.thresholds["val-bisection"].source == "synthetic/val (4 volumes)"
    assert evaluation.thresholds["healthy-fpr@5%"].source.startswith("synthetic-healthy/val (3")
    for name in agg:
        assert name in METRIC_INFO, f"{name} is not registered"
    json.dumps(evaluation.to_dict())


def test_evaluate_dataset_values_match_straightforward(splits, evaluation):
    thresholds = {
        k: v.value for k, v in evaluation.thresholds.items() if v.value is not None
    }
    for vol in splits["test"]:
        ref = oracles.evaluate_volume(
            vol.anomaly_map, vol.brain_mask, vol.lesion_mask, thresholds, PostprocessSettings()
        )
        ours = evaluation.per_volume[vol.subject_id]
        for name, value in ref.items():
            if math.isnan(value):
                assert name not in ours
            else:
                assert ours[name] == pytest.approx(value, abs=1e-9), name
    per = [evaluation.per_volume[v.subject_id]["auprc"] for v in splits["test"]]
    assert evaluation.aggregates["auprc"] == pytest.approx(np.mean(per))


def test_oracle_is_upper_bound_of_fair_dice_without_cc(splits, evaluation):
    for vol in splits["test"]:
        pv = evaluation.per_volume[vol.subject_id]
        processed = postprocess_map(vol.anomaly_map, vol.brain_mask, PostprocessSettings())
        for p in ["val-bisection", "val-exact"]:
            t = evaluation.thresholds[p].value
            assert pv["dice@oracle"] >= compute_dice(processed > threshold_float32(t), vol.lesion_mask) - 1e-12


def test_pooled_dice_aggregate(splits, evaluation):
    t = evaluation.thresholds["val-exact"].value
    inter = total = 0
    for vol in splits["test"]:
        processed = postprocess_map(vol.anomaly_map, vol.brain_mask, PostprocessSettings())
        pred = binarize(processed, t, PostprocessSettings())
        inter += np.count_nonzero(pred & vol.lesion_mask)
        total += pred.sum() + vol.lesion_mask.sum()
    assert evaluation.aggregates["dice_pooled@val-exact"] == pytest.approx(2 * inter / total)


def test_bootstrap_ci_contains_aggregate(evaluation):
    assert set(evaluation.confidence_intervals) == set(evaluation.aggregates)
    for name, (lo, hi) in evaluation.confidence_intervals.items():
        assert lo <= evaluation.aggregates[name] + 1e-12, name
        assert hi >= evaluation.aggregates[name] - 1e-12, name


def test_healthy_test_scans_get_fp_volume_and_reconstruction(splits):
    ev = evaluate_dataset(
        splits["healthy_test"], healthy_val=splits["healthy_val"], n_bootstrap=50
    )
    assert "auprc" not in ev.aggregates and "val-bisection" not in ev.thresholds
    for p in ["healthy-fpr@1%", "healthy-fpr@5%", "healthy-fpr@10%"]:
        assert ev.aggregates[f"fp_volume_ml@{p}"] >= 0
    assert ev.aggregates["fp_volume_ml@healthy-fpr@1%"] <= ev.aggregates["fp_volume_ml@healthy-fpr@10%"]
    quality = reconstruction_quality(splits["healthy_test"])
    for sid, values in quality.items():
        for k, v in values.items():
            assert ev.per_volume[sid][k] == pytest.approx(v)
    vol = splits["healthy_test"][0]
    assert quality[vol.subject_id]["l1_recon"] == pytest.approx(
        np.abs(vol.image.astype(np.float64) - vol.reconstruction).mean()
    )


def test_missing_validation_splits_drop_their_protocols(splits):
    ev = evaluate_dataset(splits["test"], n_bootstrap=0)
    assert set(ev.thresholds) == {"oracle"}
    assert not any(k.startswith(("dice@val", "dice@healthy")) for k in ev.aggregates)
    assert "auprc" in ev.aggregates and ev.confidence_intervals == {}


def test_overlapping_validation_is_refused(splits):
    leak = splits["lesion_val"] + [splits["test"][2]]
    with pytest.raises(UadbenchError, match="t02"):
        evaluate_dataset(splits["test"], lesion_val=leak)
    with pytest.raises(UadbenchError, match="t01"):
        evaluate_dataset(splits["test"], healthy_val=splits["healthy_val"] + [splits["test"][1]])


def test_lesion_free_validation_is_an_error(splits):
    empty = [make_volume("e0", np.random.default_rng(0), lesion=True)]
    empty[0].lesion_mask[:] = False
    with pytest.raises(UadbenchError, match="no lesion voxels"):
        evaluate_dataset(splits["test"], lesion_val=empty)
    unlabeled = make_split("u", 1, 0, lesion=False)
    with pytest.raises(UadbenchError, match="no lesion mask"):
        evaluate_dataset(splits["test"], lesion_val=unlabeled)


def test_nan_map_is_an_error_naming_the_volume(splits):
    bad = make_split("nanvol", 1, 0)
    bad[0].anomaly_map[3, 4, 5] = np.nan
    with pytest.raises(UadbenchError, match="nanvol00.*NaN"):
        evaluate_dataset(bad)
    with pytest.raises(UadbenchError, match="nanvol00"):
        evaluate_dataset(splits["test"], lesion_val=bad)


def test_bad_order_and_shapes_are_errors(splits):
    with pytest.raises(UadbenchError, match="order"):
        evaluate_dataset(splits["test"], order="median-first")
    vol = make_split("s", 1, 0)[0]
    vol.brain_mask = vol.brain_mask[:-1]
    with pytest.raises(UadbenchError, match="shape"):
        evaluate_dataset([vol])


def test_paper_order_differs_but_evaluates(splits):
    ev = evaluate_dataset(splits["test"], lesion_val=splits["lesion_val"], order="paper", n_bootstrap=0)
    assert ev.settings["order"] == "paper"
    assert 0.0 <= ev.aggregates["auprc"] <= 1.0


def test_other_voxel_size_scales_postprocessing():
    vols = make_split("s", 2, 5, shape=(40, 40, 20), spacing=1.0)
    ev = evaluate_dataset(vols, n_bootstrap=0)
    assert ev.settings["postprocess"]["1mm"]["median_size"] == 11


# -- statistics ------------------------------------------------------------------------------------


def test_permutation_test_exact_matches_scipy():
    rng = np.random.default_rng(12)
    a = rng.normal(size=10)
    b = a + rng.normal(0.4, 1.0, size=10)
    ours = paired_permutation_test(a, b)
    ref = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf,
    ).pvalue
    assert ours == pytest.approx(ref, abs=1e-12)


def test_permutation_test_monte_carlo_close_to_exact():
    rng = np.random.default_rng(13)
    n = 18  # beyond exact enumeration in paired_permutation_test
    a = rng.normal(size=n)
    b = a + rng.normal(0.3, 1.0, size=n)
    d = a - b
    signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    exact = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-9)
    mc = paired_permutation_test(a, b, rounds=10_000, seed=1)
    assert abs(mc - exact) < 0.02
    assert paired_permutation_test(a, a) == 1.0
    with pytest.raises(UadbenchError):
        paired_permutation_test(a, b[:-1])


def test_bootstrap_mean_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(14)
    v = rng.normal(0.5, 0.1, size=40)
    lo, hi = bootstrap_mean_ci(v, n_bootstrap=500)
    assert lo < v.mean() < hi
    lo2, hi2 = bootstrap_mean_ci(np.concatenate([v] * 4), n_bootstrap=500)
    assert hi2 - lo2 < hi - lo
    lo3, hi3 = bootstrap_ratio_ci(np.ones(5), np.ones(5), n_bootstrap=100)
    assert lo3 == hi3 == 1.0


def test_metrics_are_registered():
    names = uadbench.list_metrics()
    for n in ["auprc", "dice@val-bisection", "dice_pooled@healthy-fpr@5%", "dice@oracle",
              "l1_ratio", "fp_volume_ml@val-exact", "detection_rate_small@val-bisection"]:
        assert n in names
        assert uadbench.registry.METRICS.describe(n)


def test_compare_per_subject_uses_shared_subjects():
    a = {"s1": {"auprc": 0.5}, "s2": {"auprc": 0.6}, "s3": {"auprc": 0.9}, "s4": {}}
    b = {"s1": {"auprc": 0.4}, "s2": {"auprc": 0.3}, "s4": {"auprc": 0.1}}
    res = compare_per_subject(a, b, "auprc")
    assert res["n"] == 2 and res["mean_diff"] == pytest.approx(0.2)
    assert res["p_value"] == pytest.approx(paired_permutation_test([0.5, 0.6], [0.4, 0.3]))
    with pytest.raises(UadbenchError, match="dice"):
        compare_per_subject(a, b, "dice@val-exact")


def test_healthy_fpr_thresholds_hold_on_healthy_validation_maps(splits):
    thresholds = compute_thresholds(healthy_val=splits["healthy_val"])
    scores = np.concatenate(
        [
            postprocess_map(v.anomaly_map, v.brain_mask, PostprocessSettings())[v.brain_mask]
            for v in splits["healthy_val"]
        ]
    )
    nonzero = np.mean(scores > 0)
    for name, rate in [("healthy-fpr@1%", 0.01), ("healthy-fpr@5%", 0.05), ("healthy-fpr@10%", 0.10)]:
        info = thresholds[name]
        achieved = np.mean(scores > threshold_float32(info.value))
        assert achieved <= rate
        assert achieved >= min(rate, nonzero) - 1e-3  # continuous scores: as close as possible
        assert info.details["healthy_val_fpr"] == pytest.approx(achieved)


def test_tiny_and_degenerate_volumes_evaluate():
    rng = np.random.default_rng(30)
    tiny = EvalVolume("tiny", rng.random((4, 4, 3)).astype(np.float32), np.ones((4, 4, 3), bool),
                      np.eye(4, dtype=bool)[:, :, None].repeat(3, axis=2), 2.0)
    all_lesion = EvalVolume("all", rng.random((8, 8, 4)).astype(np.float32),
                            np.ones((8, 8, 4), bool), np.ones((8, 8, 4), bool), 2.0)
    constant = EvalVolume("const", np.zeros((10, 10, 5), np.float32), np.ones((10, 10, 5), bool),
                          rng.random((10, 10, 5)) < 0.2, 2.0)
    ev = evaluate_dataset([tiny, all_lesion, constant], lesion_val=[make_volume("lv", rng)],
                          n_bootstrap=20)
    assert "auroc" not in ev.per_volume["all"]  # one class only
    assert ev.per_volume["all"]["auprc"] == 1.0
    c = constant.lesion_mask
    assert ev.per_volume["const"]["auprc"] == pytest.approx(c.mean())
    assert ev.per_volume["const"]["auroc"] == pytest.approx(0.5)
    json.dumps(ev.to_dict())


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(31)
    vol = make_volume("np", rng)
    tvol = EvalVolume("np", torch.from_numpy(vol.anomaly_map), torch.from_numpy(vol.brain_mask),
                      torch.from_numpy(vol.lesion_mask), 2.0)
    a = evaluate_dataset([vol], n_bootstrap=0)
    b = evaluate_dataset([tvol], n_bootstrap=0)
    assert a.per_volume == b.per_volume


def test_streaming_evaluator_equals_evaluate_dataset(splits, evaluation):
    ev = DatasetEvaluator(
        lesion_val=splits["lesion_val"],
        healthy_val=splits["healthy_val"],
        source_names={"lesion_val": "synthetic/val", "healthy_val": "synthetic-healthy/val"},
        n_bootstrap=200,
    )
    for vol in splits["test"]:
        ev.update(vol)
    streamed = ev.aggregate()
    assert streamed.to_dict() == evaluation.to_dict()
    with pytest.raises(UadbenchError, match="more than once"):
        ev.update(splits["test"][0])
    with pytest.raises(UadbenchError, match="lv01"):
        ev.update(splits["lesion_val"][1])
    ev.reset()
    with pytest.raises(UadbenchError, match="update"):
        ev.aggregate()


def test_evaluation_round_trips_through_json(evaluation):
    text = json.dumps(evaluation.to_dict())
    back = DatasetEvaluation.from_dict(json.loads(text))
    assert back.to_dict() == evaluation.to_dict()
    assert back.thresholds["oracle"].value is None
    with pytest.raises(UadbenchError, match="DatasetEvaluation"):
        DatasetEvaluation.from_dict({"aggregates": {}})


def _count_volume_checks(monkeypatch):
    """Spy on every volume check of the protocol; returns the list of (role, subject) checked."""
    from uadbench.evaluation import evaluator, volume

    seen = []
    original = checks.check_volume

    def spy(vol, role):
        seen.append((role, vol.subject_id))
        return original(vol, role)

    for module in (checks, evaluator, volume):
        monkeypatch.setattr(module, "check_volume", spy)
    return seen


def test_each_split_is_checked_once_per_evaluation(monkeypatch, splits):
    seen = _count_volume_checks(monkeypatch)
    evaluate_dataset(splits["test"], lesion_val=splits["lesion_val"],
                     healthy_val=splits["healthy_val"], n_bootstrap=0)
    expected = ([("test", v.subject_id) for v in splits["test"]]
                + [("lesion_val", v.subject_id) for v in splits["lesion_val"]]
                + [("healthy_val", v.subject_id) for v in splits["healthy_val"]])
    assert sorted(seen) == sorted(expected)
    seen.clear()
    ev = DatasetEvaluator(lesion_val=splits["lesion_val"], healthy_val=splits["healthy_val"],
                          n_bootstrap=0)
    for vol in splits["test"]:
        ev.update(vol)
    assert sorted(seen) == sorted(expected)


def test_result_types_are_reexported_by_the_protocol():
    from uadbench.evaluation import protocol, results

    for name in ["EvalVolume", "ThresholdInfo", "VolumeResult", "DatasetEvaluation"]:
        assert getattr(protocol, name) is getattr(results, name)
        assert name in protocol.__all__


def test_versions_are_exported():
    from uadbench.evaluation import METRICS_VERSION, PROTOCOL_VERSION, metrics, protocol

    assert PROTOCOL_VERSION == protocol.PROTOCOL_VERSION == "1"
    assert METRICS_VERSION == metrics.METRICS_VERSION == "2"  # 2: the detection metrics


# (key, higher is better, upper bound, shown in percent) of every leaderboard column
LEADERBOARD_METRICS = [
    ("auprc", True, False, True),
    ("auroc", True, False, True),
    ("dice@val-bisection", True, False, True),
    ("dice@val-exact", True, False, True),
    ("dice@healthy-fpr@5%", True, False, True),
    ("fp_volume_ml@val-bisection", False, False, False),
    ("l1_ratio", True, False, False),
    ("dice@oracle", True, True, True),
]


@pytest.mark.parametrize("key,higher,upper,percent", LEADERBOARD_METRICS)
def test_metric_catalogue_says_direction_bound_and_unit(key, higher, upper, percent):
    info = metric_info(key)
    assert info.name == key
    assert (info.higher_is_better, info.upper_bound, info.percent) == (higher, upper, percent)
    assert info.arrow == ("↑" if higher else "↓")
    assert info.description


def test_the_entropy_difference_is_signed_with_no_better_side():
    """The catalogue and the report agree: the entropy difference has a sign, not a direction."""
    info = metric_info("entropy_diff")
    assert (info.direction, info.ranked, info.higher_is_better, info.arrow) == ("signed", False, False, "±")
    assert "signed" in info.description
    assert [k for k, i in METRIC_INFO.items() if not i.ranked] == ["entropy_diff"]
    assert metric_info("dice@crossfit-exact@3").direction == "higher"
    with pytest.raises(UadbenchError, match="valid: higher, lower, signed"):
        MetricInfo("x", "y", direction="up")


def test_metric_catalogue_covers_every_reported_metric(evaluation):
    per_volume = {k for m in evaluation.per_volume.values() for k in m}
    for name in set(evaluation.aggregates) | per_volume:
        assert metric_info(name) is METRIC_INFO[name]
    assert [k for k, i in METRIC_INFO.items() if i.upper_bound] == ["dice@oracle"]
    with pytest.raises(UadbenchError, match="did you mean 'dice@val-exact'"):
        metric_info("dice@val-exakt")


def test_evaluation_modules_import_without_torch():
    """Only torch_postprocess imports torch; the rest of the wing is numpy/scipy."""
    package_dir = Path(uadbench.__file__).parent
    modules = ["results", "checks", "catalogue", "metrics", "postprocess", "thresholds", "stats",
               "image_quality", "volume", "threshold_protocols", "evaluator", "crossfit", "protocol"]
    code = (
        "import sys, types\n"
        # a bare package object: what the modules themselves import, not the package face
        f"pkg = types.ModuleType('uadbench'); pkg.__path__ = [{str(package_dir)!r}]\n"
        "sys.modules['uadbench'] = pkg\n"
        + "".join(f"import uadbench.evaluation.{m}\n" for m in modules)
        + "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


# -- torch post-processing (the path used for CUDA maps; tested on CPU tensors) -----------------


@pytest.mark.parametrize(
    "shape,size,signed", [((40, 36, 20), 5, False), ((30, 25, 12), 5, True), ((6, 5, 4), 5, True),
                          ((3, 3, 3), 5, False), ((12, 12, 12), 3, False)]
)
def test_torch_median_identical_to_scipy(shape, size, signed):
    torch = pytest.importorskip("torch")
    from uadbench.evaluation.torch_postprocess import median_filter_3d_torch

    rng = np.random.default_rng(40)
    x = (rng.random(shape) * (rng.random(shape) < 0.6)).astype(np.float32)
    if signed:
        x *= rng.choice(np.array([-1, 1], np.float32), size=shape)
    ours = median_filter_3d_torch(torch.from_numpy(x), size).numpy()
    np.testing.assert_array_equal(ours, ndimage.median_filter(x, size=size))


def test_device_maps_use_torch_path_with_same_results(monkeypatch, splits):
    torch = pytest.importorskip("torch")

    plain = evaluate_dataset(splits["test"][:2], lesion_val=splits["lesion_val"], n_bootstrap=0)
    calls = []
    from uadbench.evaluation import torch_postprocess

    original = torch_postprocess.postprocess_map_torch

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_postprocess, "postprocess_map_torch", spy)
    monkeypatch.setattr(checks, "is_device_tensor", lambda x: isinstance(x, torch.Tensor))
    as_tensors = [
        EvalVolume(v.subject_id, torch.from_numpy(v.anomaly_map), v.brain_mask, v.lesion_mask, 2.0)
        for v in splits["test"][:2] + splits["lesion_val"]
    ]
    via_torch = evaluate_dataset(as_tensors[:2], lesion_val=as_tensors[2:], n_bootstrap=0)
    assert len(calls) == 2 + len(splits["lesion_val"])
    assert via_torch.to_dict() == plain.to_dict()
    bad = torch.from_numpy(splits["test"][0].anomaly_map.copy())
    bad[0, 0, 0] = float("nan")
    with pytest.raises(UadbenchError, match="t00.*NaN"):
        evaluate_dataset([EvalVolume("t00", bad, splits["test"][0].brain_mask, None, 2.0)])


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA device (checks the GPU path)"
)
def test_cuda_maps_match_host(splits):
    import torch

    vols = splits["test"][:2]
    plain = evaluate_dataset(vols, n_bootstrap=0)
    cuda = [
        EvalVolume(v.subject_id, torch.from_numpy(v.anomaly_map).cuda(), v.brain_mask,
                   v.lesion_mask, 2.0)
        for v in vols
    ]
    assert evaluate_dataset(cuda, n_bootstrap=0).to_dict() == plain.to_dict()


# -- threshold cross-fitting -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_crossfit_folds_partition_the_cases(k):
    ids = [f"site{i % 2}-{i:02d}" for i in range(7)]
    folds = crossfit_folds(ids, k)
    assert len(folds) == k
    assert sorted(s for fold in folds for s in fold) == sorted(ids)  # every case in exactly one fold
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert crossfit_folds(list(reversed(ids)), k) == folds  # the order ids come in does not matter
    assert crossfit_folds(ids, k, seed=1) != folds or k == 7


@pytest.mark.parametrize("ids, k, message", [
    (["a", "b", "c"], 1, "k >= 2"),
    (["a", "b", "c"], 4, "at least 4 annotated cases"),
    (["a", "b", "a"], 2, "listed twice"),
])
def test_crossfit_folds_refuse_bad_arguments(ids, k, message):
    with pytest.raises(UadbenchError, match=message):
        crossfit_folds(ids, k)


def _brute_force_crossfit(cases, k):
    """Every case's cross-fitted thresholds, the straightforward way: for each case, the cases of
    the other folds' maps post-processed and concatenated, the reference bisection run on them."""
    settings = PostprocessSettings()
    processed = {v.subject_id: oracles.postprocess(v.anomaly_map, v.brain_mask, settings) for v in cases}
    out = {}
    for fold in crossfit_folds([v.subject_id for v in cases], k):
        others = [v for v in cases if v.subject_id not in fold]
        x = np.concatenate([processed[v.subject_id].ravel() for v in others])
        y = np.concatenate([v.lesion_mask.ravel() for v in others])
        dice_ref, point = oracles.greedy_bisection(x, y)
        for sid in fold:
            assert sid not in out  # tested exactly once
            out[sid] = (point, dice_ref, x, y)
    return out


@pytest.mark.parametrize("k", [2, 3, 5])
def test_crossfit_matches_brute_force(k):
    cases = make_split("c", 5, 31, noise=0.2)
    healthy_test = make_split("h", 2, 32, lesion=False, noise=0.2, with_recon=True)
    result = evaluate_crossfit(cases + healthy_test, k=k, healthy_val=make_split("hv", 2, 33, lesion=False),
                               source_names={"cases": "synthetic/val+test"}, n_bootstrap=0)
    bis, ex = f"crossfit-bisection@{k}", f"crossfit-exact@{k}"
    ref = _brute_force_crossfit(cases, k)
    assert sorted(ref) == sorted(v.subject_id for v in cases)
    settings = PostprocessSettings()
    folds = crossfit_folds([v.subject_id for v in cases], k)
    for vol in cases:
        point, dice_ref, x, y = ref[vol.subject_id]
        fold = next(i for i, f in enumerate(folds) if vol.subject_id in f)
        assert result.thresholds[bis].details[f"fold{fold}_threshold"] == point
        assert result.thresholds[bis].details[f"fold{fold}_val_pooled_dice"] == pytest.approx(dice_ref, abs=1e-12)
        t_exact = result.thresholds[ex].details[f"fold{fold}_threshold"]
        best = result.thresholds[ex].details[f"fold{fold}_val_pooled_dice"]
        assert oracles.dice(x.astype(np.float64) > t_exact, y) == pytest.approx(best, abs=1e-12)
        assert best >= dice_ref - 1e-12
        assert max(oracles.dice(x > t, y) for t in np.unique(x)[::97]) <= best + 1e-12  # the optimum on the other folds
        expected = oracles.evaluate_volume(vol.anomaly_map, vol.brain_mask, vol.lesion_mask, {bis: point, ex: t_exact}, settings)
        ours = result.per_volume[vol.subject_id]
        for name in (f"dice@{bis}", f"dice@{ex}", "auprc", "auroc"):
            assert ours[name] == pytest.approx(expected[name], abs=1e-9), name
    info = result.thresholds[bis]
    assert info.value is None and info.n_volumes == 5
    assert info.source.startswith(f"cross-fitting, {k} folds over 5 synthetic/val+test")
    assert "val-bisection" not in result.thresholds and f"dice@{bis}" in result.aggregates
    assert f"detection_rate_medium@{bis}" in result.aggregates or f"detection_rate_small@{bis}" in result.aggregates
    for vol in healthy_test:  # healthy scans take only the healthy-FPR thresholds
        assert not any("crossfit" in name for name in result.per_volume[vol.subject_id])
        assert "fp_volume_ml@healthy-fpr@5%" in result.per_volume[vol.subject_id]
    for name in result.aggregates:
        metric_info(name)  # every reported metric has a catalogue entry
    assert DatasetEvaluation.from_dict(json.loads(json.dumps(result.to_dict()))).thresholds[bis].details == info.details


def test_crossfit_leaves_the_protocols_numbers_unchanged(splits, evaluation):
    """Cross-fitting adds protocols; evaluate_dataset's numbers are the same with it in the package."""
    again = evaluate_dataset(splits["test"], lesion_val=splits["lesion_val"], healthy_val=splits["healthy_val"],
                             source_names={"lesion_val": "synthetic/val", "healthy_val": "synthetic-healthy/val"}, n_bootstrap=200)
    assert again.to_dict() == evaluation.to_dict()
    crossfit = evaluate_crossfit(splits["test"], k=5, n_bootstrap=0)
    for sid, metrics in evaluation.per_volume.items():
        for name in ("auprc", "auroc", "dice@oracle", "l1_ratio"):
            if name in metrics:
                assert crossfit.per_volume[sid][name] == metrics[name]


def test_crossfit_refuses_folds_without_lesions():
    cases = make_split("c", 1, 3) + make_split("e", 2, 4, lesion=False)
    for v in cases[1:]:
        v.lesion_mask = np.zeros_like(v.brain_mask)  # annotated, no lesion
    with pytest.raises(UadbenchError, match="the other folds have no lesion voxels"):
        evaluate_crossfit(cases, k=3, n_bootstrap=0)  # the lesion case's fold learns from empty cases only
    with pytest.raises(UadbenchError, match="at least 4 annotated cases"):
        evaluate_crossfit(cases, k=4, n_bootstrap=0)
