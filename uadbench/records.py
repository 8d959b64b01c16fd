"""The result record: one evaluation cell, its schema, and the versions that set its numbers.

A :class:`ResultRecord` is one line of ``results.jsonl``: the method (name, label, preset,
overrides, config hash), the data (training dataset, evaluation dataset and splits), the shift,
the seed, the metrics with their thresholds' provenance, per-volume values, cost, and the versions
of everything that produced the numbers. It is read and written here only; the report, ``compare``
and tracking consume records, not dict keys spelled again.

Versions come in two kinds. :func:`component_versions` are the harness's own parts (volume
pipeline, evaluation protocol, metrics, shifts, result schema): each is bumped whenever a change
alters a number, and each goes into the cache keys and the grid's spec hash. :func:`versions`
adds the library versions and Python, recorded for provenance.

This module imports neither torch nor mlflow.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import importlib.metadata
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uadbench._version import __version__
from uadbench.errors import UadbenchError
from uadbench.files import write_text_atomic

RECORD_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)  # schema 1 records lack versions.components and device; they read fine
NO_SHIFT = "none"

_LIBRARIES = ("torch", "numpy", "scipy", "monai", "scikit-image", "mlflow")
NUMERIC_LIBRARIES = ("torch", "numpy", "scipy", "monai", "scikit-image")  # they set numbers: part of every fit key


def shift_label(name: str, severity: float | None) -> str:
    """The one spelling of a shift cell: ``none`` or ``gamma@1.5``."""
    return NO_SHIFT if name == NO_SHIFT else f"{name}@{float(severity):g}"  # type: ignore[arg-type]


def component_versions() -> dict[str, str]:
    """Versions of the harness parts that set a number (cache keys and spec hashes include them)."""
    from uadbench.data.pipeline import PIPELINE_VERSION
    from uadbench.evaluation.metrics import metrics_version
    from uadbench.evaluation.protocol import PROTOCOL_VERSION
    from uadbench.shifts.base import SHIFTS_VERSION

    return {
        "pipeline": PIPELINE_VERSION,
        "protocol": PROTOCOL_VERSION,
        "metrics": metrics_version(),  # with the versions of metrics registered by other packages
        "shifts": SHIFTS_VERSION,
        "record": str(RECORD_SCHEMA),
    }


def _library_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _numeric_versions() -> tuple[tuple[str, str], ...]:
    return tuple((name, v) for name in NUMERIC_LIBRARIES if (v := _library_version(name)) is not None)


def numeric_versions() -> dict[str, str]:
    """The versions of the libraries that compute the numbers (a fit key hashes them; looked up once per process)."""
    return dict(_numeric_versions())


def version_differences(records: list[ResultRecord], reader: dict[str, Any] | None = None) -> list[str]:
    """``"numpy 2.3.5 (records) != 2.4.6 (here)"`` for each library or harness version in which the
    records (as made) and this environment differ; several versions in the records are listed together."""
    here = reader if reader is not None else versions()
    out = []
    for name in ("uadbench", "python", *_LIBRARIES):
        made = sorted({str(r.versions.get(name)) for r in records if r.versions.get(name) is not None})
        if made and here.get(name) is not None and made != [str(here[name])]:
            out.append(f"{name} {', '.join(made)} (records) != {here[name]} (here)")
    return out


def versions() -> dict[str, Any]:
    """The harness, Python, library and component versions (recorded in every fit and cell)."""
    libs = {name: v for name in _LIBRARIES if (v := _library_version(name)) is not None}
    return {
        "uadbench": __version__,
        "python": platform.python_version(),
        **libs,
        "components": component_versions(),
    }


@dataclass(frozen=True)
class ResultRecord:
    """One evaluation cell (a fit × dataset × shift), as written to ``results.jsonl``."""

    grid: str
    spec_hash: str
    method: str
    label: str
    preset: str
    config_hash: str
    fit_key: str
    eval_key: str
    train_dataset: str
    dataset: str
    split: str
    val_split: str
    shift: str
    severity: float | None
    seed: int
    image_grid: dict[str, Any]
    metrics: dict[str, float]
    thresholds: dict[str, Any]
    per_volume: dict[str, dict[str, float]]
    cost: dict[str, Any]
    versions: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    confidence_intervals: dict[str, Any] = field(default_factory=dict)
    healthy_test: str = ""
    dataset_stats: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    threads: int = 0  # torch threads the fit trained with (part of its cache key: it can change numbers)
    subjects: dict[str, dict[str, Any]] = field(default_factory=dict)  # age, sex, ... by subject id, where known
    precision: str = "fp32"  # the arithmetic the fit trained and predicted with
    # the protocol's result for a map constant on the brain mask, on the same volumes (no learning,
    # no intensity): metrics, per_volume, confidence_intervals, brain_prevalence; {} in older records
    floor: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)  # the config fields a grid swept, with this fit's values
    example: str = ""  # the folder of the cell's example volume (NIfTI) and panel, relative to the run's cache; "" if none
    created: str = ""
    schema: int = RECORD_SCHEMA

    @property
    def shift_label(self) -> str:
        return shift_label(self.shift, self.severity)

    @property
    def cell(self) -> tuple[str, str, int]:
        """(dataset, shift label, seed): what two methods' records must share to be compared."""
        return (self.dataset, self.shift_label, self.seed)

    def subject_values(self, metric: str) -> dict[str, float]:
        """Per-subject values of ``metric`` (subjects that have it)."""
        return {s: float(v[metric]) for s, v in self.per_volume.items() if metric in v}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One JSON line (sorted keys, no trailing newline)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "record") -> ResultRecord:
        if not isinstance(data, Mapping):
            raise UadbenchError(f"{where}: expected a JSON object (one result record), got {type(data).__name__}")
        schema = data.get("schema")
        if schema not in READABLE_SCHEMAS:
            raise UadbenchError(
                f"{where}: unknown record schema {schema!r}; this uadbench reads schemas "
                f"{', '.join(map(str, READABLE_SCHEMAS))}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise UadbenchError(f"{where}: record lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        values["schema"] = RECORD_SCHEMA if schema == 1 else schema
        return cls(**values)

    @classmethod
    def from_json(cls, line: str, where: str = "record") -> ResultRecord:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UadbenchError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        return cls.from_dict(data, where)


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def coerce_records(records: Iterable[ResultRecord | Mapping[str, Any]]) -> list[ResultRecord]:
    """Records as :class:`ResultRecord` (dicts, as read from JSON, are converted)."""
    return [r if isinstance(r, ResultRecord) else ResultRecord.from_dict(r) for r in records]


def read_records(path: str | os.PathLike) -> list[ResultRecord]:
    """Every record of a ``results.jsonl`` (or a gzipped ``results.jsonl.gz``, as large published
    editions hold them); a bad line is an error naming the file and line."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise UadbenchError(f"results file not found: {path} (a run writes <run dir>/results.jsonl)")
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UadbenchError(f"{path}: cannot read a results file: {exc}") from exc
    records = [
        ResultRecord.from_json(line, where=f"{path}:{i}")
        for i, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not records:
        raise UadbenchError(f"{path}: no result records (an empty results file)")
    return records


def records_text(records: Sequence[ResultRecord]) -> str:
    """The content of a ``results.jsonl`` holding ``records``."""
    return "".join(r.to_json() + "\n" for r in records)


@dataclass(frozen=True)
class Failure:
    """A fit or evaluation cell that raised, or did not run because a fit it needs failed."""

    kind: str  # "fit" or "eval"
    label: str
    seed: int
    error: str
    cell: str = ""  # "dataset/split shift" for an evaluation cell; "" for a fit or a whole fit's cells

    def line(self) -> str:
        where = f"{self.label} seed {self.seed}" + (f" {self.cell}" if self.cell else "")
        return f"{self.kind} {where}: {self.error}"


class ResultsFile:
    """``results.jsonl`` of a run, rewritten atomically as cells finish (never a torn line).

    A run never destroys records: when the file already holds records of cells this run does not
    produce (another grid, other settings), it is first moved aside to ``results-<time>.jsonl``.
    """

    def __init__(self, path: Path, eval_keys: Sequence[str]) -> None:
        self.path = Path(path)
        self.order = {k: i for i, k in enumerate(eval_keys)}
        self.records: dict[str, ResultRecord] = {}
        self.backup: Path | None = None

    def keep_foreign_records(self) -> Path | None:
        """Move an existing file aside if it holds records this run would drop; returns where."""
        if not self.path.is_file():
            return None
        try:
            keys = {r.eval_key for r in read_records(self.path)}
        except UadbenchError:
            keys = {"<unreadable>"}
        if keys <= set(self.order):
            return None
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.backup = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
        os.replace(self.path, self.backup)
        return self.backup

    def add(self, records: Iterable[ResultRecord]) -> None:
        self.records.update((r.eval_key, r) for r in records)
        write_text_atomic(self.path, records_text(self.ordered()))

    def ordered(self) -> list[ResultRecord]:
        return sorted(self.records.values(), key=lambda r: self.order.get(r.eval_key, len(self.order)))
