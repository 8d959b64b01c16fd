"""The tidy frame reduced once for every table: means over seeds, intervals, tests and ranks.

:func:`summarise_frame` gives a :class:`Summary`: for every (spec hash, dataset, shift, kind,
label) group and metric, the mean, std and count over seeds of the cells' values and a 95 %
interval from a two-level bootstrap (seeds, and the test subjects every seed was evaluated on;
with one seed, subjects only); for every group, its facts (grid, method, preset, seeds, device,
mean costs) and each metric's seeds × subjects values. :func:`best_and_marks` finds a column's
best rows and, when every method has at least :data:`MIN_SEEDS` seeds, the rows a seed-aware
test cannot separate from them; :func:`rank` and :func:`mean_rank` rank the rows.

The reduction works on integer codes (one per group, metric, seed and subject) with
``np.bincount`` and bootstrap resamples shared by every (group, metric) of one shape rather than
a pandas ``groupby`` per column: a leaderboard of 10,000 records is summarised in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from uadbench.evaluation.stats import bootstrap_ratio_ci, compare_seeds_many, two_level_resamples
from uadbench.records import ResultRecord, coerce_records
from uadbench.report.columns import COST, RATIOS, SHIFT_METRICS, TABLE_METRICS, describe
from uadbench.report.frame import join_distinct, tidy_frame

__all__ = [
    "ALPHA",
    "GROUP",
    "MIN_SEEDS",
    "N_BOOTSTRAP",
    "STATS",
    "TEST_RESAMPLES",
    "Summary",
    "best_and_marks",
    "mean_rank",
    "rank",
    "summarise",
    "summarise_frame",
]

#: The level of the "not different from the best" test.
ALPHA = 0.05
#: Bootstrap resamples of the "not different from the best" test.
TEST_RESAMPLES = 10_000
#: Bootstrap resamples of each interval.
N_BOOTSTRAP = 1000
#: The fewest seeds of every compared method for a significance mark: with fewer, training
#: variance is not measured well enough to test (a table then says so and marks nothing).
MIN_SEEDS = 3

#: The columns that name a group: one table cell per group and metric.
GROUP = ["spec_hash", "dataset", "shift", "kind", "label"]
STATS = ("mean", "std", "n", "ci_low", "ci_high")


@dataclass
class Summary:
    """The tidy frame reduced once for every table.

    ``stats``: indexed by (spec_hash, dataset, shift, kind, label, metric): mean, std (over seeds;
    0 for one seed), n (seeds), ci_low, ci_high (the two-level bootstrap 95 % interval of the mean
    over seeds and subjects; a ratio of sums for l1-ratio). ``facts``: indexed by (spec_hash,
    dataset, shift, kind, label): grid, method, preset, shift_name, severity, n_seeds, device,
    precision, mean costs and the floor's brain_prevalence. ``values``: (seeds, subjects,
    (seeds, subjects) matrix, NaN where a seed has no value) by (spec_hash, dataset, shift, kind,
    label, metric), for the intervals and the tests."""

    stats: pd.DataFrame
    facts: pd.DataFrame
    values: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    _lookup: dict[tuple, tuple] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._lookup:
            self._lookup = dict(zip(self.stats.index, self.stats[list(STATS)].itertuples(index=False, name=None)))

    def specs(self) -> list[str]:
        return list(dict.fromkeys(self.facts.index.get_level_values("spec_hash")))

    @cached_property
    def fact_rows(self) -> dict[tuple, dict[str, Any]]:
        """``facts`` as a dict of dicts, by group (for lookups in loops)."""
        return self.facts.to_dict("index")

    def value(self, key: tuple, metric: str, column: str = "mean") -> float:
        row = self._lookup.get((*key, metric))
        return math.nan if row is None else float(row[STATS.index(column)])

    def matrix(self, key: tuple, metric: str) -> pd.DataFrame | None:
        """``metric`` in group ``key`` as a frame: a row per seed, a column per subject (None without any)."""
        found = self.values.get((*key, metric))
        return None if found is None else pd.DataFrame(found[2], index=pd.Index(found[0], name="seed"),
                                                       columns=pd.Index(found[1], name="subject"))

    def subjects(self, key: tuple, metric: str) -> pd.Series | None:
        """Per-subject means over seeds of ``metric`` in group ``key`` (None without any)."""
        found = self.values.get((*key, metric))
        if found is None:
            return None
        with np.errstate(invalid="ignore"):
            means = np.nanmean(found[2], axis=0) if found[2].shape[0] > 1 else found[2][0]
        return pd.Series(means, index=found[1])


# -- 1. integer codes of the frame's rows -------------------------------------------------------------------
def _codes(column: pd.Series) -> tuple[np.ndarray, list]:
    """Integer codes of a column and its categories as a list (-1: missing)."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(str).astype("category")
    return np.asarray(column.cat.codes, dtype=np.int64), column.cat.categories.tolist()


