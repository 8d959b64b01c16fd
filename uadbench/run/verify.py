"""``uadbench verify``: rerun a published edition's grid and hold every cell against its records.

An edition (``uadbench leaderboard --publish``) holds the grid it came from (``grid.toml``), its
records and ``environment.json``, whose ``verify`` entry declares the tolerance a reproduction must
meet: the largest absolute difference allowed in any metric of a cell (metrics are fractions, so
0.005 is half a percentage point). :func:`verify_edition` reruns the grid (or the methods a pattern
selects) in a fresh run directory, pairs the new records with the published ones by (method label,
dataset, shift, seed) and reports, per cell, the largest difference and whether it is inside the
tolerance. The records' library versions are compared with this environment's, since a different
numpy or torch is the first suspect of a difference.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uadbench.errors import UadbenchError
from uadbench.records import ResultRecord, read_records, version_differences

DEFAULT_TOLERANCE = 0.0  # an edition that declares none must be reproduced exactly
MIN_BAND = 0.01  # a reference check never asks for closer than one percentage point


@dataclass(frozen=True)
class ReferenceCheck:
    """A run's mean over seeds against a published mean ± sd (one method, dataset, metric)."""

    label: str
    dataset: str
    metric: str
    paper: float
    paper_sd: float | None
    run: float  # NaN when the run lacks the cell
    run_sd: float
    seeds: int
    within: bool

    @property
    def band(self) -> float:
        return max(2 * math.sqrt((self.paper_sd or 0.0) ** 2 + self.run_sd**2), MIN_BAND)


def verify_reference(reference: str | Path, results: str | Path) -> tuple[str, list[ReferenceCheck]]:
    """Every cell of a reference file (``leaderboard/paper-reference.json``: label, dataset, metric,
    mean, sd) against the unshifted records of a run: agreement when the run's mean over seeds lies
    within ``max(2 sqrt(sd_paper² + sd_run²), MIN_BAND)`` of the published mean. Cells the run
    lacks are listed as not reproduced."""
    import statistics

    path = Path(reference)
    try:
        ref = json.loads(path.read_text())
        cells = ref["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UadbenchError(f"{path}: not a reference file (JSON with a 'cells' list of label, dataset, metric, mean, sd): {exc}") from exc
    records = [r for r in read_records(results) if r.shift == "none"]
    out = []
    for c in cells:
        values = [float(r.metrics[c["metric"]]) for r in records
                  if r.label == c["label"] and r.dataset == c["dataset"] and c["metric"] in r.metrics]
        run = statistics.fmean(values) if values else math.nan
        run_sd = statistics.stdev(values) if len(values) > 1 else 0.0
        check = ReferenceCheck(c["label"], c["dataset"], c["metric"], float(c["mean"]), c.get("sd"), run, run_sd, len(values), False)
        out.append(dataclasses.replace(check, within=bool(values) and abs(run - check.paper) <= check.band))
    return str(ref.get("reference", path)), out


def reference_report(source: str, checks: list[ReferenceCheck]) -> str:
    lines = [f"against {source}: {len(checks)} cells (mean over seeds within max(2 combined sd, {MIN_BAND:g}) of the published mean)"]
    for c in checks:
        sd = "" if c.paper_sd is None else f" ± {100 * c.paper_sd:.2f}"
        run = "not in the run" if c.seeds == 0 else f"{100 * c.run:.2f} ± {100 * c.run_sd:.2f} ({c.seeds} seeds)"
        lines.append(f"  {c.label:<14} {c.dataset:<11} {c.metric:<19} paper {100 * c.paper:6.2f}{sd:<8} run {run:<28} "
                     f"{'ok' if c.within else 'DIFFERS'}")
    ok = sum(c.within for c in checks)
    lines.append(f"{ok} of {len(checks)} cells reproduced")
    return "\n".join(lines)


@dataclass(frozen=True)
class CellCheck:
    """One cell of the edition against its rerun."""

    label: str
    dataset: str
    shift: str
    seed: int
    metric: str  # the metric with the largest difference ("" when the rerun lacks the cell)
    published: float
    rerun: float
    difference: float  # rerun - published for that metric (NaN when the rerun lacks the cell)
    within: bool

    @property
    def cell(self) -> str:
        return f"{self.label} {self.dataset} {self.shift} seed {self.seed}"


@dataclass
class Verification:
    edition: Path
    run_dir: Path
    tolerance: float
    checks: list[CellCheck]
    version_differences: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.within for c in self.checks)

    def report(self) -> str:
        width = max((len(c.cell) for c in self.checks), default=4)
        lines = [f"uadbench verify {self.edition}: {len(self.checks)} cells, tolerance {self.tolerance:g} (absolute, any metric); "
                 f"rerun in {self.run_dir} ({self.seconds:.0f} s)"]
        lines += [f"  versions differ: {d}" for d in self.version_differences] or ["  versions: the records' and this environment's agree"]
        for c in self.checks:
            verdict = "ok" if c.within else "DIFFERS"
            what = "missing from the rerun" if not c.metric else f"{c.metric} {c.published:.6f} -> {c.rerun:.6f} ({c.difference:+.2e})"
            lines.append(f"  {c.cell:<{width}}  {verdict:<7}  {what}")
        bad = sum(not c.within for c in self.checks)
        lines.append(f"{len(self.checks) - bad} of {len(self.checks)} cells within {self.tolerance:g}" + ("" if not bad else f"; {bad} differ"))
        return "\n".join(lines)


