"""Seed-aware statistics: the two-level bootstrap against exact enumeration, P(A > B) against a
direct count, the seed-aware test, and what the tables and ``uadbench compare`` make of them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from uadbench.errors import UadbenchError
from uadbench.evaluation.stats import (
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    bootstrap_resamples,
    compare_seeds,
    compare_seeds_many,
    hierarchical_bootstrap_ci,
    hierarchical_replicates,
    paired_permutation_test,
    probability_of_improvement,
    two_level_resamples,
)

# a (seeds, subjects) matrix small enough to enumerate every two-level resample
X = np.array([[0.30, 0.55, 0.90],
              [0.42, 0.61, 0.70]])


def _exact_shared(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every equally likely resample of the crossed design: S seeds and n subjects drawn with
    replacement (index tuples), one subject draw for all drawn seeds. Values and probabilities."""
    s, n = x.shape
    out = [np.mean([x[i, j] for i in seeds for j in subjects])
           for seeds in itertools.product(range(s), repeat=s) for subjects in itertools.product(range(n), repeat=n)]
    return np.array(out), np.full(len(out), 1.0 / len(out))


def _exact_per_seed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every equally likely resample of the nested design: a subject draw per drawn seed."""
    s, n = x.shape
    draws = list(itertools.product(range(n), repeat=n))
    out = [np.mean([x[i, j] for i, subjects in zip(seeds, per_seed) for j in subjects])
           for seeds in itertools.product(range(s), repeat=s) for per_seed in itertools.product(draws, repeat=s)]
    return np.array(out), np.full(len(out), 1.0 / len(out))


def _quantile(values: np.ndarray, probs: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(probs[order])
    return float(values[order][np.searchsorted(cdf, q - 1e-12)])


def _check_against_exact(replicates: np.ndarray, values: np.ndarray, probs: np.ndarray, level: float = 0.95) -> None:
    # equal means summed in another order differ in the last bits: compare at 12 decimals
    replicates, values = np.round(replicates, 12), np.round(values, 12)
    mean = float(np.sum(values * probs))
    var = float(np.sum((values - mean) ** 2 * probs))
    assert replicates.mean() == pytest.approx(mean, abs=4 * math.sqrt(var / replicates.size))
    assert replicates.var() == pytest.approx(var, rel=0.03)
    # Kolmogorov distance between the Monte Carlo and the exact distribution
    grid = np.unique(values)
    exact_cdf = np.array([probs[values <= g].sum() for g in grid])
    mc_cdf = np.searchsorted(np.sort(replicates), grid, side="right") / replicates.size
    assert np.abs(exact_cdf - mc_cdf).max() < 0.01
    # the percentile interval falls on the exact quantiles (up to a neighbouring atom)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(replicates, [alpha, 1 - alpha])
    assert _quantile(values, probs, alpha - 0.01) <= lo <= _quantile(values, probs, alpha + 0.01)
    assert _quantile(values, probs, 1 - alpha - 0.01) <= hi <= _quantile(values, probs, 1 - alpha + 0.01)


# -- the two-level bootstrap ------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["shared", "per_seed"])
def test_one_seed_is_the_subject_bootstrap_exactly(design):
    assert np.array_equal(two_level_resamples(1, 7, n_bootstrap=300, seed=4, subjects=design),
                          bootstrap_resamples(7, n_bootstrap=300, seed=4))
    v = np.random.default_rng(0).random(9)
    assert hierarchical_bootstrap_ci(v, subjects=design) == bootstrap_mean_ci(v)


def test_two_level_resamples_draw_seeds_and_subjects():
    r = two_level_resamples(3, 4, n_bootstrap=500, seed=1).reshape(500, 3, 4)
    seeds, subjects = r.sum(axis=2), r.sum(axis=1)
    assert np.all(r.sum(axis=(1, 2)) == 12)
    # shared: every resample is (seed multiplicities) × (subject multiplicities), each drawn with replacement
    c = seeds / 4
    w = subjects / 3
    assert np.allclose(r, c[:, :, None] * w[:, None, :]) and np.all(c.sum(axis=1) == 3) and np.all(w.sum(axis=1) == 4)
    assert len({tuple(row) for row in c}) > 5 and len({tuple(row) for row in w}) > 10
    nested = two_level_resamples(3, 4, n_bootstrap=500, seed=1, subjects="per_seed").reshape(500, 3, 4)
    assert np.all(nested.sum(axis=(1, 2)) == 12) and np.all(nested.sum(axis=2) % 4 == 0)  # 4 subjects per drawn seed
    with pytest.raises(UadbenchError, match="subjects must be one of shared, per_seed; got 'crossed'"):
        two_level_resamples(3, 4, subjects="crossed")


def test_the_shared_two_level_bootstrap_matches_exact_enumeration():
    values, probs = _exact_shared(X)  # 2**2 seed draws × 3**3 subject draws
    assert values.size == 108
    estimate, replicates = hierarchical_replicates(X, n_bootstrap=100_000, seed=3)
    assert estimate == pytest.approx(X.mean())
    _check_against_exact(replicates, values, probs)
    assert hierarchical_bootstrap_ci(X, n_bootstrap=100_000, seed=3) == pytest.approx(tuple(np.quantile(replicates, [0.025, 0.975])))


def test_the_per_seed_two_level_bootstrap_matches_exact_enumeration():
    values, probs = _exact_per_seed(X)  # 2**2 seed draws × (3**3)**2 subject draws
    assert values.size == 2916
    _, replicates = hierarchical_replicates(X, n_bootstrap=100_000, seed=5, subjects="per_seed")
    _check_against_exact(replicates, values, probs)


def test_tasks_are_resampled_apart_and_averaged():
    """Stratified over tasks as rliable: each task resampled on its own, the mean over tasks."""
    y = np.array([[0.1, 0.8], [0.2, 0.5], [0.15, 0.9]])  # 3 seeds × 2 subjects
    vx, px = _exact_shared(X)
    vy, py = _exact_shared(y)
    values = (vx[:, None] + vy[None, :]).ravel() / 2
    probs = (px[:, None] * py[None, :]).ravel()
    estimate, replicates = hierarchical_replicates([X, y], n_bootstrap=100_000, seed=7)
    assert estimate == pytest.approx((X.mean() + y.mean()) / 2)
    _check_against_exact(replicates, values, probs)


def test_a_ratio_resamples_numerator_and_denominator_together():
    rng = np.random.default_rng(2)
    num, den = rng.random((3, 5)) + 0.5, rng.random((3, 5)) + 0.1
    expected = bootstrap_ratio_ci(num.ravel(), den.ravel(), resamples=two_level_resamples(3, 5, seed=0))
    assert hierarchical_bootstrap_ci(num, denominators=den) == pytest.approx(expected)
    estimate, _ = hierarchical_replicates(num, denominators=den)
    assert estimate == pytest.approx(num.sum() / den.sum())


def test_a_missing_value_weighs_nothing():
    x = X.copy()
    x[1, 2] = math.nan
    estimate, replicates = hierarchical_replicates(x, n_bootstrap=2000)
    assert estimate == pytest.approx(np.nanmean(x))
    # undefined only in the resamples that draw nothing but the missing value
    only_missing = two_level_resamples(2, 3, n_bootstrap=2000)[:, 5] == 6
    assert only_missing.any() and np.array_equal(~np.isfinite(replicates), only_missing)
    with pytest.raises(UadbenchError, match="seeds × subjects matrix"):
        hierarchical_bootstrap_ci(np.zeros((2, 0)))


def test_seeds_that_disagree_widen_the_interval():
    """The same subject values, once with identical seeds and once with seeds that move the mean."""
    v = np.random.default_rng(11).normal(0.5, 0.15, size=20)
    same = np.stack([v] * 5)
    spread = np.stack([v + d for d in (-0.12, -0.06, 0.0, 0.06, 0.12)])
    lo_s, hi_s = hierarchical_bootstrap_ci(same)
    lo_w, hi_w = hierarchical_bootstrap_ci(spread)
    assert (lo_s, hi_s) == pytest.approx(bootstrap_mean_ci(v), abs=1e-12)  # identical seeds: only subjects vary
    assert hi_w - lo_w > 1.3 * (hi_s - lo_s) and lo_w < same.mean() < hi_w


def test_shared_subjects_keep_the_subject_variance_that_a_draw_per_seed_would_divide_by_the_seeds():
    """Every seed is evaluated on the same test subjects: redrawing them per seed would shrink the
    subjects' share of the variance by the number of seeds."""
    v = np.random.default_rng(12).normal(0.5, 0.15, size=20)
    same = np.stack([v] * 5)
    shared = np.diff(hierarchical_bootstrap_ci(same))[0]
    nested = np.diff(hierarchical_bootstrap_ci(same, subjects="per_seed"))[0]
    assert nested < 0.6 * shared  # about 1/sqrt(5)