@dataclass(frozen=True)
class _Rows:
    """The tidy frame's rows as integer codes: a group per (spec, dataset, shift, kind, label) in
    the order groups first appear, a metric and a subject per row; a (group, metric) pair is
    ``group * n_metrics + metric``."""

    group: np.ndarray
    groups: list[tuple[str, ...]]
    metric: np.ndarray
    metrics: list[str]
    subject: np.ndarray
    subjects: list[str]
    seed: np.ndarray
    seeds: np.ndarray
    is_cell: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, tidy: pd.DataFrame) -> _Rows:
        codes, cats = zip(*(_codes(tidy[c]) for c in GROUP))
        dims = [max(len(c), 1) for c in cats]
        key = np.ravel_multi_index(codes, dims) if len(tidy) else np.zeros(0, np.int64)
        group, group_ids = pd.factorize(key)  # groups in the order they first appear
        groups = [tuple(str(cats[j][i]) for j, i in enumerate(np.unravel_index(k, dims))) for k in group_ids]
        metric, metrics = _codes(tidy["metric"])
        subject, subjects = _codes(tidy["subject"])
        seed, seeds = pd.factorize(tidy["seed"].to_numpy(dtype=np.int64), sort=True)
        return cls(group.astype(np.int64), groups, metric, [str(m) for m in metrics], subject, subjects, seed.astype(np.int64),
                   np.asarray(seeds), np.asarray(tidy["level"] == "cell"), tidy["value"].to_numpy(dtype=np.float64))

    @property
    def n_metrics(self) -> int:
        return max(len(self.metrics), 1)

    @property
    def n_seeds(self) -> int:
        return max(len(self.seeds), 1)

    @property
    def n_subjects(self) -> int:
        return max(len(self.subjects), 1)

    def pair(self, rows: np.ndarray) -> np.ndarray:
        """The (group, metric) pair of each selected row."""
        return self.group[rows] * self.n_metrics + self.metric[rows]

    def key(self, pair: int) -> tuple[str, ...]:
        """(spec_hash, dataset, shift, kind, label, metric) of a pair."""
        g, m = divmod(int(pair), self.n_metrics)
        return (*self.groups[g], self.metrics[m])


