"""Subgroups: each method's healthy false positives and lesion metrics by age band, sex and site.

The facts come from the records (``ResultRecord.subjects``: what the datasets know of each subject,
e.g. IXI's ``participants.csv`` and the site its ids name), the values from the per-volume metrics
of the unshifted cells. :func:`subgroup_frame` is the reduction (one pandas groupby): a row per
spec hash, dataset, dimension, group, method and metric with the mean over seeds and subjects and
the number of subjects; :func:`subgroup_tables` lays it out as one table per spec hash and
dimension, shown only where a dimension has at least two groups. Age bands: :data:`AGE_BANDS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from uadbench.records import NO_SHIFT, ResultRecord, coerce_records
from uadbench.report.build import Table, _table
from uadbench.report.columns import describe, metric_title

__all__ = ["AGE_BANDS", "DIMENSIONS", "SUBGROUP_METRICS", "age_band", "subgroup_frame", "subgroup_tables"]

#: The metrics shown per subgroup: the healthy scans' false-positive volume (at the validation-chosen
#: threshold, as the shift tables, and at 5 % healthy-voxel FPR) and the lesion metrics.
SUBGROUP_METRICS = ("fp_volume_ml@val-bisection", "fp_volume_ml@healthy-fpr@5%", "auprc", "dice@val-bisection")
#: Lower edges of the age bands after the first (years): <40, 40-59, >=60.
AGE_BANDS = (40, 60)
DIMENSIONS = ("age", "sex", "site")
_COLUMNS = ["spec_hash", "grid", "dataset", "dimension", "group", "label", "metric", "mean", "n"]


def age_band(age: Any) -> str | None:
    """``"<40"``, ``"40-59"``, ``">=60"`` (by :data:`AGE_BANDS`); None for a missing or non-numeric age."""
    try:
        value = float(age)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    edges = [-math.inf, *AGE_BANDS, math.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo <= value < hi:
            if lo == -math.inf:
                return f"<{hi:g}"
            return f">={lo:g}" if hi == math.inf else f"{lo:g}-{hi - 1:g}"
    return None  # pragma: no cover - the edges cover every finite number


def _group(dimension: str, facts: Mapping[str, Any]) -> str | None:
    value = facts.get(dimension)
    if dimension == "age":
        return age_band(value)
    return None if value is None or value == "" else str(value)


def _long(records: Sequence[ResultRecord], metrics: Sequence[str]) -> pd.DataFrame:
    """A row per unshifted cell x subject x metric x dimension with the subject's group."""
    rows = []
    for r in records:
        if r.shift != NO_SHIFT or not r.subjects:
            continue
        for subject, values in r.per_volume.items():
            facts = r.subjects.get(subject)
            if not facts:
                continue
            groups = [(d, g) for d in DIMENSIONS if (g := _group(d, facts)) is not None]
            for metric in metrics:
                value = values.get(metric)
                if value is None or not math.isfinite(float(value)):
                    continue
                for dimension, group in groups:
                    rows.append((r.spec_hash, r.grid, r.dataset, dimension, group, r.label, metric, r.seed, subject, float(value)))
    return pd.DataFrame(rows, columns=["spec_hash", "grid", "dataset", "dimension", "group", "label", "metric", "seed", "subject", "value"])


def subgroup_frame(records: Sequence[ResultRecord | Mapping[str, Any]], metrics: Sequence[str] = SUBGROUP_METRICS) -> pd.DataFrame:
    """Per spec hash, dataset, dimension (age, sex, site), group, method label and metric: the mean
    of the per-volume values over seeds and subjects (``mean``) and the number of subjects (``n``),
    from the unshifted cells; empty where no record knows a subject's facts."""
    long = _long(coerce_records(records), metrics)
    if long.empty:
        return pd.DataFrame(columns=_COLUMNS)
    keys = ["spec_hash", "grid", "dataset", "dimension", "group", "label", "metric"]
    out = long.groupby(keys, sort=True).agg(mean=("value", "mean"), n=("subject", "nunique")).reset_index()
    return out[_COLUMNS]


def subgroup_tables(records: Sequence[ResultRecord | Mapping[str, Any]], metrics: Sequence[str] = SUBGROUP_METRICS) -> list[Table]:
    """One table per spec hash and dimension with at least two groups: rows = methods, columns =
    dataset and group (with its number of subjects) x metric."""
    frame = subgroup_frame(records, metrics)
    out: list[Table] = []
    for (spec, dimension), part in frame.groupby(["spec_hash", "dimension"], sort=False):
        if part.groupby("dataset")["group"].nunique().max() < 2:
            continue
        labels = list(dict.fromkeys(part["label"]))
        columns: list[tuple[str, str]] = []
        text: dict[tuple, list[str]] = {}
        keys: dict[tuple, list[Any]] = {}
        better: list[int] = []
        for (dataset, group), cell in part.groupby(["dataset", "group"], sort=True):
            n = int(cell["n"].max())
            head = f"{dataset} · {dimension} {group} (n={n})"
            for metric in (m for m in metrics if m in set(cell["metric"])):
                info = describe(metric)
                scale = 100.0 if info.percent else 1.0
                values = cell[cell["metric"] == metric].set_index("label")["mean"]
                col = (head, metric_title(metric))
                vals = [float(values.get(label, np.nan)) * scale for label in labels]
                columns.append(col)
                text[col] = [f"{v:.2f}" if math.isfinite(v) else "–" for v in vals]
                keys[col] = [v if math.isfinite(v) else None for v in vals]
                better.append(1 if info.higher_is_better else -1)
        if not columns:
            continue
        grid = str(part["grid"].iloc[0])
        bands = ", ".join(age_band(a) or "" for a in (0, *AGE_BANDS))
        what = {"age": f"age band ({bands} years)", "sex": "sex", "site": "site (scanner)"}[str(dimension)]
        caption = (f"{grid}: each method's per-volume metrics by {what}, unshifted cells: the mean over seeds and subjects "
                   "(rates in %, volumes in ml); n = subjects in the group. FP ml on healthy: false-positive volume on the "
                   "healthy scans of the group; lesion metrics where the group has lesioned scans. Groups come from the "
                   f"subject facts the datasets give; small groups vary a lot. Benchmark version (spec hash) {spec}.")
        bold = {c: [False] * len(labels) for c in columns}
        table = _table(f"subgroups-{dimension}", f"{grid}: subgroups by {dimension}", caption, str(spec), labels, columns, text, bold,
                       None, keys, better)
        out.append(table)
    return out
