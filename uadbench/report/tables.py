"""Result records -> a tidy pandas frame -> leaderboard tables (Markdown, LaTeX, HTML, CSV, text).

Every table is rendered from one frame, :func:`tidy_frame`: a row per cell × metric and a row per
cell × subject × metric, for each method and for the floor. :func:`summarise_frame` reduces it
once (mean ± std over seeds, a bootstrap 95 % interval over subjects, per-subject seed means for
the paired tests) and the table builders lay the summary out:

- :func:`leaderboard_table`: rows = methods (and the ``floor``), columns = dataset × metric, the
  unshifted cells; best in bold, "not different from the best" marked (a paired permutation test
  over subjects), cost columns and the mean rank across datasets;
- :func:`shift_tables`: one per dataset and shift family: each metric's value and change from the
  unshifted cell, and each method's change of place.

A :class:`Table` holds plain cell text plus what is bold, what is marked and the sort keys; the
renderers (``to_markdown`` through tabulate, ``Styler.to_latex`` with booktabs, ``Styler.to_html``
with a small inline sort script) add the markup. Tables never mix benchmark versions: records of
different spec hashes raise :class:`~uadbench.errors.UadbenchError`, unless ``per_spec=True``
asks for one set of tables per hash.

No torch, no MLflow, no matplotlib here.
"""

from __future__ import annotations

import html as _html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import pandas as pd

from uadbench.errors import UadbenchError
from uadbench.evaluation.metrics import MetricInfo, metric_info
from uadbench.evaluation.stats import bootstrap_ratio_ci, bootstrap_resamples, paired_permutation_test
from uadbench.records import NO_SHIFT, Failure, ResultRecord, coerce_records, shift_label

__all__ = [
    "ALPHA",
    "FLOOR",
    "TABLE_METRICS",
    "Summary",
    "Table",
    "check_one_spec",
    "failures_markdown",
    "leaderboard_csv",
    "leaderboard_html",
    "leaderboard_latex",
    "leaderboard_markdown",
    "leaderboard_table",
    "leaderboard_terminal",
    "metric_title",
    "shift_tables",
    "summarise",
    "summarise_frame",
    "summary_csv",
    "tables_for",
    "tables_from_summary",
    "tidy_frame",
]

FLOOR = "floor"
ALPHA = 0.05
PERMUTATION_ROUNDS = 10_000
N_BOOTSTRAP = 1000

_TITLES = {
    "auprc": "AUPRC",
    "auroc": "AUROC",
    "dice@val-bisection": "Dice@val-bisection",
    "dice@val-exact": "Dice@val-exact",
    "dice@healthy-fpr@5%": "Dice@healthy-fpr@5%",
    "fp_volume_ml@val-bisection": "FP ml on healthy@val-bisection",
    "l1_ratio": "l1-ratio",
    "dice@oracle": "Dice@oracle (upper bound)",
}
#: The leaderboard's metric columns: the fair ones, then the upper bound (never bold, never ranked).
TABLE_METRICS = tuple(_TITLES)
#: The metrics of the shift tables.
SHIFT_METRICS = ("auprc", "auroc", "dice@val-bisection", "dice@healthy-fpr@5%", "fp_volume_ml@val-bisection", "entropy_diff")
#: The shift tables' metrics that set a method's place (the lesion metrics; the healthy false
#: positives and the entropy difference are shown beside them, not ranked).
PLACE_METRICS = SHIFT_METRICS[:4]
_SHIFT_TITLES = {"entropy_diff": "Entropy diff"}  # titles of shift-table metrics the leaderboard does not show
#: Shown without a best: the entropy difference is signed, and neither sign is better.
_UNRANKED = ("entropy_diff",)
#: Metrics aggregated as a ratio of sums over subjects: (numerator, denominator) per-volume metrics.
_RATIOS = {"l1_ratio": ("l1_lesion", "l1_healthy")}
_COST = ("num_parameters", "train_seconds", "seconds_per_volume")


def metric_title(key: str) -> str:
    """A metric's column title (``dice@oracle`` says it is an upper bound)."""
    return _TITLES.get(key, _SHIFT_TITLES.get(key, key))


def _info(key: str) -> MetricInfo:
    try:
        return metric_info(key)
    except UadbenchError:
        return MetricInfo(key, key)


# -- 1. the tidy frame --------------------------------------------------------------------------------
_FACTS = ("spec_hash", "grid", "dataset", "split", "shift", "shift_name", "severity", "kind", "label", "method", "preset",
          "seed", "device", "precision", "threads")
_CATEGORICAL = ("spec_hash", "grid", "dataset", "split", "shift", "shift_name", "kind", "label", "method", "preset", "device", "precision")


def _sources(records: Sequence[ResultRecord]) -> list[tuple[ResultRecord, str]]:
    """Each record as a method's cell, then one floor per (spec, dataset, shift, seed)."""
    out = [(r, "method") for r in records]
    seen: set[tuple] = set()
    for r in records:
        key = (r.spec_hash, r.dataset, r.shift, r.severity, r.seed)
        if r.floor.get("metrics") and key not in seen:
            seen.add(key)
            out.append((r, FLOOR))
    return out


@lru_cache(maxsize=4096)
def _shift_label(name: str, severity: float | None) -> str:
    return shift_label(name, severity)


def _facts(r: ResultRecord, kind: str) -> tuple:
    floor = kind == FLOOR
    return (r.spec_hash, r.grid, r.dataset, r.split, _shift_label(r.shift, r.severity), r.shift,
            math.nan if r.severity is None else float(r.severity),
            kind, FLOOR if floor else r.label, FLOOR if floor else r.method, "" if floor else r.preset, r.seed,
            "" if floor else r.device, "" if floor else r.precision, 0 if floor else r.threads)