# -- P(A > B) and the seed-aware test ---------------------------------------------------------------------
def _direct_improvement(a: np.ndarray, b: np.ndarray) -> float:
    """rliable's probability of improvement with subjects as tasks and seeds as runs, by counting."""
    per_subject = []
    for j in range(a.shape[1]):
        wins = pairs = 0.0
        for x in a[:, j]:
            for y in b[:, j]:
                if math.isnan(x) or math.isnan(y):
                    continue
                wins += 1.0 if x > y else 0.5 if x == y else 0.0
                pairs += 1
        per_subject.append(wins / pairs)
    return float(np.mean(per_subject))


def test_probability_of_improvement_against_a_direct_count():
    rng = np.random.default_rng(5)
    a = np.round(rng.random((3, 8)), 1)  # rounded: ties happen
    b = np.round(rng.random((4, 8)), 1)
    assert any(np.isin(a[:, j], b[:, j]).any() for j in range(8))  # some seed pairs tie on a subject
    assert probability_of_improvement(a, b) == pytest.approx(_direct_improvement(a, b))
    assert probability_of_improvement(a, b) + probability_of_improvement(b, a) == pytest.approx(1.0)
    assert compare_seeds(a, b, n_bootstrap=200).p_improvement == pytest.approx(_direct_improvement(a, b))
    one_a, one_b = a[:1], b[:1]  # one seed each: the share of subjects where A is above B, ties half
    share = np.mean((one_a[0] > one_b[0]) + 0.5 * (one_a[0] == one_b[0]))
    assert probability_of_improvement(one_a, one_b) == pytest.approx(share)


