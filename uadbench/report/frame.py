"""Result records -> one tidy pandas frame, the source of every table and of the box and severity figures.

:func:`tidy_frame` gives a row per cell × metric and a row per cell × subject × metric, for each
method and for the floor (the protocol's result for a map constant on the brain mask, once per
spec hash, dataset, shift and seed). :func:`check_one_spec` refuses records of several benchmark
versions where one table would mix them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from uadbench.errors import UadbenchError
from uadbench.records import ResultRecord, coerce_records, shift_label
from uadbench.report.columns import COST

__all__ = ["FLOOR", "check_one_spec", "join_distinct", "tidy_frame"]

#: The floor's label and kind in the frame and the tables.
FLOOR = "floor"

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


def _family(shift: str) -> str:
    """The shift family a cell's table and figures group it by: its name, ``site`` for every held-out site (``site@IOP``)."""
    return "site" if shift.startswith("site@") else shift


def _facts(r: ResultRecord, kind: str) -> tuple:
    floor = kind == FLOOR
    return (r.spec_hash, r.grid, r.dataset, r.split, _shift_label(r.shift, r.severity), _family(r.shift),
            math.nan if r.severity is None else float(r.severity),
            kind, FLOOR if floor else r.label, FLOOR if floor else r.method, "" if floor else r.preset, r.seed,
            "" if floor else r.device, "" if floor else r.precision, 0 if floor else r.threads)


def tidy_frame(records: Iterable[ResultRecord | Mapping[str, Any]], *, subjects: bool = True) -> pd.DataFrame:
    """Records as one tidy frame: a row per cell × metric (``level == "cell"``, the cell's
    aggregate) and, with ``subjects``, a row per cell × subject × metric (``level == "subject"``,
    the per-volume values).

    Columns: spec_hash, grid, dataset, split, shift (``none``, ``gamma@1.5``, ``site@IOP``), shift_name (the family),
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
        for k in COST:
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


def join_distinct(values: Iterable[Any]) -> str:
    """The distinct non-empty values as text, sorted and joined by ", "."""
    return ", ".join(sorted({str(v) for v in values if str(v)}))