def tidy_frame(records: Iterable[ResultRecord | Mapping[str, Any]], *, subjects: bool = True) -> pd.DataFrame:
    """Records as one tidy frame: a row per cell × metric (``level == "cell"``, the cell's
    aggregate) and, with ``subjects``, a row per cell × subject × metric (``level == "subject"``,
    the per-volume values).

    Columns: spec_hash, grid, dataset, split, shift (``none``, ``gamma@1.5``), shift_name,
    severity, kind (``method`` or ``floor``), label, method, preset, seed, device, precision,
    threads, level, subject, metric, value; text columns are categorical. Costs
    are cell rows with metrics ``cost.num_parameters``, ``cost.train_seconds``,
    ``cost.seconds_per_volume``. The floor (the protocol's result for a map constant on the brain
    mask) appears once per (spec hash, dataset, shift, seed), as ``label == "floor"``, with its
    ``brain_prevalence`` (lesion voxels / brain voxels, mean over lesioned test volumes) as a cell
    metric; records without one (written before floors) add none.
    """
    recs = coerce_records(records)
    sources = _sources(recs)
    metric_codes: dict[str, int] = {}
    subject_codes: dict[str, int] = {}
    by_keys: dict[tuple, np.ndarray] = {}  # a metric-name tuple -> its codes (subjects share them)

    def codes_of(keys: tuple) -> np.ndarray:
        codes = by_keys.get(keys)
        if codes is None:
            codes = by_keys[keys] = np.array([metric_codes.setdefault(k, len(metric_codes)) for k in keys], dtype=np.int32)
        return codes

    c_counts: list[int] = []
    c_codes: list[np.ndarray] = []
    c_values: list[Any] = []
    s_counts: list[int] = []
    s_codes: list[np.ndarray] = []
    s_values: list[Any] = []
    s_subject: list[int] = []
    s_len: list[int] = []
    subject_code = subject_codes.setdefault
    for r, kind in sources:
        if kind == FLOOR:
            metrics = dict(r.floor.get("metrics", {}))
            if isinstance(r.floor.get("brain_prevalence"), (int, float)):
                metrics["brain_prevalence"] = r.floor["brain_prevalence"]
            per_volume, cost = r.floor.get("per_volume", {}), {}
        else:
            metrics, per_volume, cost = dict(r.metrics), r.per_volume, r.cost
        for k in _COST:
            if isinstance(cost.get(k), (int, float)):
                metrics[f"cost.{k}"] = cost[k]
        c_codes.append(codes_of(tuple(metrics)))
        c_values.extend(metrics.values())
        c_counts.append(len(metrics))
        if subjects:
            n = 0
            for values in per_volume.values():
                keys = tuple(values)
                codes = by_keys.get(keys)
                s_codes.append(codes if codes is not None else codes_of(keys))
                s_values.extend(values.values())
                s_len.append(len(keys))
                n += len(keys)
            s_subject.extend([subject_code(name, len(subject_codes)) for name in per_volume])
            s_counts.append(n)
    n_cell = len(c_values)
    n_subject = len(s_values)
    src = np.concatenate([np.repeat(np.arange(len(sources), dtype=np.int32), np.asarray(c_counts, dtype=np.int64)),
                          np.repeat(np.arange(len(sources), dtype=np.int32), np.asarray(s_counts or [0] * len(sources), dtype=np.int64))])
    facts = pd.DataFrame([_facts(r, kind) for r, kind in sources], columns=list(_FACTS))
    out: dict[str, Any] = {}
    for col in _FACTS:
        if col in _CATEGORICAL:
            cat = pd.Categorical(facts[col].astype(str))
            out[col] = pd.Categorical.from_codes(np.asarray(cat.codes)[src], categories=cat.categories)
        else:
            out[col] = facts[col].to_numpy(dtype=np.float64 if col == "severity" else np.int32)[src]
    out["level"] = pd.Categorical.from_codes(np.repeat(np.array([0, 1], dtype=np.int8), [n_cell, n_subject]),
                                             categories=["cell", "subject"])
    subject = np.full(n_cell + n_subject, -1, dtype=np.int32)
    if n_subject:
        subject[n_cell:] = np.repeat(np.asarray(s_subject, dtype=np.int32), np.asarray(s_len, dtype=np.int64))
    out["subject"] = pd.Categorical.from_codes(subject, categories=list(subject_codes))
    metric = np.concatenate(c_codes + s_codes) if c_codes or s_codes else np.zeros(0, np.int32)
    out["metric"] = pd.Categorical.from_codes(metric, categories=list(metric_codes))
    out["value"] = np.array(c_values + s_values, dtype=np.float64)
    return pd.DataFrame(out)


# -- 2. the summary -----------------------------------------------------------------------------------
_GROUP = ["spec_hash", "dataset", "shift", "kind", "label"]
_STATS = ("mean", "std", "n", "ci_low", "ci_high")


@dataclass
class Summary:
    """The tidy frame reduced once for every table.

    ``stats``: indexed by (spec_hash, dataset, shift, kind, label, metric): mean, std (over seeds;
    0 for one seed), n (seeds), ci_low, ci_high (bootstrap 95 % over subjects of the subjects' seed
    means; a ratio of sums for l1-ratio). ``facts``: indexed by (spec_hash, dataset, shift, kind,
    label): grid, method, preset, shift_name, severity, n_seeds, device, precision, mean costs and
    the floor's brain_prevalence. ``subject_means``: (subjects, seed means) by (spec_hash, dataset,
    shift, kind, label, metric), for the paired tests."""

    stats: pd.DataFrame
    facts: pd.DataFrame
    subject_means: dict[tuple, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _lookup: dict[tuple, tuple] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._lookup:
            self._lookup = dict(zip(self.stats.index, self.stats[list(_STATS)].itertuples(index=False, name=None)))

    def specs(self) -> list[str]:
        return list(dict.fromkeys(self.facts.index.get_level_values("spec_hash")))

    @cached_property
    def fact_rows(self) -> dict[tuple, dict[str, Any]]:
        """``facts`` as a dict of dicts, by group (for lookups in loops)."""
        return self.facts.to_dict("index")

    def value(self, key: tuple, metric: str, column: str = "mean") -> float:
        row = self._lookup.get((*key, metric))
        return math.nan if row is None else float(row[_STATS.index(column)])

    def subjects(self, key: tuple, metric: str) -> pd.Series | None:
        """Per-subject seed means of ``metric`` in group ``key`` (None without any)."""
        found = self.subject_means.get((*key, metric))
        return None if found is None else pd.Series(found[1], index=found[0])


def _join(values: Iterable[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values if str(v)}))


def _codes(column: pd.Series) -> tuple[np.ndarray, list]:
    """Integer codes of a column and its categories as a list (-1: missing)."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(str).astype("category")
    return np.asarray(column.cat.codes, dtype=np.int64), column.cat.categories.tolist()


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the runs of equal values of a sorted array."""
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate([[0], change]), np.concatenate([change, [keys.size]])