def edition_records(edition: Path) -> list[ResultRecord]:
    for name in ("results.jsonl", "results.jsonl.gz"):
        if (edition / name).is_file():
            return read_records(edition / name)
    raise UadbenchError(f"{edition} holds no results.jsonl(.gz): pass a folder written by `uadbench leaderboard --publish`")


def declared_tolerance(edition: Path) -> float:
    """The tolerance the edition declares in ``environment.json`` (``verify.tolerance``)."""
    path = edition / "environment.json"
    try:
        env = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as exc:
        raise UadbenchError(f"{path}: not valid JSON ({exc})") from exc
    value = env.get("verify", {}).get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise UadbenchError(f"{path}: verify.tolerance must be a number >= 0, got {value!r}")
    return float(value)


def compare_cells(published: list[ResultRecord], rerun: list[ResultRecord], tolerance: float) -> list[CellCheck]:
    """Each published cell against the rerun's cell of the same (label, dataset, shift, seed): the
    metric with the largest absolute difference. NaN in both is agreement; NaN in one is not."""
    new = {(r.label, r.dataset, r.shift_label, r.seed): r for r in rerun}
    out = []
    for r in published:
        key = (r.label, r.dataset, r.shift_label, r.seed)
        other = new.get(key)
        if other is None:
            out.append(CellCheck(*key, "", math.nan, math.nan, math.nan, False))
            continue
        worst = ("", 0.0, 0.0, 0.0)
        for metric, value in sorted(r.metrics.items()):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            again = other.metrics.get(metric, math.nan)
            if math.isnan(value) and math.isnan(again):
                continue
            diff = again - value if not (math.isnan(value) or math.isnan(again)) else math.inf
            if not worst[0] or abs(diff) > abs(worst[3]):
                worst = (metric, float(value), float(again), diff)
        out.append(CellCheck(*key, *worst, abs(worst[3]) <= tolerance))
    return out


def verify_edition(edition: str | Path, *, only: str | None = None, out_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                   data_root: str | Path | None = None, workers: int = 1, tolerance: float | None = None,
                   progress: Callable[[str], None] = print) -> Verification:
    """Rerun ``edition``'s grid (the methods whose label matches ``only``, a shell pattern) in a fresh
    run directory and compare every published cell of those methods with its rerun."""
    from uadbench.grid import load_grid
    from uadbench.run import layout
    from uadbench.run.runner import run_grid

    edition = Path(edition)
    if not (edition / "grid.toml").is_file():
        raise UadbenchError(f"{edition} holds no grid.toml: pass a folder written by `uadbench leaderboard --publish --grid GRID`")
    published = edition_records(edition)
    tol = declared_tolerance(edition) if tolerance is None else tolerance
    spec = load_grid(edition / "grid.toml")
    if only is not None:
        methods = [m for m in spec.methods if fnmatch.fnmatchcase(m.display, only)]
        if not methods:
            raise UadbenchError(f"--only {only!r} matches no method of {edition}; its methods: {', '.join(m.display for m in spec.methods)}")
        spec = dataclasses.replace(spec, methods=methods)
        published = [r for r in published if fnmatch.fnmatchcase(r.label, only)]
    run_dir = Path(out_dir) if out_dir is not None else Path("runs") / f"verify-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if layout.results_path(run_dir).exists():
        raise UadbenchError(f"{run_dir} holds results already; verify reruns in a fresh run directory (pass another --out)")
    start = time.perf_counter()
    summary = run_grid(spec, out_dir=run_dir, cache_dir=cache_dir, data_root=data_root, workers=workers, track=False, progress=progress)
    return Verification(edition, run_dir, tol, compare_cells(published, summary.records, tol), version_differences(published),
                        time.perf_counter() - start)