# -- 2. mean, std and count over seeds ---------------------------------------------------------------------
def _over_seeds(rows: _Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (group, metric) pairs of the cell rows (sorted) and, per pair, the mean, the std (ddof 1;
    0 for one value, NaN for none) and the count of the finite values: one value per seed."""
    pairs = rows.pair(rows.is_cell)
    v = rows.values[rows.is_cell]
    finite = np.isfinite(v)
    keys, inverse = np.unique(pairs, return_inverse=True)
    count = np.bincount(inverse, weights=finite, minlength=keys.size)
    total = np.bincount(inverse, weights=np.where(finite, v, 0.0), minlength=keys.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        dev = np.where(finite, v - mean[inverse], 0.0)
        std = np.sqrt(np.bincount(inverse, weights=dev * dev, minlength=keys.size) / (count - 1))
    std = np.where(count > 1, std, np.where(count == 1, 0.0, math.nan))
    return keys, mean, std, count


# -- 3. seeds × subjects values and their two-level bootstrap intervals -------------------------------------
@dataclass(frozen=True)
class _SeedSubjectValues:
    """Per (group, metric) pair, its values as a (seeds, subjects) matrix (NaN where a seed has no
    value for a subject): ``seeds`` and ``subjects`` hold codes, in code order."""

    seeds: np.ndarray
    subjects: np.ndarray
    matrix: np.ndarray

    @classmethod
    def by_pair(cls, rows: _Rows, metrics: set[str]) -> dict[int, _SeedSubjectValues]:
        wanted = np.array([i for i, name in enumerate(rows.metrics) if name in metrics], dtype=np.int64)
        sel = (~rows.is_cell) & np.isin(rows.metric, wanted) & np.isfinite(rows.values)
        cell = rows.n_seeds * rows.n_subjects
        keys, inverse = np.unique((rows.pair(sel) * rows.n_seeds + rows.seed[sel]) * rows.n_subjects + rows.subject[sel],
                                  return_inverse=True)
        # one value per (pair, seed, subject); the mean where records repeat a cell
        value = np.bincount(inverse, weights=rows.values[sel], minlength=keys.size) / np.bincount(inverse, minlength=keys.size)
        pair, seed, subject = keys // cell, keys % cell // rows.n_subjects, keys % rows.n_subjects
        # rows are sorted by (pair, seed, subject): count each pair's seeds from where a seed starts
        seed_starts = np.r_[True, (pair[1:] != pair[:-1]) | (seed[1:] != seed[:-1])] if keys.size else np.zeros(0, bool)
        out = {}
        for a, b in zip(*_segments(pair)):
            n_seeds = int(np.count_nonzero(seed_starts[a:b]))
            n = (b - a) // n_seeds
            subjects = subject[a:b].reshape(n_seeds, n) if n * n_seeds == b - a else None
            if subjects is not None and (subjects == subjects[0]).all():  # every seed has the same subjects: a reshape
                out[int(pair[a])] = cls(seed[a:b:n], subjects[0], value[a:b].reshape(n_seeds, n))
                continue
            seeds, i = np.unique(seed[a:b], return_inverse=True)
            names, j = np.unique(subject[a:b], return_inverse=True)
            matrix = np.full((seeds.size, names.size), math.nan)
            matrix[i.ravel(), j.ravel()] = value[a:b]
            out[int(pair[a])] = cls(seeds, names, matrix)
        return out

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def aligned(self, other: _SeedSubjectValues) -> tuple[np.ndarray, np.ndarray]:
        """This matrix and ``other``'s on the seeds and subjects both have."""
        _, si, so = np.intersect1d(self.seeds, other.seeds, return_indices=True)
        _, ji, jo = np.intersect1d(self.subjects, other.subjects, return_indices=True)
        return self.matrix[np.ix_(si, ji)], other.matrix[np.ix_(so, jo)]


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the runs of equal values of a sorted array."""
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate([[0], change]), np.concatenate([change, [keys.size]])


def _bootstrap_rows(num: np.ndarray, den: np.ndarray, resamples: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Percentile intervals of sum(num)/sum(den) for every row of (P, m) ``num``/``den`` at once,
    the same numbers :func:`uadbench.evaluation.stats.bootstrap_ratio_ci` gives row by row."""
    out = np.full((num.shape[0], 2), math.nan)
    alpha = (1.0 - level) / 2.0
    for start in range(0, num.shape[0], 1024):
        stop = min(start + 1024, num.shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            stats = (num[start:stop] @ resamples.T) / (den[start:stop] @ resamples.T)
        if np.isfinite(stats).all():
            out[start:stop] = np.quantile(stats, [alpha, 1.0 - alpha], axis=1).T
        else:
            for i in range(start, stop):
                out[i] = bootstrap_ratio_ci(num[i], den[i], resamples=resamples, level=level)
    return out


def _intervals(rows: _Rows, values: Mapping[int, _SeedSubjectValues], stat_pairs: np.ndarray, metrics: Sequence[str], n_bootstrap: int,
               seed: int) -> np.ndarray:
    """(len(stat_pairs), 2) two-level bootstrap intervals of the mean over seeds and subjects, for
    the pairs of ``metrics`` with at least two subjects (NaN elsewhere): seeds drawn with
    replacement, and subjects drawn once for all drawn seeds (every seed was evaluated on the same
    test subjects), :func:`uadbench.evaluation.stats.two_level_resamples`. Pairs of one (seeds,
    subjects) shape share one set of resamples; a ratio metric resamples its numerator and
    denominator together over the seeds and subjects that have both."""
    ci = np.full((stat_pairs.size, 2), math.nan)
    if n_bootstrap < 1:
        return ci
    row_of_pair = {int(p): i for i, p in enumerate(stat_pairs)}
    resamples: dict[tuple[int, int], np.ndarray] = {}

    def resamples_of(shape: tuple[int, int]) -> np.ndarray:
        if shape not in resamples:
            resamples[shape] = two_level_resamples(*shape, n_bootstrap=n_bootstrap, seed=seed)
        return resamples[shape]

    # plain means: every pair of one shape in one matrix product; a missing value weighs nothing
    by_shape: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for pair, v in values.items():
        name = rows.metrics[pair % rows.n_metrics]
        if name in metrics and name not in RATIOS and pair in row_of_pair and v.shape[1] >= 2:
            by_shape.setdefault(v.shape, []).append((row_of_pair[pair], v.matrix.ravel()))
    for shape, items in by_shape.items():
        x = np.stack([flat for _, flat in items])
        present = np.isfinite(x)
        ci[[i for i, _ in items]] = _bootstrap_rows(np.where(present, x, 0.0), present.astype(np.float64), resamples_of(shape))

    # ratios of sums: the numerator and denominator of each (seed, subject) resampled together
    for ratio, parts in RATIOS.items():
        if ratio not in metrics or ratio not in rows.metrics or any(p not in rows.metrics for p in parts):
            continue
        r_code, top_code, bottom_code = (rows.metrics.index(x) for x in (ratio, *parts))
        for i, pair in enumerate(stat_pairs):
            group, metric = divmod(int(pair), rows.n_metrics)
            top, bottom = values.get(group * rows.n_metrics + top_code), values.get(group * rows.n_metrics + bottom_code)
            if metric != r_code or top is None or bottom is None:
                continue
            num, den = top.aligned(bottom)
            if num.shape[1] >= 2:
                present = np.isfinite(num) & np.isfinite(den)
                ci[i] = bootstrap_ratio_ci(np.where(present, num, 0.0).ravel(), np.where(present, den, 0.0).ravel(),
                                           resamples=resamples_of(num.shape))
    return ci


# -- 4. the facts of each group --------------------------------------------------------------------------------
def _group_facts(tidy: pd.DataFrame, rows: _Rows, lookup: Mapping[tuple, tuple]) -> pd.DataFrame:
    """One row per group: what every cell of it shares, its seeds, and its mean costs."""
    cells = tidy.loc[rows.is_cell, ["grid", "method", "preset", "shift_name", "severity", "seed", "device", "precision"]].assign(
        group=rows.group[rows.is_cell]).drop_duplicates(["group", "seed"])
    facts = cells.groupby("group", sort=True).agg(
        grid=("grid", "first"), method=("method", "first"), preset=("preset", "first"), shift_name=("shift_name", "first"),
        severity=("severity", "first"), n_seeds=("seed", "nunique"), device=("device", join_distinct), precision=("precision", join_distinct))
    facts.index = pd.MultiIndex.from_tuples([rows.groups[g] for g in facts.index], names=GROUP)
    for col in ("grid", "method", "preset", "shift_name"):
        facts[col] = facts[col].astype(str)
    for name, metric in [(k, f"cost.{k}") for k in COST] + [("brain_prevalence", "brain_prevalence")]:
        facts[name] = [float(lookup.get((*k, metric), (math.nan,))[0]) for k in facts.index]
    return facts


def summarise_frame(tidy: pd.DataFrame, *, metrics: Sequence[str] = TABLE_METRICS + SHIFT_METRICS, n_bootstrap: int = N_BOOTSTRAP,
                    seed: int = 0) -> Summary:
    """Means, stds and seeds of every (cell group, metric) of ``tidy``; two-level bootstrap
    intervals and seeds × subjects values for ``metrics`` (those the tables show)."""
    # 1. one integer per (spec, dataset, shift, kind, label) group, per metric and per subject
    rows = _Rows.of(tidy)

    # 2. mean, std and count over seeds of the cell rows
    pairs, mean, std, count = _over_seeds(rows)

    # 3. seeds × subjects values of the metrics the tables show (and the parts of their ratios), and
    #    their two-level bootstrap intervals
    values = _SeedSubjectValues.by_pair(rows, set(metrics) | {part for m in metrics for part in RATIOS.get(m, ())})
    ci = _intervals(rows, values, pairs, metrics, n_bootstrap, seed)
    names = np.asarray(rows.subjects, dtype=object)
    matrices = {rows.key(p): (rows.seeds[v.seeds], names[v.subjects], v.matrix) for p, v in values.items()}

    index = pd.MultiIndex.from_tuples([rows.key(p) for p in pairs], names=[*GROUP, "metric"])
    stats = pd.DataFrame({"mean": mean, "std": std, "n": count.astype(np.int64), "ci_low": ci[:, 0], "ci_high": ci[:, 1]}, index=index)
    lookup = dict(zip(index, zip(mean, std, count, ci[:, 0], ci[:, 1])))

    # 4. facts of each group: the same for every metric row; costs averaged over seeds (and cells)
    return Summary(stats, _group_facts(tidy, rows, lookup), matrices, lookup)


def summarise(records: Sequence[ResultRecord | Mapping[str, Any]]) -> list[dict]:
    """One dict per (dataset, shift, method): ``(mean, std)`` over seeds of every metric, costs,
    n_seeds; the floor's rows have ``label == "floor"``."""
    recs = coerce_records(records)
    summary = summarise_frame(tidy_frame(recs, subjects=False))
    out = []
    for key, fact in summary.facts.iterrows():
        spec, dataset, shift, kind, label = key
        row = {"spec_hash": spec, "dataset": dataset, "shift": shift, "label": label, "method": fact["method"], "preset": fact["preset"],
               "n_seeds": int(fact["n_seeds"]), "kind": kind}
        stats = summary.stats.xs(key, level=list(range(5)), drop_level=True) if len(summary.stats) else summary.stats
        for metric, s in stats.iterrows():
            if not str(metric).startswith("cost."):
                row[metric] = (float(s["mean"]), float(s["std"]))
        for k in COST:
            row[k] = float(fact[k]) if fact[k] == fact[k] else math.nan
        out.append(row)
    return out


# -- 5. ranks and the "not different from the best" test ---------------------------------------------------------
def rank(values: Sequence[float] | np.ndarray, higher_is_better: bool, method: str = "average") -> np.ndarray:
    """Ranks of the finite values (1 = best; ties share the mean rank, or the lowest with
    ``method="min"``); NaN stays NaN."""
    from scipy.stats import rankdata

    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, math.nan)
    ok = np.isfinite(x)
    if ok.any():
        out[ok] = rankdata(-x[ok] if higher_is_better else x[ok], method=method)
    return out


def mean_rank(columns: Sequence[tuple[str, Sequence[float]]], n_rows: int) -> np.ndarray:
    """Each row's mean rank over columns of (metric name, values), NaN where it has none."""
    if not columns:
        return np.full(n_rows, math.nan)
    ranks = np.stack([rank(v, describe(metric).higher_is_better) for metric, v in columns])
    counts = np.isfinite(ranks).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(ranks, axis=0) / counts, math.nan)


