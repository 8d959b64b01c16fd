"""A published edition: everything a reader needs to check a leaderboard, in one folder.

:func:`publish` renders, from one ``results.jsonl``::

    <out>/README.md                 what is here, how it was made, the tables inline
    <out>/leaderboard.{md,tex,html,csv}
    <out>/figures/*.{png,pdf}       per-volume boxes, severity curves, example slices
    <out>/grid.toml                 the grid file the records came from (when given or found)
    <out>/results.jsonl             the records themselves (results.jsonl.gz above RECORDS_GZIP_BYTES)
    <out>/environment.json          versions and devices of the run, and of this rendering

Every table, and the box and severity figures, come from one tidy frame
(:func:`uadbench.report.tidy_frame`); the sweep and similarity figures are drawn from the records
themselves; where the records know their subjects' ages, sexes or sites, subgroup tables
(:mod:`uadbench.report.subgroups`) follow the shift tables. Subjects appear as the records name them
(pseudonyms from a default run); the example panel's title names no subject of pseudonymised
records. The edition holds no NIfTI files; the example panel is drawn from the cells' example
volumes in the run's cache (the folder each record names, ``ResultRecord.example``) when they are there.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uadbench.errors import UadbenchError
from uadbench.files import atomic_path, write_text_atomic
from uadbench.records import PSEUDONYM_SCHEME, Failure, ResultRecord, read_records, records_text, versions
from uadbench.report.subgroups import subgroup_tables


@dataclass
class Edition:
    """What :func:`publish` wrote."""

    out_dir: Path
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [*self.tables, *self.figures, *self.other]


def find_grid(records: Sequence[ResultRecord], results: Path, grid: str | os.PathLike | None) -> Path | None:
    """The grid file of ``records``: ``grid`` if given (it must exist), else ``leaderboard/<grid
    name>.toml`` beside the results or in the working directory, else None."""
    if grid is not None:
        path = Path(grid)
        if not path.is_file():
            raise UadbenchError(f"--grid {path}: no such grid file")
        return path
    names = {r.grid for r in records}
    if len(names) != 1:
        return None
    name = next(iter(names))
    for folder in (results.parent, results.parent / "leaderboard", Path.cwd() / "leaderboard"):
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def environment(records: Sequence[ResultRecord]) -> dict[str, Any]:
    """Versions and devices of the run (from the records) and of this rendering."""
    run_versions = []
    for r in records:
        if r.versions and r.versions not in run_versions:
            run_versions.append(r.versions)
    return {
        "run": {
            "versions": run_versions[0] if len(run_versions) == 1 else run_versions,
            "devices": sorted({r.device for r in records if r.device}),
            "precisions": sorted({r.precision for r in records if r.precision}),
            "threads": sorted({r.threads for r in records if r.threads}),
            "spec_hashes": sorted({r.spec_hash for r in records}),
            "grids": sorted({r.grid for r in records}),
            "image_grids": [json.loads(g) for g in sorted({json.dumps(r.image_grid, sort_keys=True) for r in records})],
            "cells": len(records),
            "first_cell": min((r.created for r in records if r.created), default=""),
            "last_cell": max((r.created for r in records if r.created), default=""),
        },
        "rendered_with": {
            **versions(),
            "libraries": {name: _version(name) for name in ("pandas", "seaborn", "matplotlib", "tabulate", "jinja2")},
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
    }


def _version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


EDITION_MARKER = ".uadbench-edition"  # written into every edition: --publish replaces files only in a folder that has it
_GRID_NAME = re.compile(r"[A-Za-z0-9_-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@\[\]=,()'+ -]*")  # labels, datasets, shifts: no '/', no '..'


def check_edition_folder(out: Path) -> None:
    """``out`` may receive an edition: missing, empty, or an earlier edition (its marker, or the
    files an edition made before the marker existed); anything else is refused, untouched."""
    if out.exists() and not out.is_dir():
        raise UadbenchError(f"--publish {out} is a file, not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    earlier = (out / EDITION_MARKER).is_file() or all((out / n).is_file() for n in ("environment.json", "leaderboard.md", "README.md"))
    if not earlier:
        raise UadbenchError(f"--publish {out} holds files that are not a uadbench edition; publish into an empty or new folder, "
                            "or into an earlier edition")


def check_record_strings(records: Sequence[ResultRecord], where: str) -> None:
    """Names that become file names, paths or table cells: plain, with no way out of the edition."""
    for i, r in enumerate(records):
        if not _GRID_NAME.fullmatch(r.grid):
            raise UadbenchError(f"{where}: record {i + 1} names grid {r.grid!r}; a grid name is letters, digits, '-' or '_'")
        for name in ("label", "dataset", "shift"):
            value = getattr(r, name)
            if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value or value == "floor" and name == "label":
                raise UadbenchError(f"{where}: record {i + 1} has {name} {value!r}; valid: letters, digits and . _ @ [ ] = , ( ) ' + - "
                                    "(no '/', no '..'; 'floor' is the floor row's)")


def publish(results: str | os.PathLike, out_dir: str | os.PathLike, *, grid: str | os.PathLike | None = None,
            cache_dir: str | os.PathLike | None = None, per_spec: bool = False, title: str | None = None, dpi: int = 100,
            formats: Sequence[str] = ("png", "pdf"), failures: Sequence[Failure] = (), command: str | None = None) -> Edition:
    """Render the edition of ``results`` into ``out_dir`` (created; files there are replaced).

    ``cache_dir``: the run's cache, for the example slices (default ``<results folder>/cache``).
    ``per_spec``: one set of tables per spec hash instead of an error when records mix them.
    ``command``: the command line to record in the README (how the edition was made)."""
    from uadbench import report
    from uadbench.report import figures

    results = Path(results)
    records = read_records(results)
    if not per_spec:
        report.check_one_spec(records)
    check_record_strings(records, str(results))
    out = Path(out_dir)
    check_edition_folder(out)
    previous = _previous_verify(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / EDITION_MARKER, "a uadbench edition (uadbench leaderboard --publish)\n")
    edition = Edition(out)
    grids = sorted({r.grid for r in records})
    title = title or f"uadbench leaderboard: {', '.join(grids)}"

    # 1. one tidy frame and one summary for every table and figure
    frame = report.tidy_frame(records)
    summary = report.summarise_frame(frame)
    all_tables = report.tables_from_summary(summary) + subgroup_tables(records)  # subgroups: where records know ages, sexes or sites

    # 2. tables
    rendered = {
        "leaderboard.md": report.leaderboard_markdown(records, title=title, failures=failures, tables=all_tables),
        "leaderboard.tex": report.leaderboard_latex(records, tables=all_tables),
        "leaderboard.html": report.leaderboard_html(records, title=title, tables=all_tables),
        "leaderboard.csv": report.summary_csv(summary),
    }
    for name, text in rendered.items():
        write_text_atomic(out / name, text)
        edition.tables.append(out / name)

    # 3. figures
    cache = Path(cache_dir) if cache_dir is not None else results.parent / "cache"
    examples = figures.example_dirs(records, cache) if cache.is_dir() else {}
    if not examples:
        edition.notes.append(f"no example volumes under {cache}/evals: the edition has no example slices")
    named = not any(r.subject_ids.startswith(PSEUDONYM_SCHEME) for r in records)  # example files carry real ids: not in titles
    edition.figures = figures.render_figures(frame, out / "figures", examples=examples, formats=formats, dpi=dpi, name_subjects=named)
    edition.figures += figures.render_record_figures(records, out / "figures", formats=formats, dpi=dpi)

    # 4. the grid, the records and the environment
    grid_path = find_grid(records, results, grid)
    if grid_path is not None:
        shutil.copyfile(grid_path, out / "grid.toml")
        edition.other.append(out / "grid.toml")
    else:
        edition.notes.append("grid file not found (pass --grid GRID.toml): the edition has no grid.toml")
    records_path = write_records(out, records, keep=results)
    env = environment(records)
    if previous:
        env["verify"] = previous  # the tolerance an earlier edition declared stays declared
    write_text_atomic(out / "environment.json", json.dumps(env, indent=2, sort_keys=True) + "\n")
    edition.other += [records_path, out / "environment.json"]
    write_text_atomic(out / "README.md", _readme(title, records, edition, all_tables, grid_path, command))
    edition.other.insert(0, out / "README.md")
    return edition


RECORDS_GZIP_BYTES = 1 << 20  # records above 1 MiB go gzipped (results.jsonl.gz): an edition stays small to commit


def _previous_verify(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "environment.json").read_text()).get("verify", {}))
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def write_records(out: Path, records: Sequence[ResultRecord], keep: Path | None = None) -> Path:
    """The edition's records as ``results.jsonl``, or gzipped (``results.jsonl.gz``, reproducible:
    no time stamp) when larger than RECORDS_GZIP_BYTES; the other form, left by an earlier edition,
    goes (never ``keep``, the file the records were read from)."""
    import gzip

    text = records_text(records).encode("utf-8")
    plain, packed = out / "results.jsonl", out / "results.jsonl.gz"
    path, stale = (packed, plain) if len(text) > RECORDS_GZIP_BYTES else (plain, packed)
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_bytes(gzip.compress(text, mtime=0) if path is packed else text)
    if keep is None or not (stale.exists() and keep.exists() and stale.resolve() == keep.resolve()):
        stale.unlink(missing_ok=True)
    return path


def _readme(title: str, records: Sequence[ResultRecord], edition: Edition, all_tables: Sequence[Any], grid_path: Path | None,
            command: str | None) -> str:
    from uadbench.report.render_markdown import markdown_text as md
    from uadbench.report.render_markdown import table_markdown

    out = edition.out_dir
    specs = sorted({r.spec_hash for r in records})
    devices = ", ".join(sorted({r.device for r in records if r.device})) or "unknown"
    precisions = ", ".join(sorted({r.precision for r in records if r.precision}))
    created = [r.created for r in records if r.created]
    rec_versions = next((r.versions for r in records if r.versions), {})
    lines = [f"# {md(title)}", ""]
    days = sorted({c[:10] for c in created})
    when = "" if not days else f", cells finished on {days[0]}" if len(days) == 1 else f", cells finished {days[0]} to {days[-1]}"
    lines.append(md(f"Benchmark version (spec hash) {', '.join(f'`{s}`' for s in specs)}: {len(records)} evaluation cells, "
                    f"run with uadbench {rec_versions.get('uadbench', '?')} on {devices} ({precisions}){when}."))
    lines.append("")
    notes = _grid_notes(grid_path)
    if notes:
        lines += ["## What this edition can and cannot show", "", md(notes.strip(), inline=False), ""]
    lines.append("## How it was made")
    lines.append("")
    grid_name = grid_path.as_posix() if grid_path is not None else "GRID.toml"
    shell = [f"uadbench run {grid_name} --out RUN_DIR", command or "uadbench leaderboard RUN_DIR/results.jsonl --publish DIR"]
    fence = "`" * max(3, 1 + max((len(run) for line in shell for run in re.findall("`+", line)), default=0))  # longer than any run inside
    lines += [f"{fence}bash", *(" ".join(line.splitlines()) for line in shell), fence, ""]
    records_name = next((p.name for p in edition.other if p.name.startswith("results.jsonl")), "results.jsonl")
    lines.append(f"Every table and figure here is rendered from `{records_name}` (one record per cell): the tables, boxes and "
                 "severity curves through one tidy frame (`uadbench.report.tidy_frame`), the sweep and similarity figures from the "
                 "records themselves; rerunning the second command on it gives the same tables.")
    schemes = sorted({r.subject_ids for r in records if r.subject_ids.startswith(PSEUDONYM_SCHEME)})
    if schemes:
        lines.append(f"Subjects are named by pseudonyms (HMAC-SHA256 of the subject id under the run's key, {', '.join(schemes)}); "
                     "the key stays in the run directory and is not part of this edition.")
    lines.append("")
    lines.append("## Files")
    lines.append("")
    describe = {
        "leaderboard.md": "the tables in Markdown", "leaderboard.tex": "the tables in LaTeX (booktabs)",
        "leaderboard.html": "the tables as one self-contained HTML page (click a header to sort)",
        "leaderboard.csv": "one row per dataset, shift and method: means, stds and bootstrap intervals (fractions)",
        "grid.toml": "the grid the records came from", "results.jsonl": "the records (one evaluation cell per line)",
        "results.jsonl.gz": "the records, gzipped (one evaluation cell per line; `uadbench leaderboard` reads it as it is)",
        "environment.json": "versions and devices of the run and of this rendering",
    }
    for path in [*edition.tables, *edition.other]:
        if path.name in describe:
            lines.append(f"- [`{path.name}`]({path.name}): {describe[path.name]}")
    for path in edition.figures:
        if path.suffix == ".png":
            pdf = path.with_suffix(".pdf")
            also = f" ([PDF]({_link(pdf.relative_to(out).as_posix())}))" if pdf in edition.figures else ""
            rel = path.relative_to(out).as_posix()
            lines.append(f"- [`{md(rel)}`]({_link(rel)}){also}: {md(_figure_text(path.stem))}")
    lines.append("")
    for note in edition.notes:
        lines += [f"Note: {md(note)}.", ""]
    for table in all_tables:
        lines += [f"## {md(table.title)}", "", table_markdown(table), "", md(table.caption), ""]
    for path in edition.figures:
        if path.suffix == ".png":
            rel = path.relative_to(out).as_posix()
            lines += [f"![{md(_figure_text(path.stem))}]({_link(rel)})", ""]
    return "\n".join(lines)


def _link(path: str) -> str:
    """A relative path as a Markdown link target: percent-encoded, so that it cannot end the link."""
    from urllib.parse import quote

    return quote(path, safe="/")


def _grid_notes(grid_path: Path | None) -> str:
    """The grid's ``notes`` (what its results can and cannot show), if the grid file is readable."""
    if grid_path is None:
        return ""
    import tomllib

    try:
        notes = tomllib.loads(grid_path.read_text(encoding="utf-8")).get("notes", "")
    except (OSError, ValueError):
        return ""
    return notes if isinstance(notes, str) else ""


def _figure_text(stem: str) -> str:
    if stem.startswith("volume-boxes"):
        return "per-volume AUPRC and Dice by method and dataset (unshifted; points are volumes, floor dashed)"
    if stem.startswith("severity-"):
        return f"metrics against the severity of the {stem.split('-', 1)[1]} shift (mean ± std over seeds; floor dashed)"
    if stem.startswith("sweep-"):
        return (f"AUPRC and Dice against the swept {stem.split('-', 2)[1]} and against training seconds, per method "
                "(95 % interval over seeds, or over subjects with one seed; floor dashed)")
    if stem.startswith("similarity-"):
        return ("AUPRC and healthy false-positive volume against the input SSIM of every shift (its change to the scans), "
                "one panel per method, one line per shift family")
    if stem.startswith("examples-"):
        return f"input | reconstruction | map | ground truth of one {stem.split('-', 1)[1]} test subject, the same slice for every method"
    return stem