def test_the_seed_aware_test_and_its_intervals_match_exact_enumeration():
    a = np.array([[0.60, 0.52, 0.71], [0.58, 0.49, 0.69]])
    b = np.array([[0.50, 0.55, 0.62], [0.57, 0.47, 0.66]])
    deltas, improvements = [], []
    for w in itertools.product(range(3), repeat=3):  # the subjects, shared by both methods
        for ia in itertools.product(range(2), repeat=2):  # A's seeds
            for ib in itertools.product(range(2), repeat=2):  # B's seeds
                deltas.append(np.mean(a[np.ix_(ia, w)]) - np.mean(b[np.ix_(ib, w)]))
                improvements.append(_direct_improvement(a[np.ix_(ia, w)], b[np.ix_(ib, w)]))
    deltas_, improvements_ = np.array(deltas), np.array(improvements)
    probs = np.full(deltas_.size, 1.0 / deltas_.size)
    exact_p = min(1.0, 2 * min(np.mean(deltas_ <= 0), np.mean(deltas_ >= 0)))
    res = compare_seeds(a, b, n_bootstrap=100_000, seed=9)
    assert res.p_value == pytest.approx(exact_p, abs=0.01)
    assert res.diff == pytest.approx(a.mean() - b.mean()) and res.mean_a == pytest.approx(a.mean())
    for (lo, hi), values in ((res.diff_ci, deltas_), (res.p_improvement_ci, improvements_)):
        assert _quantile(values, probs, 0.015) <= lo <= _quantile(values, probs, 0.035)
        assert _quantile(values, probs, 0.965) <= hi <= _quantile(values, probs, 0.985)
    assert (res.n_subjects, res.n_seeds_a, res.n_seeds_b, res.resamples) == (3, 2, 2, 100_000)


