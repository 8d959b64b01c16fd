"""The compact plain-text table for the terminal: one line per (method or floor, dataset, shift)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from uadbench.records import NO_SHIFT, Failure, ResultRecord
from uadbench.report.frame import FLOOR
from uadbench.report.statistics import summarise

__all__ = ["leaderboard_terminal"]


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
