"""Statistics over subjects: bootstrap confidence intervals and a paired permutation test.

The paper compares methods with MLxtend's permutation test, 10,000 rounds, α = 5 %
(METHOD_SPEC §4.4). :func:`paired_permutation_test` is the paired (sign-flip) version on
per-subject values with the two-sided statistic |mean(a − b)|.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

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
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


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


__all__ = [
    "compare_per_subject",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "bootstrap_resamples",
    "paired_permutation_test",
]