def _bootstrap_rows(num: np.ndarray, den: np.ndarray, resamples: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Percentile intervals of sum(num)/sum(den) for every row of (P, n) ``num``/``den`` at once,
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


def summarise_frame(tidy: pd.DataFrame, *, metrics: Sequence[str] = TABLE_METRICS + SHIFT_METRICS, n_bootstrap: int = N_BOOTSTRAP,
                    seed: int = 0) -> Summary:
    """Means, stds and seeds of every (cell group, metric) of ``tidy``; subject intervals and
    subject means for ``metrics`` (those the tables show)."""
    # 1. one integer per (spec, dataset, shift, kind, label) group and per metric
    codes, cats = zip(*(_codes(tidy[c]) for c in _GROUP))
    dims = [max(len(c), 1) for c in cats]
    group_key = np.ravel_multi_index(codes, dims) if len(tidy) else np.zeros(0, np.int64)
    group_of_row, group_ids = pd.factorize(group_key)  # groups in the order they first appear
    group_of_row = group_of_row.astype(np.int64)
    group_tuples = [tuple(str(cats[j][i]) for j, i in enumerate(np.unravel_index(k, dims))) for k in group_ids]
    metric_codes, metric_cats = _codes(tidy["metric"])
    n_metrics = max(len(metric_cats), 1)
    is_cell = np.asarray(tidy["level"] == "cell")
    values = tidy["value"].to_numpy(dtype=np.float64)

    # 2. mean, std and count over seeds of the cell rows
    gm = group_of_row[is_cell] * n_metrics + metric_codes[is_cell]
    v = values[is_cell]
    finite = np.isfinite(v)
    keys, inverse = np.unique(gm, return_inverse=True)
    count = np.bincount(inverse, weights=finite, minlength=keys.size)
    total = np.bincount(inverse, weights=np.where(finite, v, 0.0), minlength=keys.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        dev = np.where(finite, v - mean[inverse], 0.0)
        std = np.sqrt(np.bincount(inverse, weights=dev * dev, minlength=keys.size) / (count - 1))
    std = np.where(count > 1, std, np.where(count == 1, 0.0, math.nan))
    stat_groups, stat_metrics = keys // n_metrics, keys % n_metrics
    ci = np.full((keys.size, 2), math.nan)

    # 3. per-subject seed means of the metrics the tables show, and their bootstrap intervals
    wanted_names = set(metrics) | {part for m in metrics for part in _RATIOS.get(m, ())}
    wanted = np.array([i for i, name in enumerate(metric_cats) if name in wanted_names], dtype=np.int64)
    subject_means: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    sel = (~is_cell) & np.isin(metric_codes, wanted) & np.isfinite(values)
    subject_codes, subject_cats = _codes(tidy["subject"])
    n_subjects = max(len(subject_cats), 1)
    if sel.any():
        skey = (group_of_row[sel] * n_metrics + metric_codes[sel]) * n_subjects + subject_codes[sel]
        ukeys, sinv = np.unique(skey, return_inverse=True)
        smean = np.bincount(sinv, weights=values[sel], minlength=ukeys.size) / np.bincount(sinv, minlength=ukeys.size)
        pair = ukeys // n_subjects
        subj = ukeys % n_subjects
        starts, ends = _segments(pair)
        names = np.asarray(subject_cats, dtype=object)
        seg_of_pair = {}
        for a, b in zip(starts, ends):
            g, m = divmod(int(pair[a]), n_metrics)
            key = (*group_tuples[g], str(metric_cats[m]))
            subject_means[key] = (names[subj[a:b]], smean[a:b])
            seg_of_pair[int(pair[a])] = (a, b)
        row_of_pair = {int(k): i for i, k in enumerate(keys)}
        by_n: dict[int, list[tuple[int, int, int]]] = {}
        resamples: dict[int, np.ndarray] = {}
        for p, (a, b) in seg_of_pair.items():
            name = str(metric_cats[p % n_metrics])
            if name in metrics and name not in _RATIOS and p in row_of_pair and b - a >= 2:
                by_n.setdefault(b - a, []).append((row_of_pair[p], a, b))
        for n, items in by_n.items():
            if n_bootstrap < 1:
                break
            resamples[n] = bootstrap_resamples(n, n_bootstrap=n_bootstrap, seed=seed)
            rows = np.array([i for i, _, _ in items])
            num = np.stack([smean[a:b] for _, a, b in items])
            ci[rows] = _bootstrap_rows(num, np.ones_like(num), resamples[n])
        for ratio, (top, bottom) in _RATIOS.items():
            if ratio not in metrics or ratio not in metric_cats or n_bootstrap < 1:
                continue
            r_code, t_code, b_code = (metric_cats.index(x) if x in metric_cats else -1 for x in (ratio, top, bottom))
            for i in np.flatnonzero(stat_metrics == r_code):
                g = int(stat_groups[i])
                t, b = seg_of_pair.get(g * n_metrics + t_code), seg_of_pair.get(g * n_metrics + b_code)
                if t is None or b is None:
                    continue
                common, ti, bi = np.intersect1d(subj[t[0]:t[1]], subj[b[0]:b[1]], return_indices=True)
                if common.size < 2:
                    continue
                if common.size not in resamples:
                    resamples[common.size] = bootstrap_resamples(common.size, n_bootstrap=n_bootstrap, seed=seed)
                ci[i] = bootstrap_ratio_ci(smean[t[0]:t[1]][ti], smean[b[0]:b[1]][bi], resamples=resamples[common.size])

    index = pd.MultiIndex.from_tuples([(*group_tuples[g], str(metric_cats[m])) for g, m in zip(stat_groups, stat_metrics)],
                                      names=[*_GROUP, "metric"])
    stats = pd.DataFrame({"mean": mean, "std": std, "n": count.astype(np.int64), "ci_low": ci[:, 0], "ci_high": ci[:, 1]}, index=index)

    # 4. facts of each group: the same for every metric row; costs averaged over seeds (and cells)
    cells = tidy.loc[is_cell, ["grid", "method", "preset", "shift_name", "severity", "seed", "device", "precision"]].assign(
        group=group_of_row[is_cell]).drop_duplicates(["group", "seed"])
    facts = cells.groupby("group", sort=True).agg(
        grid=("grid", "first"), method=("method", "first"), preset=("preset", "first"), shift_name=("shift_name", "first"),
        severity=("severity", "first"), n_seeds=("seed", "nunique"), device=("device", _join), precision=("precision", _join))
    facts.index = pd.MultiIndex.from_tuples([group_tuples[g] for g in facts.index], names=_GROUP)
    for col in ("grid", "method", "preset", "shift_name"):
        facts[col] = facts[col].astype(str)
    lookup = dict(zip(index, zip(mean, std, count, ci[:, 0], ci[:, 1])))
    for name, metric in [(k, f"cost.{k}") for k in _COST] + [("brain_prevalence", "brain_prevalence")]:
        facts[name] = [float(lookup.get((*k, metric), (math.nan,))[0]) for k in facts.index]
    return Summary(stats, facts, subject_means, lookup)


def check_one_spec(records: Sequence[ResultRecord]) -> str:
    """The one spec hash of ``records``; an error naming them when there are several."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.spec_hash] = counts.get(r.spec_hash, 0) + 1
    if len(counts) > 1:
        listed = ", ".join(f"{h} ({n} records)" for h, n in counts.items())
        raise UadbenchError(f"the records come from {len(counts)} benchmark versions (spec hashes {listed}) and one table never "
                            "mixes them; keep one grid's records, or render one table per spec hash (--per-spec)")
    return next(iter(counts), "")


# -- 3. tables ------------------------------------------------------------------------------------------
@dataclass
class Table:
    """One table: plain cell text and what the renderers mark up.

    ``cells``: strings, index = row labels, columns = (group, column title) (group "" when the
    table has one group); ``bold``/``marked``: booleans of the same shape (marked = not different
    from the best); ``keys``: sort keys (numbers, or strings for text columns), ``better``: per
    column +1 (higher is better), -1 (lower) or 0."""

    name: str
    title: str
    caption: str
    spec_hash: str
    cells: pd.DataFrame
    bold: pd.DataFrame
    marked: pd.DataFrame
    keys: pd.DataFrame
    better: list[int]
    row_name: str = "Method"


def _fmt_value(mean: float, std: float, n: int, info: MetricInfo, lo: float = math.nan, hi: float = math.nan) -> str:
    if not math.isfinite(mean):
        return "–"
    scale = 100.0 if info.percent else 1.0
    text = f"{mean * scale:.2f}"
    if n > 1:
        text += f" ± {std * scale:.2f}"
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{lo * scale:.1f}, {hi * scale:.1f}]"
    return text


def _params(n: float) -> str:
    if n is None or not math.isfinite(n):
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return f"{int(n)}"


def _seconds(x: float, digits: int) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _rank(values: Sequence[float] | np.ndarray, higher_is_better: bool, method: str = "average") -> np.ndarray:
    """Ranks of the finite values (1 = best; ties share the mean rank, or the lowest with
    ``method="min"``); NaN stays NaN."""
    from scipy.stats import rankdata

    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, math.nan)
    ok = np.isfinite(x)
    if ok.any():
        out[ok] = rankdata(-x[ok] if higher_is_better else x[ok], method=method)
    return out


def _mean_rank(columns: Sequence[tuple[str, Sequence[float]]], n_rows: int) -> np.ndarray:
    """Each row's mean rank over columns of (metric name, values), NaN where it has none."""
    if not columns:
        return np.full(n_rows, math.nan)
    ranks = np.stack([_rank(v, _info(metric).higher_is_better) for metric, v in columns])
    counts = np.isfinite(ranks).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(ranks, axis=0) / counts, math.nan)


def _best_and_marks(summary: Summary, spec: str, dataset: str, shift: str, metric: str, labels: list[str],
                    means: Mapping[str, float], test: bool) -> tuple[set[str], set[str]]:
    """The best rows of a column (ties included) and, with ``test``, the rows a two-sided paired
    permutation test over subjects cannot separate from the best at level ALPHA."""
    info = _info(metric)
    finite = {label: v for label, v in means.items() if math.isfinite(v)}
    if not finite or info.upper_bound:
        return set(), set()
    top = max(finite.values()) if info.higher_is_better else min(finite.values())
    tol = 1e-12 * max(1.0, abs(top))
    best = {label for label, v in finite.items() if abs(v - top) <= tol}
    if not test or len(finite) < 2:
        return best, set()
    leader = sorted(best, key=labels.index)[0]
    ref = summary.subjects((spec, dataset, shift, "method", leader), metric)
    marks: set[str] = set()
    if ref is None:
        return best, marks
    for label in finite:
        if label in best:
            continue
        other = summary.subjects((spec, dataset, shift, "method", label), metric)
        if other is None:
            continue
        common = ref.index.intersection(other.index)
        if len(common) < 2:
            continue
        p = paired_permutation_test(ref.reindex(common).to_numpy(), other.reindex(common).to_numpy(), rounds=PERMUTATION_ROUNDS, seed=0)
        if p >= ALPHA:
            marks.add(label)
    return best, marks


def _groups(summary: Summary, spec: str, shift: str, kind: str) -> list[tuple]:
    return [k for k in summary.facts.index if k[0] == spec and k[2] == shift and k[3] == kind]


def _caption_common(summary: Summary, spec: str, datasets: list[str]) -> str:
    """What the floor row is, with the brain-voxel prevalence of each dataset."""
    facts = summary.fact_rows
    if not any(k[0] == spec and k[1] in datasets and k[3] == FLOOR for k in facts):
        return "No floor row: these records were written before uadbench recorded the floor (rerun the cells to add it)."
    prevalences = []
    for ds in datasets:
        prev = facts.get((spec, ds, NO_SHIFT, FLOOR, FLOOR), {}).get("brain_prevalence", math.nan)
        if math.isfinite(prev):
            prevalences.append(f"{prev * 100:.2f} % ({ds})" if len(datasets) > 1 else f"{prev * 100:.2f} %")
    floor = ("floor: the same protocol on a map constant on the brain mask (no learning, no intensity); the protocol zeroes maps "
             "outside the eroded brain, so this map already ranks brain voxels above the background")
    if prevalences:
        floor += f"; brain-voxel lesion prevalence {', '.join(prevalences)}"
    return floor + "."


def leaderboard_table(summary: Summary, spec: str) -> Table | None:
    """The unshifted cells of ``spec``: rows = methods and the floor, columns = dataset × metric,
    then cost and the mean rank; None when no unshifted cell exists."""
    groups = _groups(summary, spec, NO_SHIFT, "method")
    if not groups:
        return None
    facts = summary.fact_rows
    labels = list(dict.fromkeys(k[4] for k in groups))
    datasets = list(dict.fromkeys(k[1] for k in groups))
    has_floor = bool(_groups(summary, spec, NO_SHIFT, FLOOR))
    rows = labels + ([FLOOR] if has_floor else [])
    one = len(datasets) == 1
    columns: list[tuple[str, str]] = []
    text: dict[tuple, list[str]] = {}
    bold: dict[tuple, list[bool]] = {}
    marked: dict[tuple, list[bool]] = {}
    keys: dict[tuple, list[Any]] = {}
    better: list[int] = []
    for_rank: list[tuple[str, list[float]]] = []  # (metric, the labels' means) of every fair column
    for ds in datasets:
        for metric in TABLE_METRICS:
            info = _info(metric)
            group_of = {label: (spec, ds, NO_SHIFT, FLOOR if label == FLOOR else "method", label) for label in rows}
            if not any(math.isfinite(summary.value(group_of[label], metric)) for label in rows):
                continue
            means = {label: summary.value(group_of[label], metric) for label in labels}
            col = ("" if one else ds, f"{metric_title(metric)} {info.arrow}")
            columns.append(col)
            best, marks = _best_and_marks(summary, spec, ds, NO_SHIFT, metric, labels, means, test=True)
            text[col], keys[col] = [], []
            for label in rows:
                mean, std, n, lo, hi = (summary.value(group_of[label], metric, c) for c in _STATS)
                text[col].append(_fmt_value(mean, std, int(n) if math.isfinite(n) else 0, info, lo, hi))
                keys[col].append(mean if math.isfinite(mean) else None)
            bold[col] = [label in best and len(labels) > 1 for label in rows]
            marked[col] = [label in marks for label in rows]
            better.append(0 if info.upper_bound else (1 if info.higher_is_better else -1))
            if not info.upper_bound:
                for_rank.append((metric, [means[label] for label in labels]))
    # cost: means over the datasets' unshifted cells of each method
    group = "" if one else "Cost"
    mine = {label: [facts[k] for k in groups if k[4] == label] for label in labels}
    floor_cell: list[Any] = ["–"] if has_floor else []
    for title, name, fmt in (("Params", "num_parameters", _params), ("Train s", "train_seconds", lambda x: _seconds(x, 1)),
                             ("s / volume", "seconds_per_volume", lambda x: _seconds(x, 3))):
        vals = [float(np.nanmean([f[name] for f in mine[label]])) if any(math.isfinite(f[name]) for f in mine[label]) else math.nan
                for label in labels]
        columns.append((group, title))
        text[(group, title)] = [fmt(v) for v in vals] + floor_cell
        keys[(group, title)] = [v if math.isfinite(v) else None for v in vals] + [None] * len(floor_cell)
        better.append(-1)
    for title, name in (("Device", "device"), ("Precision", "precision")):
        columns.append((group, title))
        text[(group, title)] = [_join(part for f in mine[label] for part in str(f[name]).split(", ")) or "–" for label in labels] + floor_cell
        keys[(group, title)] = list(text[(group, title)])
        better.append(0)
    # the mean rank over every fair (dataset, metric) column
    rank_col = ("" if one else "Rank", "Mean rank")
    mean_rank = _mean_rank(for_rank, len(labels))
    columns.append(rank_col)
    finite_ranks = mean_rank[np.isfinite(mean_rank)]
    top = finite_ranks.min() if finite_ranks.size else math.nan
    text[rank_col] = [_seconds(r, 2) for r in mean_rank] + floor_cell
    keys[rank_col] = [float(r) if math.isfinite(r) else None for r in mean_rank] + [None] * len(floor_cell)
    bold[rank_col] = [len(labels) > 1 and bool(r == top) for r in mean_rank] + [False] * len(floor_cell)
    better.append(-1)
    for col in columns:
        bold.setdefault(col, [False] * len(rows))
        marked.setdefault(col, [False] * len(rows))
    grid = facts[groups[0]]["grid"]
    presets = {label: mine[label][0]["preset"] for label in labels}
    n_seeds = max(int(max(f["n_seeds"] for k in groups for f in [facts[k]])), 1)
    seeds = f"mean ± std over {n_seeds} seeds, " if n_seeds > 1 else "one seed, "
    caption = (
        f"{grid}: unshifted test cells{' of ' + datasets[0] if one else ''}. Metrics in % (FP ml in ml, l1-ratio a ratio), "
        f"{seeds}[bootstrap 95 % interval over subjects ({N_BOOTSTRAP} resamples)]; ↑/↓ higher/lower is better; best in bold; "
        f"† not different from the best (two-sided paired sign-flip permutation test over subjects, {PERMUTATION_ROUNDS:,} rounds "
        f"or all sign patterns, α = {ALPHA:g}). Dice columns name their threshold: val-bisection (the paper's 10-step search on "
        "the labelled validation split), val-exact (its exact optimum), healthy-fpr@5% (5 % voxel FPR on healthy validation "
        "scans, no labels); Dice@oracle picks each test volume's best threshold with its labels: an upper bound, not a result. "
        f"{_caption_common(summary, spec, datasets)} Mean rank: over every fair dataset × metric column (1 = best). Cost: "
        "parameters, training time, seconds per test volume, device, precision. "
        f"Presets: {', '.join(f'{k} {v}' for k, v in presets.items())}. Benchmark version (spec hash) {spec}."
    )
    title = f"{grid}: {datasets[0]}, no shift" if one else f"{grid}: no shift"
    return _table("leaderboard", title, caption, spec, rows, columns, text, bold, marked, keys, better)


def _table(name: str, title: str, caption: str, spec: str, rows: list[str], columns: list[tuple[str, str]], text: dict, bold: dict,
           marked: dict | None, keys: dict, better: list[int]) -> Table:
    index = pd.Index(rows, name="Method")
    cols = pd.MultiIndex.from_tuples(columns)

    def frame(d: dict) -> pd.DataFrame:
        return pd.DataFrame([[d[c][i] for c in columns] for i in range(len(rows))], index=index, columns=cols)

    marks = frame(marked) if marked is not None else pd.DataFrame(False, index=index, columns=cols)
    return Table(name, title, caption, spec, frame(text), frame(bold).astype(bool), marks.astype(bool), frame(keys), better)


def _places(summary: Summary, spec: str, dataset: str, shift: str, labels: list[str]) -> dict[str, float]:
    """Each method's place (1 = best) by its mean rank over the shift tables' metrics in one cell."""
    means = [(m, [summary.value((spec, dataset, shift, "method", label), m) for label in labels]) for m in PLACE_METRICS]
    places = _rank(_mean_rank(means, len(labels)), higher_is_better=False, method="min")
    return dict(zip(labels, places.tolist()))


def shift_tables(summary: Summary, spec: str) -> list[Table]:
    """One table per dataset and shift family of ``spec``: rows = methods and the floor; for each
    severity, each metric's value with its change from the unshifted cell, and each method's place
    unshifted → shifted."""
    facts = summary.fact_rows
    shifted = [k for k in facts if k[0] == spec and k[2] != NO_SHIFT and k[3] == "method"]
    out = []
    families: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for k in shifted:
        entry = (float(facts[k]["severity"]), k[2])
        family_cells = families.setdefault((k[1], facts[k]["shift_name"]), [])
        if entry not in family_cells:
            family_cells.append(entry)
    for (dataset, family), cells in families.items():
        cells.sort()
        labels = list(dict.fromkeys(k[4] for k in shifted if k[1] == dataset and facts[k]["shift_name"] == family))
        has_floor = any(k[3] == FLOOR and k[0] == spec and k[1] == dataset for k in facts)
        rows = labels + ([FLOOR] if has_floor else [])
        base_place = _places(summary, spec, dataset, NO_SHIFT, labels)
        columns: list[tuple[str, str]] = []
        text: dict[tuple, list[str]] = {}
        bold: dict[tuple, list[bool]] = {}
        keys: dict[tuple, list[Any]] = {}
        better: list[int] = []
        for _, shift in cells:
            for metric in SHIFT_METRICS:
                info = _info(metric)
                scale = 100.0 if info.percent else 1.0
                col = (shift, metric_title(metric) if metric in _UNRANKED else f"{metric_title(metric)} {info.arrow}")
                vals, deltas = [], []
                for label in rows:
                    kind = FLOOR if label == FLOOR else "method"
                    now = summary.value((spec, dataset, shift, kind, label), metric)
                    before = summary.value((spec, dataset, NO_SHIFT, kind, label), metric)
                    vals.append(now)
                    delta = now - before
                    deltas.append(0.0 if abs(delta) * scale < 5e-3 else delta)  # no "-0.00" from rounding noise
                if not np.isfinite(np.asarray(vals, dtype=float)).any():
                    continue
                columns.append(col)
                text[col] = ["–" if not math.isfinite(v) else f"{v * scale:.2f} ({'–' if not math.isfinite(d) else f'{d * scale:+.2f}'})"
                             for v, d in zip(vals, deltas)]
                best, _ = _best_and_marks(summary, spec, dataset, shift, metric, labels, dict(zip(labels, vals)), test=False)
                bold[col] = [label in best and len(labels) > 1 and metric not in _UNRANKED for label in rows]
                keys[col] = [d if math.isfinite(d) else None for d in deltas]
                better.append(0 if metric in _UNRANKED else 1 if info.higher_is_better else -1)
            col = (shift, "Place")
            place = _places(summary, spec, dataset, shift, labels)
            columns.append(col)
            text[col] = [f"{int(base_place[label])} → {int(place[label])}" if math.isfinite(base_place[label]) and math.isfinite(place[label])
                         else "–" for label in labels] + (["–"] if has_floor else [])
            keys[col] = [float(place[label] - base_place[label]) if math.isfinite(place[label] - base_place[label]) else None
                         for label in labels] + ([None] if has_floor else [])
            bold[col] = [False] * len(rows)
            better.append(-1)
        if not columns:
            continue
        grid = facts[shifted[0]]["grid"]
        caption = (
            f"{grid}: {dataset} under {family}. Each cell: the shifted value (rates in %, volumes in ml, mean over seeds) and, in "
            "brackets, its change from the unshifted cell; best shifted value in bold. FP ml on healthy: false-positive volume on "
            "the healthy test scans, shifted alike. Entropy diff: histogram entropy of input minus reconstruction (the paper's §5 "
            "'KLD'), signed, not ranked. Place: the method's place by its mean rank over AUPRC, AUROC and the two Dice, "
            f"unshifted → shifted. {_caption_common(summary, spec, [dataset])} The floor does not change "
            f"under a shift (its map ignores the image). Benchmark version (spec hash) {spec}."
        )
        out.append(_table(f"shift-{dataset}-{family}", f"{grid}: {dataset} under {family}", caption, spec, rows, columns, text, bold,
                          None, keys, better))
    return out


def tables_from_summary(summary: Summary) -> list[Table]:
    """Every table of a summary: per spec hash, the leaderboard then the shift tables."""
    out: list[Table] = []
    for spec in summary.specs():
        board = leaderboard_table(summary, spec)
        out += ([board] if board is not None else []) + shift_tables(summary, spec)
    return out


def tables_for(records: Sequence[ResultRecord | Mapping[str, Any]], *, per_spec: bool = False,
               tidy: pd.DataFrame | None = None) -> list[Table]:
    """Every table of ``records`` (``tidy``: their tidy frame, if already built); records of
    several spec hashes are an error unless ``per_spec``."""
    recs = coerce_records(records)
    if not per_spec:
        check_one_spec(recs)
    return tables_from_summary(summarise_frame(tidy if tidy is not None else tidy_frame(recs)))


# -- 4. renderers ----------------------------------------------------------------------------------------
def _flat_columns(table: Table) -> list[str]:
    return [f"{group} · {title}" if group else title for group, title in table.cells.columns]


def table_markdown(table: Table) -> str:
    """``table`` as a pipe table (pandas ``to_markdown``): **bold** best, † not different from it."""
    cells = table.cells.copy()
    for j in range(cells.shape[1]):
        col = cells.iloc[:, j].tolist()
        b, m = table.bold.iloc[:, j].tolist(), table.marked.iloc[:, j].tolist()
        cells.iloc[:, j] = [f"**{t}**" if bb else (f"{t} †" if mm else t) for t, bb, mm in zip(col, b, m)]
    cells.columns = pd.Index(_flat_columns(table))
    cells.index = pd.Index([f"*{i}*" if i == FLOOR else str(i) for i in cells.index], name=table.row_name)
    align = ("left",) + ("right",) * cells.shape[1]
    return cells.to_markdown(tablefmt="pipe", colalign=align)


_LATEX_SYMBOLS = {"±": r"$\pm$", "†": r"$^\dagger$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "→": r"$\rightarrow$",
                  "–": "--", "α": r"$\alpha$", "·": r"$\cdot$", "×": r"$\times$"}


def latex_text(text: str) -> str:
    """Plain text -> LaTeX: special characters escaped, the symbols the tables use as math."""
    out = []
    for ch in str(text):
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append(r"\textasciitilde{}")
        elif ch == "^":
            out.append(r"\textasciicircum{}")
        elif ch == "\\":
            out.append(r"\textbackslash{}")
        else:
            out.append(_LATEX_SYMBOLS.get(ch, ch))
    return "".join(out)


def _unicode_to_latex(text: str) -> str:
    for a, b in _LATEX_SYMBOLS.items():
        text = text.replace(a, b)
    return text


def table_latex(table: Table, label: str | None = None) -> str:
    """``table`` through ``Styler.to_latex``: booktabs rules, escaped headers and cells, grouped
    columns as \\multicolumn, best in \\textbf, † as a superscript dagger; needs ``booktabs``."""
    cells = table.cells.copy()
    marks = table.marked.to_numpy()
    cells = _corner_named(cells.mask(table.marked, cells.astype(str) + " †") if marks.any() else cells, table.row_name)
    styler = cells.style
    styler = styler.format(_unicode_to_latex, escape="latex")
    styler = styler.format_index(_unicode_to_latex, escape="latex", axis=0)
    styler = styler.format_index(_unicode_to_latex, escape="latex", axis=1)
    bold = table.bold.set_axis(cells.columns, axis=1).set_axis(cells.index, axis=0)
    styler = styler.apply(lambda _: np.where(bold.to_numpy(), "textbf:--rwrap;", ""), axis=None)
    align = "l" + "".join("r" if b != 0 or not isinstance(cells.iloc[0, j], str) or cells.iloc[:, j].str.match(r"^[–\d\-+]").all()
                          else "l" for j, b in enumerate(table.better))
    one_group = all(g == "" for g, _ in table.cells.columns)
    if one_group:
        styler = styler.hide(axis="columns", level=0)
    caption = latex_text(table.caption)
    return styler.to_latex(hrules=True, column_format=align, multicol_align="c", caption=caption, position="t", position_float="centering",
                           label=label or f"tab:{_slug(table.name)}", environment="table")


def _corner_named(cells: pd.DataFrame, name: str) -> pd.DataFrame:
    """``cells`` with the row header's name in the corner of the last header row (no extra row)."""
    cells = cells.copy()
    cells.index = pd.Index([str(i) for i in cells.index])
    cells.columns = cells.columns.set_names([None] * (cells.columns.nlevels - 1) + [name])
    return cells


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
table.uadbench { border-collapse: collapse; margin: 1em 0 0.4em 0; font-size: 0.85em; }
table.uadbench th, table.uadbench td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
table.uadbench thead th { border-bottom: 2px solid #555; }
table.uadbench thead tr:last-child th.col_heading { cursor: pointer; }
table.uadbench thead th[aria-sort=ascending]::after { content: " ▲"; }
table.uadbench thead th[aria-sort=descending]::after { content: " ▼"; }
table.uadbench th.row_heading { text-align: left; }
table.uadbench thead tr:not(:last-child) th.col_heading { text-align: center; border-bottom: 1px solid #999; }
table.uadbench tr.floor th, table.uadbench tr.floor td { color: #666; font-style: italic; }
caption { caption-side: bottom; text-align: left; max-width: 70em; color: #444; font-size: 0.9em; padding-top: 0.4em; }
p.spec { color: #666; font-size: 0.85em; }
"""

_HTML_SCRIPT = """
(function () {
  var keys = JSON.parse(document.getElementById("uadbench-sort-keys").textContent);
  document.querySelectorAll("table.uadbench").forEach(function (table) {
    var meta = keys[table.id]; if (!meta) return;
    var body = table.tBodies[0];
    Array.prototype.forEach.call(body.rows, function (row, i) { row.dataset.row = i; if (meta.pinned[i]) row.classList.add("floor"); });
    var heads = table.querySelectorAll("thead tr:last-child th.col_heading");
    heads.forEach(function (th) {
      var m = th.className.match(/\\bcol(\\d+)\\b/); if (!m) return;
      var col = +m[1];
      th.title = "sort";
      th.addEventListener("click", function () {
        var first = meta.better[col] >= 0 ? (meta.better[col] > 0 ? "descending" : "ascending") : "ascending";
        var now = th.getAttribute("aria-sort");
        var order = now ? (now === "ascending" ? "descending" : "ascending") : first;
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", order);
        var sign = order === "ascending" ? 1 : -1;
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var ia = +a.dataset.row, ib = +b.dataset.row;
          if (meta.pinned[ia] !== meta.pinned[ib]) return meta.pinned[ia] ? 1 : -1;
          var ka = meta.keys[ia][col], kb = meta.keys[ib][col];
          if (ka === null && kb === null) return ia - ib;
          if (ka === null) return 1;
          if (kb === null) return -1;
          if (ka < kb) return -sign;
          if (ka > kb) return sign;
          return ia - ib;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def table_html(table: Table, table_id: str) -> str:
    """``table`` through ``Styler.to_html``: escaped cells, best in bold, a caption, id ``table_id``."""
    cells = table.cells.copy()
    cells = _corner_named(cells.mask(table.marked, cells.astype(str) + " †") if table.marked.to_numpy().any() else cells, table.row_name)
    styler = cells.style.format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
    bold = table.bold.to_numpy()
    styler = styler.apply(lambda _: np.where(bold, "font-weight: bold;", ""), axis=None)
    if all(g == "" for g, _ in table.cells.columns):
        styler = styler.hide(axis="columns", level=0)
    styler = styler.set_caption(_html.escape(table.caption)).set_table_attributes('class="uadbench"')
    return styler.to_html(table_uuid=table_id, exclude_styles=False).replace(f'id="T_{table_id}"', f'id="{table_id}"', 1)


def _json_key(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    f = float(v)
    return f if math.isfinite(f) else None


def leaderboard_html(records: Sequence[ResultRecord | Mapping[str, Any]], title: str = "uadbench leaderboard", *, per_spec: bool = False,
                     tables: Sequence[Table] | None = None) -> str:
    """A self-contained HTML page (no external resource) of every table; a click on a column
    header sorts the rows (best first, again to reverse); the floor stays last."""
    tables = list(tables) if tables is not None else tables_for(records, per_spec=per_spec)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{_html.escape(title)}</title>\n"
             f"<style>{_HTML_STYLE}</style>\n</head>\n<body>\n<h1>{_html.escape(title)}</h1>"]
    sort_meta = {}
    for i, table in enumerate(tables):
        table_id = f"t{i}-{_slug(table.name)}"
        parts.append(f"<h2>{_html.escape(table.title)}</h2>")
        parts.append(f'<p class="spec">benchmark version (spec hash) <code>{_html.escape(table.spec_hash)}</code></p>')
        parts.append(table_html(table, table_id))
        sort_meta[table_id] = {
            "keys": [[_json_key(v) for v in row] for row in table.keys.itertuples(index=False)],
            "better": table.better,
            "pinned": [str(i) == FLOOR for i in table.cells.index],
        }
    blob = json.dumps(sort_meta).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="uadbench-sort-keys">{blob}</script>')
    parts.append(f"<script>{_HTML_SCRIPT}</script>\n</body>\n</html>\n")
    return "\n".join(parts)


def failures_markdown(failures: Sequence[Failure]) -> list[str]:
    """A "Failed" section: one line per fit or cell that raised or could not run."""
    if not failures:
        return []
    return ["## Failed", "", *[f"- {f.line()}" for f in failures], "",
            "Rerun the same command to retry only these (finished fits and cells come from the cache).", ""]


def leaderboard_markdown(records: Sequence[ResultRecord | Mapping[str, Any]], title: str = "uadbench leaderboard",
                         failures: Sequence[Failure] = (), *, per_spec: bool = False, tables: Sequence[Table] | None = None) -> str:
    """Every table of ``records`` as Markdown, each with its caption and spec hash; then failures."""
    tables = list(tables) if tables is not None else (tables_for(records, per_spec=per_spec) if records else [])
    lines = [f"# {title}", ""]
    for table in tables:
        lines += [f"## {table.title}", "", f"Benchmark version (spec hash) `{table.spec_hash}`.", "", table_markdown(table), "",
                  table.caption, ""]
    if not tables:
        lines += ["No result records.", ""]
    lines += failures_markdown(failures)
    return "\n".join(lines)


def leaderboard_latex(records: Sequence[ResultRecord | Mapping[str, Any]], *, per_spec: bool = False,
                      tables: Sequence[Table] | None = None) -> str:
    """Every table as a LaTeX ``table`` float (booktabs; needs ``\\usepackage{booktabs}``)."""
    tables = list(tables) if tables is not None else tables_for(records, per_spec=per_spec)
    return "\n".join(f"% {t.title} (spec hash {t.spec_hash})\n" + table_latex(t) for t in tables)


# -- 5. flat summaries: CSV, the terminal, the legacy row dicts ----------------------------------------------
def _summary_rows(summary: Summary) -> pd.DataFrame:
    """One row per (spec hash, dataset, shift, method or floor): facts, then mean, std and interval
    of every table metric (fractions, not %), then costs."""
    facts = summary.facts.reset_index()
    table = summary.stats[["mean", "std", "ci_low", "ci_high"]]
    table = table[table.index.get_level_values("metric").isin(TABLE_METRICS)]
    wide = table.unstack("metric")
    wide.columns = [f"{metric}{'' if stat == 'mean' else '_' + stat}" for stat, metric in wide.columns]
    order = [f"{m}{s}" for m in TABLE_METRICS for s in ("", "_std", "_ci_low", "_ci_high") if f"{m}{s}" in wide.columns]
    wide = wide[order].reset_index()
    out = facts.merge(wide, on=_GROUP, how="left")
    front = ["spec_hash", "grid", "dataset", "shift", "label", "preset", "n_seeds"]
    back = ["num_parameters", "train_seconds", "seconds_per_volume", "device", "precision"]
    return out[front + order + back].rename(columns={"label": "method"})


def leaderboard_csv(records: Sequence[ResultRecord | Mapping[str, Any]], *, per_spec: bool = True) -> str:
    """One row per (spec hash, dataset, shift, method or floor); metric means, stds and bootstrap
    intervals as fractions (not %), costs. The spec hash is a column, so one file may hold several."""
    recs = coerce_records(records)
    if not per_spec:
        check_one_spec(recs)
    return summary_csv(summarise_frame(tidy_frame(recs)))


def summary_csv(summary: Summary) -> str:
    """The CSV of :func:`leaderboard_csv` from a summary already computed."""
    return _summary_rows(summary).to_csv(index=False, lineterminator="\n", na_rep="")


def summarise(records: Sequence[ResultRecord | Mapping[str, Any]]) -> list[dict]:
    """One dict per (dataset, shift, method): ``(mean, std)`` over seeds of every metric, costs,
    n_seeds; the floor's rows have ``label == "floor"``."""
    recs = coerce_records(records)
    summary = summarise_frame(tidy_frame(recs, subjects=False))
    rows = []
    for key, fact in summary.facts.iterrows():
        spec, dataset, shift, kind, label = key
        row = {"spec_hash": spec, "dataset": dataset, "shift": shift, "label": label, "method": fact["method"], "preset": fact["preset"],
               "n_seeds": int(fact["n_seeds"]), "kind": kind}
        stats = summary.stats.xs(key, level=list(range(5)), drop_level=True) if len(summary.stats) else summary.stats
        for metric, s in stats.iterrows():
            if not str(metric).startswith("cost."):
                row[metric] = (float(s["mean"]), float(s["std"]))
        for k in _COST:
            row[k] = float(fact[k]) if fact[k] == fact[k] else math.nan
        rows.append(row)
    return rows


def leaderboard_terminal(records: Sequence[ResultRecord | Mapping[str, Any]], failures: Sequence[Failure] = ()) -> str:
    """A compact plain-text table for the terminal: one line per (method or floor, dataset, shift),
    grouped by spec hash."""
    rows = summarise(records) if records else []
    cols = [("Method", 14), ("Dataset", 22), ("Shift", 10), ("AUPRC", 8), ("AUROC", 8), ("Dice@val", 9), ("Dice@oracle*", 12), ("Train s", 8)]
    out = ["  ".join(name.ljust(w) for name, w in cols), "  ".join("-" * w for _, w in cols)]

    def pct(row: dict, key: str) -> str:
        return "–" if key not in row or math.isnan(row[key][0]) else f"{row[key][0] * 100:.2f}"

    specs = list(dict.fromkeys(r["spec_hash"] for r in rows))
    for spec in specs:
        if len(specs) > 1:
            out.append(f"spec hash {spec}:")
        mine = [r for r in rows if r["spec_hash"] == spec]
        datasets = list(dict.fromkeys(r["dataset"] for r in mine))
        shifts = list(dict.fromkeys(r["shift"] for r in mine))
        # by dataset and shift (unshifted first), the floor after the methods; record order otherwise
        mine.sort(key=lambda r: (datasets.index(r["dataset"]), r["shift"] != NO_SHIFT, shifts.index(r["shift"]), r["kind"] == FLOOR))
        for r in mine:
            metrics = [pct(r, k) for k in ("auprc", "auroc", "dice@val-bisection", "dice@oracle")]
            train = "–" if r["kind"] == FLOOR or not math.isfinite(r["train_seconds"]) else f"{r['train_seconds']:.1f}"
            vals = [r["label"], r["dataset"], r["shift"], *metrics, train]
            out.append("  ".join(str(v)[:w].ljust(w) for v, (_, w) in zip(vals, cols)))
    out.append("* Dice@oracle uses the test labels: an upper bound, not a result. floor: the protocol on a map constant on the brain.")
    if len(specs) == 1:
        out.append(f"benchmark version (spec hash) {specs[0]}")
    out += [f"FAILED {f.line()}" for f in failures]
    return "\n".join(out)
