"""The tables: a summary laid out as a leaderboard and one table per dataset and shift family.

- :func:`leaderboard_table`: rows = methods (and the ``floor``), columns = dataset × metric, the
  unshifted cells; best in bold, † on the methods a test over seeds cannot separate from the best
  (only when every method has at least three seeds; the caption says when there are fewer), cost
  columns and the mean rank across datasets;
- :func:`shift_tables`: one per dataset and shift family: each metric's value and change from the
  unshifted cell, and each method's change of place.

A :class:`Table` holds plain cell text plus what is bold, what is marked and the sort keys; the
renderers (``render_markdown``, ``render_latex``, ``render_html``) add the markup. Tables never
mix benchmark versions: records of different spec hashes raise
:class:`~uadbench.errors.UadbenchError`, unless ``per_spec=True`` asks for one set of tables per hash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from uadbench.evaluation.metrics import MetricInfo
from uadbench.records import NO_SHIFT, ResultRecord, coerce_records
from uadbench.report.columns import PLACE_METRICS, SHIFT_METRICS, TABLE_METRICS, UNRANKED, describe, metric_title
from uadbench.report.frame import FLOOR, check_one_spec, join_distinct, tidy_frame
from uadbench.report.statistics import (
    ALPHA,
    MIN_SEEDS,
    N_BOOTSTRAP,
    STATS,
    TEST_RESAMPLES,
    Summary,
    best_and_marks,
    mean_rank,
    rank,
    summarise_frame,
)

__all__ = ["Table", "leaderboard_table", "shift_tables", "slugify", "tables_for", "tables_from_summary"]


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

    @property
    def slug(self) -> str:
        """The table's name as an identifier (LaTeX labels, HTML ids)."""
        return slugify(self.name)

    def flat_columns(self) -> list[str]:
        """Column titles with their group, as one header row: ``group · title``."""
        return [f"{group} · {title}" if group else title for group, title in self.cells.columns]

    def one_group(self) -> bool:
        """Whether the columns have no group (one header row)."""
        return all(g == "" for g, _ in self.cells.columns)

    def daggered(self) -> pd.DataFrame:
        """The cells with " †" after each marked one, the row header's name in the corner of the last
        header row (no extra row): what the LaTeX and HTML renderers style."""
        cells = self.cells.copy()
        if self.marked.to_numpy().any():
            cells = cells.mask(self.marked, cells.astype(str) + " †")
        cells.index = pd.Index([str(i) for i in cells.index])
        cells.columns = cells.columns.set_names([None] * (cells.columns.nlevels - 1) + [self.row_name])
        return cells


def slugify(text: str) -> str:
    """``text`` with every run of other characters than letters and digits as "-", in lower case."""
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


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


def _seed_counts(summary: Summary, groups: Sequence[tuple]) -> dict[str, int]:
    """Each method's seeds: the fewest over its groups."""
    out: dict[str, int] = {}
    for k in groups:
        n = int(summary.fact_rows[k]["n_seeds"])
        out[k[4]] = min(out.get(k[4], n), n)
    return out


def _seed_range(seeds: Mapping[str, int]) -> str:
    lo, hi = min(seeds.values()), max(seeds.values())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _seed_note(seeds: Mapping[str, int]) -> str:
    """What too few seeds leave out ("" with at least MIN_SEEDS for every method)."""
    lo, hi = min(seeds.values()), max(seeds.values())
    if lo >= MIN_SEEDS:
        return ""
    if hi == 1:
        return "1 seed: training variance not measured"
    if lo == hi:
        return f"{lo} seeds: too few to test training variance"
    few = ", ".join(f"{label} {n}" for label, n in seeds.items() if n < MIN_SEEDS)
    return f"{lo}–{hi} seeds per method ({few}): too few to test training variance for every method"