def test_the_test_separates_methods_whose_seeds_agree_but_not_those_whose_seeds_disagree():
    rng = np.random.default_rng(8)
    v = rng.normal(0.5, 0.15, size=20)
    best = np.stack([v + 0.05 + d for d in (0.0, 0.005, -0.005, 0.002)])
    steady = np.stack([v + d for d in (0.0, 0.004, -0.004, 0.001)])
    restless = np.stack([v + d for d in (-0.15, 0.14, 0.01, 0.0)])  # the same mean, seeds 29 points apart
    assert compare_seeds(best, steady).p_value < 0.01
    assert compare_seeds(best, restless).p_value > 0.05
    # a test over subjects only sees one pair of fits: seed 0 of each looks clearly apart
    assert paired_permutation_test(best[2], restless[2]) < 0.001
    same = compare_seeds(steady, steady)
    assert same.p_value == 1.0 and same.p_improvement == pytest.approx(0.5) and same.diff == 0.0


def test_comparing_one_method_with_many_gives_each_pair_s_numbers():
    rng = np.random.default_rng(4)
    a = rng.random((4, 12))
    others = [rng.random((3, 12)), rng.random((5, 12)), rng.random((4, 12))]
    others[1][0, 3] = math.nan  # a value missing: the same subjects, one weighs less
    others[2][:, 5] = math.nan  # a subject missing: other subjects kept, other draws
    assert compare_seeds_many(a, others, n_bootstrap=3000) == [compare_seeds(a, b, n_bootstrap=3000) for b in others]


def test_compare_seeds_refuses_what_it_cannot_compare():
    with pytest.raises(UadbenchError, match="same subjects column by column; got 3 and 2 subjects"):
        compare_seeds(np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(UadbenchError, match="no subject has a value for both methods"):
        compare_seeds([[1.0, math.nan]], [[math.nan, 1.0]])
    with pytest.raises(UadbenchError, match="n_bootstrap must be >= 1"):
        compare_seeds(np.ones((2, 3)), np.ones((2, 3)), n_bootstrap=0)


# -- uadbench compare ---------------------------------------------------------------------------------------
def _results(tmp_path, seeds) -> str:
    from test_report import make_records

    from uadbench.records import records_text

    path = tmp_path / "results.jsonl"
    path.write_text(records_text(make_records(seeds=seeds)))
    return str(path)


def _matrix(path: str, label: str, metric: str = "auprc") -> np.ndarray:
    from uadbench.records import read_records

    runs = sorted((r for r in read_records(path) if r.label == label and r.shift == "none"), key=lambda r: r.seed)
    subjects = sorted({s for r in runs for s, v in r.per_volume.items() if metric in v})
    return np.array([[r.per_volume[s][metric] for s in subjects] for r in runs])


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_compare_refuses_fewer_than_three_seeds_unless_asked_for_subjects_only(tmp_path, capsys, seeds):
    from uadbench.cli import main

    path = _results(tmp_path, seeds)
    assert main(["compare", path, "b_x", "c", "--shift", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uadbench: error: compare tests methods over training seeds and needs >= 3 seeds")
    assert f"has {len(seeds)} of b_x and {len(seeds)} of c" in err[0] and "--subjects-only" in err[0]
    assert main(["compare", path, "b_x", "c", "--shift", "none", "--subjects-only", "--rounds", "500"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "leaves out training variance" in out[1]
    b, c = _matrix(path, "b_x"), _matrix(path, "c")
    for seed, line in zip(seeds, out[2:], strict=True):
        assert line.startswith(f"d  shift none  seed {seed}: n=6") and f"p={paired_permutation_test(b[seed], c[seed], rounds=500):.4g}" in line


def test_compare_tests_over_seeds_and_gives_the_probability_of_improvement(tmp_path, capsys):
    from uadbench.cli import main

    path = _results(tmp_path, (0, 1, 2))
    assert main(["compare", path, "b_x", "c", "--shift", "none", "--rounds", "2000"]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("two-level bootstrap over seeds and test subjects (2000 resamples")
    expected = compare_seeds(_matrix(path, "b_x"), _matrix(path, "c"), n_bootstrap=2000)
    lo, hi = expected.p_improvement_ci
    assert line.startswith("d  shift none: n=6 subjects, seeds b_x 3 c 3:")
    assert f"p={expected.p_value:.4g}" in line and f"P(b_x > c)={expected.p_improvement:.3f} [{lo:.3f}, {hi:.3f}]" in line
    assert expected.p_improvement == pytest.approx(_direct_improvement(_matrix(path, "b_x"), _matrix(path, "c")))
    assert f"diff {expected.diff:+.4f}" in line and expected.p_improvement == 1.0  # b_x is above c on every subject of every seed