def best_and_marks(summary: Summary, spec: str, dataset: str, shift: str, metric: str, labels: list[str],
                   means: Mapping[str, float], test: bool) -> tuple[set[str], set[str]]:
    """The best rows of a column (ties included) and, with ``test``, the rows the seed-aware test
    cannot separate from the best at level :data:`ALPHA`:
    :func:`uadbench.evaluation.stats.compare_seeds` (a two-level bootstrap of the difference of
    means: the test subjects paired, each method's seeds resampled; :data:`TEST_RESAMPLES`
    resamples) over the seeds and subjects both have. A row is only tested when it and the best
    have at least :data:`MIN_SEEDS` seeds."""
    metric_info = describe(metric)
    finite = {label: v for label, v in means.items() if math.isfinite(v)}
    if not finite or metric_info.upper_bound:
        return set(), set()
    top = max(finite.values()) if metric_info.higher_is_better else min(finite.values())
    tol = 1e-12 * max(1.0, abs(top))
    best = {label for label, v in finite.items() if abs(v - top) <= tol}
    if not test or len(finite) < 2:
        return best, set()
    leader = sorted(best, key=labels.index)[0]
    ref = summary.matrix((spec, dataset, shift, "method", leader), metric)
    if ref is None or len(ref) < MIN_SEEDS:
        return best, set()
    tested: dict[str, pd.DataFrame] = {}
    for label in finite:
        other = None if label in best else summary.matrix((spec, dataset, shift, "method", label), metric)
        if other is not None and len(other) >= MIN_SEEDS and len(ref.columns.intersection(other.columns)) >= 2:
            tested[label] = other.reindex(columns=ref.columns)  # the leader's subjects; a subject the other lacks is NaN
    results = compare_seeds_many(ref.to_numpy(), [m.to_numpy() for m in tested.values()], n_bootstrap=TEST_RESAMPLES, seed=0,
                                 improvement=False)
    marks = {label for label, result in zip(tested, results) if result.p_value >= ALPHA}
    return best, marks