def _statistics_caption(seeds: Mapping[str, int]) -> str:
    """The caption's account of the values, the intervals and the mark."""
    many = max(seeds.values()) > 1
    values = (f"mean ± sd over {_seed_range(seeds)} seeds [95 % interval from a two-level bootstrap: seeds, and the test subjects "
              f"every seed was evaluated on ({N_BOOTSTRAP} resamples)]" if many
              else f"one seed [bootstrap 95 % interval over subjects ({N_BOOTSTRAP} resamples)]")
    note = _seed_note(seeds)
    if note:
        marks = f"{note}, so no significance mark (a seed-aware test needs ≥ {MIN_SEEDS} seeds per method)"
    else:
        marks = (f"† cannot be separated from the best (two-level bootstrap test of the difference of means: test subjects paired, "
                 f"each method's seeds resampled; {TEST_RESAMPLES:,} resamples, two-sided, α = {ALPHA:g})")
    return f"{values}; ↑/↓ higher/lower is better; best in bold; {marks}."


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
    seeds = _seed_counts(summary, groups)
    seed_aware = min(seeds.values()) >= MIN_SEEDS  # the mark comes from a test over seeds, or not at all
    columns: list[tuple[str, str]] = []
    text: dict[tuple, list[str]] = {}
    bold: dict[tuple, list[bool]] = {}
    marked: dict[tuple, list[bool]] = {}
    keys: dict[tuple, list[Any]] = {}
    better: list[int] = []
    for_rank: list[tuple[str, list[float]]] = []  # (metric, the labels' means) of every fair column
    for ds in datasets:
        for metric in TABLE_METRICS:
            info = describe(metric)
            group_of = {label: (spec, ds, NO_SHIFT, FLOOR if label == FLOOR else "method", label) for label in rows}
            if not any(math.isfinite(summary.value(group_of[label], metric)) for label in rows):
                continue
            means = {label: summary.value(group_of[label], metric) for label in labels}
            col = ("" if one else ds, f"{metric_title(metric)} {info.arrow}")
            columns.append(col)
            best, marks = best_and_marks(summary, spec, ds, NO_SHIFT, metric, labels, means, test=seed_aware)
            text[col], keys[col] = [], []
            for label in rows:
                mean, std, n, lo, hi = (summary.value(group_of[label], metric, c) for c in STATS)
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
        text[(group, title)] = [join_distinct(part for f in mine[label] for part in str(f[name]).split(", ")) or "–" for label in labels] + floor_cell
        keys[(group, title)] = list(text[(group, title)])
        better.append(0)
    # the mean rank over every fair (dataset, metric) column
    rank_col = ("" if one else "Rank", "Mean rank")
    row_ranks = mean_rank(for_rank, len(labels))
    columns.append(rank_col)
    finite_ranks = row_ranks[np.isfinite(row_ranks)]
    top = finite_ranks.min() if finite_ranks.size else math.nan
    text[rank_col] = [_seconds(r, 2) for r in row_ranks] + floor_cell
    keys[rank_col] = [float(r) if math.isfinite(r) else None for r in row_ranks] + [None] * len(floor_cell)
    bold[rank_col] = [len(labels) > 1 and bool(r == top) for r in row_ranks] + [False] * len(floor_cell)
    better.append(-1)
    for col in columns:
        bold.setdefault(col, [False] * len(rows))
        marked.setdefault(col, [False] * len(rows))
    grid = facts[groups[0]]["grid"]
    presets = {label: mine[label][0]["preset"] for label in labels}
    caption = (
        f"{grid}: unshifted test cells{' of ' + datasets[0] if one else ''}. Metrics in % (FP ml in ml, l1-ratio a ratio), "
        f"{_statistics_caption(seeds)} Dice columns name their threshold: val-bisection (the paper's 10-step search on "
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
    places = rank(mean_rank(means, len(labels)), higher_is_better=False, method="min")
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
        cells.sort(key=lambda c: (math.isnan(c[0]), 0.0 if math.isnan(c[0]) else c[0], c[1]))  # held-out sites (no severity) by name
        labels = list(dict.fromkeys(k[4] for k in shifted if k[1] == dataset and facts[k]["shift_name"] == family))
        has_floor = any(k[3] == FLOOR and k[0] == spec and k[1] == dataset for k in facts)
        rows = labels + ([FLOOR] if has_floor else [])
        base_place = _places(summary, spec, dataset, NO_SHIFT, labels)
        columns: list[tuple[str, str]] = []
        text: dict[tuple, list[str]] = {}
        bold: dict[tuple, list[bool]] = {}
        keys: dict[tuple, list[Any]] = {}
        better: list[int] = []
        site = family == "site"  # a held-out site: the same datasets' subjects of a site the fits never saw, unshifted
        # a held-out healthy site has no lesion validation split: its false positives at the healthy-FPR threshold too
        metrics = (*SHIFT_METRICS, "fp_volume_ml@healthy-fpr@5%") if site else SHIFT_METRICS
        for _, shift in cells:
            for metric in metrics:
                info = describe(metric)
                scale = 100.0 if info.percent else 1.0
                col = (shift, metric_title(metric) if metric in UNRANKED else f"{metric_title(metric)} {info.arrow}")
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
                best, _ = best_and_marks(summary, spec, dataset, shift, metric, labels, dict(zip(labels, vals)), test=False)
                bold[col] = [label in best and len(labels) > 1 and metric not in UNRANKED for label in rows]
                keys[col] = [d if math.isfinite(d) else None for d in deltas]
                better.append(0 if metric in UNRANKED else 1 if info.higher_is_better else -1)
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
        seeds = _seed_counts(summary, [k for k in shifted if k[1] == dataset and facts[k]["shift_name"] == family])
        over = "" if max(seeds.values()) == 1 else f", mean over {_seed_range(seeds)} seeds"
        note = _seed_note(seeds)
        held_out = "of the held-out site (the training used other sites)"
        caption = (
            f"{grid}: {dataset} under {family}. Each cell: the shifted value (rates in %, volumes in ml{over}{'; ' + note if note else ''}) "
            "and, in "
            "brackets, its change from the unshifted cell; best shifted value in bold. FP ml on healthy: false-positive volume on "
            f"the healthy test scans, {held_out if site else 'shifted alike'}. Entropy diff: histogram entropy of input minus "
            "reconstruction (the paper's §5 'KLD'), signed, not ranked. Place: the method's place by its mean rank over AUPRC, AUROC "
            f"and the two Dice, unshifted → shifted. {_caption_common(summary, spec, [dataset])} "
            + ("The floor is evaluated on the held-out site's scans. " if site else
               "The floor does not change under a shift (its map ignores the image). ")
            + f"Benchmark version (spec hash) {spec}."
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


