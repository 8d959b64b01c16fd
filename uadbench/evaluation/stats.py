"""Statistics over subjects and over training seeds: bootstrap intervals, tests, P(A > B).

Over the subjects of one fit: :func:`bootstrap_mean_ci` and :func:`bootstrap_ratio_ci`
(percentile bootstrap over subjects) and :func:`paired_permutation_test`. The paper compares
methods with MLxtend's permutation test, 10,000 rounds, α = 5 % (METHOD_SPEC §4.4);
:func:`paired_permutation_test` is the paired (sign-flip) version on per-subject values with the
two-sided statistic |mean(a − b)|. It describes the test subjects of one training run, not the
method: a second seed of the same method can move further than the test says.

Over seeds and subjects (the seed is the unit of training variance; Bouthillier et al., MLSys
2021; Agarwal et al., NeurIPS 2021): a method's values form a seeds × subjects matrix, the same
test subjects for every seed. :func:`two_level_resamples` draws seeds with replacement and, for
the drawn seeds, subjects with replacement; :func:`hierarchical_bootstrap_ci` gives the percentile
interval of the mean over seeds and subjects, stratified over tasks (each task resampled on its
own, as rliable does); :func:`compare_seeds` tests two methods (subjects paired, each method's
seeds resampled) and gives the probability of improvement P(A > B) with its interval.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from uadbench.errors import UadbenchError

_EXACT_LIMIT = 2**16  # enumerate all sign flips when there are at most this many


def _paired_arrays(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise UadbenchError(
            f"paired test needs one value per subject for both methods; got {x.size} and {y.size}"
        )
    if x.size == 0:
        raise UadbenchError("paired test needs at least one subject")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise UadbenchError("paired test values must be finite; drop subjects without a value")
    return x - y


def paired_permutation_test(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, rounds: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value that per-subject values ``a`` and ``b`` have the same mean.

    Under the null hypothesis each subject's difference ``a_i - b_i`` is equally likely to have
    either sign. The statistic is ``|mean(d)|``. When ``2**n <= max(rounds, 65536)`` all sign
    patterns are enumerated and the p-value is exact (the fraction of patterns at least as
    extreme, the observed one included); otherwise ``rounds`` random patterns are drawn and
    ``p = (1 + #as extreme) / (1 + rounds)``.
    """
    if int(rounds) < 1:
        raise UadbenchError(f"rounds must be >= 1, got {rounds!r}")
    d = _paired_arrays(a, b)
    n = d.size
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if 2**n <= max(int(rounds), _EXACT_LIMIT):
        hits = 0
        total = 0
        # chunk over the first bits to bound memory
        tail = min(n, 12)
        tail_signs = np.array(list(itertools.product((1.0, -1.0), repeat=tail)))
        head = n - tail
        for head_signs in itertools.product((1.0, -1.0), repeat=head):
            head_sum = float(np.dot(head_signs, d[:head])) if head else 0.0
            means = np.abs(head_sum + tail_signs @ d[head:]) / n
            hits += int(np.count_nonzero(means >= observed - tol))
            total += means.size
        return hits / total
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    chunk = max(1, min(int(rounds), 1_000_000 // max(n, 1)))
    while done < rounds:
        m = min(chunk, int(rounds) - done)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ d) / n
        hits += int(np.count_nonzero(means >= observed - tol))
        done += m
    return (hits + 1) / (int(rounds) + 1)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite bootstrap ``replicates`` (NaN, NaN if none)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ratio_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    resamples: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``sum(num) / sum(den)`` resampling subjects with replacement.

    A plain mean is the case ``den = 1`` for subjects with a value and ``num = den = 0`` for
    subjects without one. ``resamples`` (B, n) multiplicities may be shared between metrics so
    that all of them use the same bootstrap samples.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if resamples is None:
        resamples = bootstrap_resamples(num.size, n_bootstrap=n_bootstrap, seed=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = (resamples @ num) / (resamples @ den)
    return percentile_interval(stats, level)


def bootstrap_resamples(n: int, *, n_bootstrap: int = 1000, seed: int = 0) -> np.ndarray:
    """(B, n) multiplicities of ``n`` subjects in ``B`` bootstrap resamples."""
    if n_bootstrap < 1 or n < 1:
        return np.zeros((0, max(n, 0)))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(np.float64)


def bootstrap_mean_ci(
    values: Sequence[float], *, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-subject ``values`` (NaN values are skipped)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    defined = np.isfinite(v)
    return bootstrap_ratio_ci(
        np.where(defined, v, 0.0),
        defined.astype(np.float64),
        n_bootstrap=n_bootstrap,
        seed=seed,
        level=level,
    )


def compare_per_subject(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    metric: str,
    *,
    rounds: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired comparison of two methods on ``metric`` over the subjects both have a value for.

    ``a`` and ``b`` are ``DatasetEvaluation.per_volume`` mappings (subject -> metric -> value).
    Returns ``{"n": subjects, "mean_a", "mean_b", "mean_diff": mean(a - b), "p_value"}``.
    """
    subjects = sorted(s for s in a if s in b and metric in a[s] and metric in b[s])
    if not subjects:
        raise UadbenchError(
            f"no subject has {metric!r} in both evaluations; compare evaluations of the same "
            "dataset and a metric both report"
        )
    x = np.array([a[s][metric] for s in subjects], dtype=np.float64)
    y = np.array([b[s][metric] for s in subjects], dtype=np.float64)
    return {
        "n": float(len(subjects)),
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": float((x - y).mean()),
        "p_value": paired_permutation_test(x, y, rounds=rounds, seed=seed),
    }


# -- over seeds and subjects ---------------------------------------------------------------------------
#: How a two-level resample draws subjects: "shared" (one draw for every drawn seed: each seed was
#: evaluated on the same test subjects, a crossed design) or "per_seed" (a draw per drawn seed: a
#: nested design, where each seed has test subjects of its own).
SUBJECT_DESIGNS = ("shared", "per_seed")


def two_level_resamples(n_seeds: int, n_subjects: int, *, n_bootstrap: int = 1000, seed: int = 0, subjects: str = "shared",
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """(B, n_seeds * n_subjects) multiplicities of each (seed, subject) value in ``B`` two-level
    bootstrap resamples; value (k, j) is column ``k * n_subjects + j``.

    Each resample draws ``n_seeds`` seeds with replacement and ``n_subjects`` subjects with
    replacement, one subject draw for all drawn seeds (``subjects="shared"``) or one per drawn seed
    (``"per_seed"``); the multiplicity of (k, j) sums over the drawn copies of seed k. With one seed
    both designs give exactly :func:`bootstrap_resamples` (``n_subjects``) for the same ``seed``.
    ``rng`` (instead of ``seed``) continues a generator, for several strata in turn."""
    if subjects not in SUBJECT_DESIGNS:
        raise UadbenchError(f"subjects must be one of {', '.join(SUBJECT_DESIGNS)}; got {subjects!r}")
    if n_bootstrap < 1 or n_seeds < 1 or n_subjects < 1:
        return np.zeros((0, max(n_seeds, 0) * max(n_subjects, 0)))
    rng = np.random.default_rng(seed) if rng is None else rng
    p_subject = np.full(n_subjects, 1.0 / n_subjects)
    if subjects == "shared":
        w = rng.multinomial(n_subjects, p_subject, size=n_bootstrap)  # (B, n): drawn first, as bootstrap_resamples
        c = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_bootstrap)  # (B, S)
        m = c[:, :, None] * w[:, None, :]
    else:
        per_slot = rng.multinomial(n_subjects, p_subject, size=(n_bootstrap, n_seeds))  # (B, slot, n)
        seed_of_slot = rng.integers(0, n_seeds, size=(n_bootstrap, n_seeds))
        m = np.zeros((n_bootstrap, n_seeds, n_subjects), dtype=np.int64)
        rows = np.arange(n_bootstrap)
        for slot in range(n_seeds):
            m[rows, seed_of_slot[:, slot]] += per_slot[:, slot]
    return m.reshape(n_bootstrap, n_seeds * n_subjects).astype(np.float64)


def _seed_matrix(values: Sequence[Sequence[float]] | np.ndarray, what: str = "values") -> np.ndarray:
    """``values`` as a float (seeds, subjects) matrix: one row per seed (a 1-D array is one seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.size == 0:
        raise UadbenchError(f"{what} must be a non-empty seeds × subjects matrix (one row per seed); got shape {x.shape}")
    return x


def _tasks(tasks: Sequence[Sequence[Sequence[float]]] | np.ndarray) -> list[np.ndarray]:
    if isinstance(tasks, np.ndarray) and tasks.ndim <= 2:
        return [_seed_matrix(tasks)]
    out = list(tasks)
    if out and np.ndim(out[0]) <= 1:  # one task given as a list of seed rows
        return [_seed_matrix(out)]
    return [_seed_matrix(t, f"task {i}") for i, t in enumerate(out)]


def hierarchical_replicates(tasks: Sequence[Sequence[Sequence[float]]] | np.ndarray, *,
                            denominators: Sequence[Sequence[Sequence[float]]] | np.ndarray | None = None, n_bootstrap: int = 1000,
                            seed: int = 0, subjects: str = "shared") -> tuple[float, np.ndarray]:
    """The estimate and its ``B`` two-level bootstrap replicates: the mean over tasks of each task's
    mean over its seeds and subjects.

    ``tasks``: one (seeds, subjects) matrix or a sequence of them (one per task, of any shape; NaN:
    no value). Each task is resampled on its own (stratified, as rliable's bootstrap over runs
    within each task) with :func:`two_level_resamples`. A task's mean is a ratio of sums over its
    present values, which with no value missing is the mean over seeds of the subjects' mean.
    ``denominators`` (the same shapes) turns each task's mean into sum(values) / sum(denominators),
    resampled together (a ratio metric such as l1-ratio)."""
    xs = _tasks(tasks)
    ds = _tasks(denominators) if denominators is not None else [np.ones_like(x) for x in xs]
    if len(ds) != len(xs) or any(d.shape != x.shape for d, x in zip(ds, xs)):
        raise UadbenchError("denominators must have the shape of the values, task by task")
    rng = np.random.default_rng(seed)
    estimate = 0.0
    replicates = np.zeros(max(int(n_bootstrap), 0))
    for x, d in zip(xs, ds):
        present = np.isfinite(x) & np.isfinite(d)
        num, den = np.where(present, x, 0.0).ravel(), np.where(present, d, 0.0).ravel()
        if den.sum() == 0:
            return math.nan, np.full(replicates.size, math.nan)
        estimate += num.sum() / den.sum() / len(xs)
        resamples = two_level_resamples(*x.shape, n_bootstrap=n_bootstrap, subjects=subjects, rng=rng)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates = replicates + (resamples @ num) / (resamples @ den) / len(xs)
    return float(estimate), replicates


def hierarchical_bootstrap_ci(tasks: Sequence[Sequence[Sequence[float]]] | np.ndarray, *,
                              denominators: Sequence[Sequence[Sequence[float]]] | np.ndarray | None = None, n_bootstrap: int = 1000,
                              seed: int = 0, level: float = 0.95, subjects: str = "shared") -> tuple[float, float]:
    """Percentile interval of the mean over seeds and subjects (and tasks) from
    :func:`hierarchical_replicates`; with one seed, :func:`bootstrap_ratio_ci` over subjects."""
    _, replicates = hierarchical_replicates(tasks, denominators=denominators, n_bootstrap=n_bootstrap, seed=seed, subjects=subjects)
    return percentile_interval(replicates, level)


def _improvement_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S_a, S_b, n) wins of A over B (1 for a > b, 1/2 for a tie) and where both have a value."""
    x, y = a[:, None, :], b[None, :, :]
    both = np.isfinite(x) & np.isfinite(y)
    with np.errstate(invalid="ignore"):
        wins = np.where(both, (x > y) + 0.5 * (x == y), 0.0)
    return wins, both.astype(np.float64)


def probability_of_improvement(a: Sequence[Sequence[float]] | np.ndarray, b: Sequence[Sequence[float]] | np.ndarray) -> float:
    """P(A > B): the probability that a seed of A scores above a seed of B on a test subject, ties
    counting half: rliable's probability of improvement with subjects as its tasks and seeds as its
    runs. ``a`` (S_a, n) and ``b`` (S_b, n) hold the same n subjects column by column (NaN: no
    value); the average runs over every (seed of A, seed of B, subject) with both values, which
    with none missing is the mean over subjects of each subject's Mann-Whitney probability."""
    wins, both = _improvement_counts(_seed_matrix(a, "a"), _seed_matrix(b, "b"))
    return float(wins.sum() / both.sum()) if both.sum() else math.nan


@dataclass(frozen=True)
class SeedComparison:
    """Method A against method B over seeds and test subjects (:func:`compare_seeds`).

    ``diff`` = mean_a - mean_b (means over seeds and subjects) with its percentile interval
    ``diff_ci``; ``p_value``: two-sided bootstrap p-value of no difference; ``p_improvement``:
    P(A > B) with its interval."""

    n_subjects: int
    n_seeds_a: int
    n_seeds_b: int
    mean_a: float
    mean_b: float
    diff: float
    diff_ci: tuple[float, float]
    p_value: float
    p_improvement: float
    p_improvement_ci: tuple[float, float]
    resamples: int


def _draw_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, n) multiplicities of n items drawn n times with replacement, ``size`` times."""
    picks = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def compare_seeds(a: Sequence[Sequence[float]] | np.ndarray, b: Sequence[Sequence[float]] | np.ndarray, *, n_bootstrap: int = 10_000,
                  seed: int = 0, level: float = 0.95, improvement: bool = True) -> SeedComparison:
    """Two methods compared over their seeds and the test subjects both were evaluated on.

    ``a`` (S_a, n) and ``b`` (S_b, n): each method's values, a row per seed, the same subject in
    each column (NaN: no value; subjects without a value in both are dropped). Each of the
    ``n_bootstrap`` resamples draws the subjects once (paired: the same draw for both methods and
    all their seeds) and each method's seeds on their own (seeds of two methods are not paired),
    all with replacement. ``p_value`` = min(1, 2 (1 + min(#Δ* <= 0, #Δ* >= 0)) / (B + 1)) for the
    resampled differences Δ* (the percentile interval of Δ excludes 0 at level α exactly when
    p < α, up to the +1); P(A > B) (:func:`probability_of_improvement`) is resampled alike, unless
    ``improvement=False`` (then its interval is NaN)."""
    (result,) = compare_seeds_many(a, [b], n_bootstrap=n_bootstrap, seed=seed, level=level, improvement=improvement)
    return result


@dataclass(frozen=True)
class _Pair:
    """A against one other method, on the subjects both have a value for (``keep``)."""

    keep: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @property
    def group(self) -> bytes:
        return self.keep.tobytes()


def compare_seeds_many(a: Sequence[Sequence[float]] | np.ndarray, others: Sequence[Sequence[Sequence[float]] | np.ndarray], *,
                       n_bootstrap: int = 10_000, seed: int = 0, level: float = 0.95, improvement: bool = True) -> list[SeedComparison]:
    """:func:`compare_seeds` of ``a`` against each of ``others``, the same numbers: the subjects'
    and A's resamples are drawn once for the other methods that keep the same subjects, and their
    resampled means come from one matrix product."""
    if int(n_bootstrap) < 1:
        raise UadbenchError(f"n_bootstrap must be >= 1, got {n_bootstrap!r}")
    size = int(n_bootstrap)
    x_all = _seed_matrix(a, "a")
    pairs = []
    for other in others:
        y = _seed_matrix(other, "b")
        if x_all.shape[1] != y.shape[1]:
            raise UadbenchError(f"a and b must hold the same subjects column by column; got {x_all.shape[1]} and {y.shape[1]} subjects")
        keep = np.isfinite(x_all).any(axis=0) & np.isfinite(y).any(axis=0)
        if not keep.any():
            raise UadbenchError("no subject has a value for both methods; compare evaluations of the same dataset")
        pairs.append(_Pair(keep, x_all[:, keep], y[:, keep]))

    def resampled_means(weighted: np.ndarray, weighted_present: np.ndarray | None, counts: np.ndarray, n: int) -> np.ndarray:
        """Per resample, the mean over drawn seeds (``counts``) of the drawn subjects' values, from
        (B, S) subject-weighted sums of the values (and of where values are present)."""
        total = np.einsum("bk,bk->b", weighted, counts)
        if weighted_present is None:  # every drawn seed has every drawn subject
            return total / (counts.shape[1] * n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / np.einsum("bk,bk->b", weighted_present, counts)

    results: dict[int, SeedComparison] = {}
    for group in dict.fromkeys(p.group for p in pairs):
        members = [i for i, p in enumerate(pairs) if p.group == group]
        x = pairs[members[0]].x
        (sa, n), fx = x.shape, np.isfinite(x)
        rng = np.random.default_rng(seed)
        w = _draw_counts(rng, n, size)  # (B, n): the subjects, shared by both methods
        ca = _draw_counts(rng, sa, size)  # (B, S_a): A's seeds
        after_a = rng.bit_generator.state
        # A's and every other method's seeds × subjects in one product with the subject draws
        values = np.concatenate([x] + [pairs[i].y for i in members])
        present = np.isfinite(values)
        weighted = w @ np.where(present, values, 0.0).T
        weighted_present = None if present.all() else w @ present.T.astype(np.float64)
        mean_a = resampled_means(weighted[:, :sa], None if weighted_present is None or fx.all() else weighted_present[:, :sa], ca, n)
        start = sa
        for i in members:
            y = pairs[i].y
            rows = slice(start, start + y.shape[0])
            start += y.shape[0]
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = after_a  # B's seeds: the draws that follow A's, as for this pair alone
            cb = _draw_counts(rng, y.shape[0], size)
            present_y = None if weighted_present is None or np.isfinite(y).all() else weighted_present[:, rows]
            deltas = mean_a - resampled_means(weighted[:, rows], present_y, cb, n)
            wins, both = _improvement_counts(x, y)
            improvement_ci = (math.nan, math.nan)
            if improvement:
                sb = y.shape[0]
                pairs_won = (w @ wins.reshape(sa * sb, n).T).reshape(size, sa, sb)  # per (seed of A, seed of B), over the drawn subjects
                pairs_both = (w @ both.reshape(sa * sb, n).T).reshape(size, sa, sb)
                with np.errstate(invalid="ignore", divide="ignore"):
                    won = np.einsum("bk,bl,bkl->b", ca, cb, pairs_won) / np.einsum("bk,bl,bkl->b", ca, cb, pairs_both)
                    improvement_ci = percentile_interval(won, level)
            deltas = deltas[np.isfinite(deltas)]
            tail = min(int(np.count_nonzero(deltas <= 0)), int(np.count_nonzero(deltas >= 0)))
            m_a, m_b = float(np.nanmean(x)), float(np.nanmean(y))
            results[i] = SeedComparison(
                n_subjects=n, n_seeds_a=sa, n_seeds_b=y.shape[0], mean_a=m_a, mean_b=m_b, diff=m_a - m_b, diff_ci=percentile_interval(deltas, level),
                p_value=min(1.0, 2.0 * (1 + tail) / (deltas.size + 1)), p_improvement=float(wins.sum() / both.sum()),
                p_improvement_ci=improvement_ci, resamples=size)
    return [results[i] for i in range(len(pairs))]


__all__ = [
    "SeedComparison",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "bootstrap_resamples",
    "compare_per_subject",
    "compare_seeds",
    "compare_seeds_many",
    "hierarchical_bootstrap_ci",
    "hierarchical_replicates",
    "paired_permutation_test",
    "probability_of_improvement",
    "two_level_resamples",
]
