"""The summary as CSV: one row per (spec hash, dataset, shift, method or floor), fractions not %."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from uadbench.records import ResultRecord, coerce_records
from uadbench.report.columns import TABLE_METRICS
from uadbench.report.frame import check_one_spec, tidy_frame
from uadbench.report.statistics import GROUP, Summary, summarise_frame

__all__ = ["leaderboard_csv", "summary_csv"]


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
    out = facts.merge(wide, on=GROUP, how="left")
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
