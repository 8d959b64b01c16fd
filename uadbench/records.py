"""The result record: one evaluation cell, its schema, and the versions that set its numbers.

A :class:`ResultRecord` is one line of ``results.jsonl``: the method (name, label, preset,
overrides, config hash), the data (training dataset, evaluation dataset and splits), the shift,
the seed, the metrics with their thresholds' provenance, per-volume values, cost, and the versions
of everything that produced the numbers. It is read and written here only; the report, ``compare``
and tracking consume records, not dict keys spelled again.

Subjects are named by pseudonyms unless a run asks for real ids: :class:`Pseudonyms` is the keyed
hash (HMAC-SHA256 under a random key kept in the run directory) and :func:`name_subjects` renames a
record's subjects with it.

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
import hashlib
import hmac
import importlib.metadata
import json
import os
import platform
import secrets
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    """The one spelling of a shift cell: ``none``, ``gamma@1.5``, or a shift named whole (a held-out site, ``site@IOP``)."""
    if name == NO_SHIFT or severity is None:
        return name
    return f"{name}@{float(severity):g}"


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
    # how per_volume, subjects and the floor name subjects: "hmac-sha256:<key id>" (pseudonyms, see
    # Pseudonyms), "real" (the datasets' ids, asked for), "synthetic" (generated data); "" in older records (the datasets' ids)
    subject_ids: str = ""
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


# -- pseudonyms -----------------------------------------------------------------------------------
PSEUDONYM_KEY_BYTES = 32
PSEUDONYM_SCHEME = "hmac-sha256"
REAL_IDS = "real"
SYNTHETIC_IDS = "synthetic"


def _write_new_secret(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` with mode 0600 unless ``path`` exists; False if it did. Atomic: the
    file is complete (and on the disk) before its name appears, and two writers never both win."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)  # fails if the name exists: the first key stays
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: a rename, which a concurrent first writer may lose to
            if path.exists():
                return False
            os.replace(tmp, path)
            return True
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def pseudonym_key(path: str | os.PathLike, *, create: bool = True) -> bytes:
    """The pseudonym key in file ``path`` (hex text), made once with ``create`` (random, 32 bytes,
    file mode 0600); a missing file without ``create``, or a damaged one, is an error naming it."""
    path = Path(path)
    if not path.is_file():
        if not create:
            raise UadbenchError(f"pseudonym key not found: {path} (a run writes it as <run dir>/pseudonym.key)")
        _write_new_secret(path, (secrets.token_hex(PSEUDONYM_KEY_BYTES) + "\n").encode())
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise UadbenchError(f"{path}: not a pseudonym key (expected {2 * PSEUDONYM_KEY_BYTES} hex digits); "
                            "restore it from a backup, or delete it to start new pseudonyms (earlier records then no longer match)")
    return key


@dataclass(frozen=True)
class Pseudonyms:
    """Stable pseudonyms: ``sub-`` and 12 hex digits of HMAC-SHA256(key, subject id). The same key
    gives the same name in every run; without the key a name cannot be traced back to its id."""

    key: bytes = field(repr=False)

    @property
    def scheme(self) -> str:
        """``hmac-sha256:<key id>``: the key id (8 hex digits of the key's sha256) tells keys apart."""
        return f"{PSEUDONYM_SCHEME}:{hashlib.sha256(self.key).hexdigest()[:8]}"

    def __call__(self, subject_id: str) -> str:
        return "sub-" + hmac.new(self.key, str(subject_id).encode("utf-8"), hashlib.sha256).hexdigest()[:12]

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, create: bool = True) -> Pseudonyms:
        return cls(pseudonym_key(path, create=create))


def _renamed(mapping: Mapping[str, Any], name: Callable[[str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sid, value in mapping.items():
        new = name(sid)
        if new in out:  # pragma: no cover - 48 bits of HMAC: a collision within one record is vanishingly rare
            raise UadbenchError(f"two subjects share the pseudonym {new}; run with real ids or a new key")
        out[new] = value
    return out


def name_subjects(record: ResultRecord, pseudonyms: Pseudonyms | None, *, synthetic: bool = False) -> ResultRecord:
    """``record`` with its subjects named by ``pseudonyms`` (per-volume values, subject facts and the
    floor's per-volume values); ``None`` keeps the datasets' ids (marked "real", or "synthetic" for
    generated data, whose ids identify nobody and which are never renamed). A record already named
    is returned as it is."""
    if record.subject_ids.startswith(PSEUDONYM_SCHEME) or synthetic and record.subject_ids == SYNTHETIC_IDS:
        return record
    if synthetic or pseudonyms is None:
        return dataclasses.replace(record, subject_ids=SYNTHETIC_IDS if synthetic else REAL_IDS)
    floor = dict(record.floor)
    if isinstance(floor.get("per_volume"), Mapping):
        floor["per_volume"] = _renamed(floor["per_volume"], pseudonyms)
    return dataclasses.replace(record, per_volume=_renamed(record.per_volume, pseudonyms), subjects=_renamed(record.subjects, pseudonyms),
                               floor=floor, subject_ids=pseudonyms.scheme)
