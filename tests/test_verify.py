"""``uadbench verify``: a published edition rerun from its own grid, cell by cell within its tolerance;
fit keys that hold the numerical libraries' versions; version differences named."""

from __future__ import annotations

import json
import math

import pytest

from uadbench.records import ResultRecord, read_records, version_differences

GRID = """name = "verifyme"
image_grid = "smoke"
seeds = [0]
train_dataset = "phantom-healthy-t2w"

[[methods]]
name = "thresh"
preset = "smoke"

[[methods]]
name = "ae"
preset = "smoke"
overrides = { steps = 20 }

[[datasets]]
name = "phantom-tumour-t2w"
"""


@pytest.fixture(scope="module")
def edition(tmp_path_factory, data_root):
    """A smoke grid, run and published as an edition."""
    from uadbench.cli import main

    root = tmp_path_factory.mktemp("verify")
    grid = root / "verifyme.toml"
    grid.write_text(GRID)
    assert main(["run", str(grid), "--out", str(root / "run"), "--no-tracking"]) == 0
    assert main(["leaderboard", str(root / "run" / "results.jsonl"), "--publish", str(root / "edition"), "--grid", str(grid)]) == 0
    return root / "edition"


def test_verify_reproduces_an_edition_exactly(edition, tmp_path, capsys):
    from uadbench.cli import main

    assert main(["verify", str(edition), "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 cells within 0" in out and "DIFFERS" not in out
    # the rerun is a fresh run directory: a second verify into it is refused
    assert main(["verify", str(edition), "--out", str(tmp_path / "again")]) == 2
    assert "holds results already" in capsys.readouterr().err


def test_verify_names_a_cell_that_moved_and_only_selects_methods(edition, tmp_path, capsys):
    from uadbench.cli import main

    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "grid.toml").write_text((edition / "grid.toml").read_text())
    records = read_records(edition / "results.jsonl")
    lines = []
    for r in records:
        d = r.to_dict()
        if r.label == "thresh":
            d["metrics"]["auprc"] += 0.01  # a published number the rerun cannot give
        lines.append(json.dumps(d))
    (moved / "results.jsonl").write_text("\n".join(lines) + "\n")
    (moved / "environment.json").write_text(json.dumps({"verify": {"tolerance": 0.005}}))
    assert main(["verify", str(moved), "--only", "th*", "--out", str(tmp_path / "r1")]) == 1
    out = capsys.readouterr().out
    assert "1 cells, tolerance 0.005" in out and "thresh phantom-tumour-t2w none seed 0" in out and "DIFFERS" in out and "auprc" in out
    assert " ae " not in out  # --only left the other method out
    # a tolerance on the command line overrides the edition's
    assert main(["verify", str(moved), "--only", "thresh", "--tolerance", "0.02", "--out", str(tmp_path / "r2")]) == 0
    assert main(["verify", str(moved), "--only", "nomatch*", "--out", str(tmp_path / "r3")]) == 2
    assert "matches no method" in capsys.readouterr().err


def test_fit_keys_hold_the_numerical_libraries_and_the_method_version(monkeypatch):
    from uadbench.grid import jobs, parse_grid
    from uadbench.registry import METHODS

    raw = {"name": "k", "image_grid": "smoke", "train_dataset": "phantom-healthy-t2w", "methods": [{"name": "ae", "preset": "smoke"}],
           "datasets": [{"name": "phantom-tumour-t2w"}]}
    before = parse_grid(dict(raw)).fit_jobs()[0].key
    real = jobs.numeric_versions()
    monkeypatch.setattr(jobs, "numeric_versions", lambda: {**real, "numpy": "0.0"})
    assert parse_grid(dict(raw)).fit_jobs()[0].key != before
    monkeypatch.undo()
    assert parse_grid(dict(raw)).fit_jobs()[0].key == before
    monkeypatch.setattr(METHODS.get("ae"), "version", "2")
    assert parse_grid(dict(raw)).fit_jobs()[0].key != before


def test_version_differences_name_each_library(edition):
    recs = read_records(edition / "results.jsonl")
    assert version_differences(recs) == []
    here = {**recs[0].versions, "numpy": "9.9.9"}
    assert version_differences(recs, here) == [f"numpy {recs[0].versions['numpy']} (records) != 9.9.9 (here)"]


def test_compare_cells_treats_a_missing_cell_and_nan(edition):
    from uadbench.run.verify import compare_cells

    recs = read_records(edition / "results.jsonl")
    checks = compare_cells(recs, recs[:1], 0.0)
    assert [c.within for c in checks] == [True, False] and math.isnan(checks[1].difference)
    nan = ResultRecord.from_dict({**recs[0].to_dict(), "metrics": {**recs[0].metrics, "auprc": math.nan}})
    assert not compare_cells([recs[0]], [nan], 1.0)[0].within
    assert compare_cells([nan], [nan], 0.0)[0].within


def test_a_run_held_against_a_reference_file(edition, tmp_path, capsys):
    from uadbench.cli import main

    recs = read_records(edition / "results.jsonl")
    ae = next(r for r in recs if r.label == "ae")
    ref = {"reference": "a paper, Table 1", "cells": [
        {"label": "ae", "dataset": ae.dataset, "metric": "auprc", "mean": ae.metrics["auprc"] + 0.004, "sd": 0.001},  # within the 0.01 floor
        {"label": "ae", "dataset": ae.dataset, "metric": "auroc", "mean": ae.metrics["auroc"] + 0.05, "sd": 0.01},  # 2 sd = 0.02 < 0.05
        {"label": "vae", "dataset": ae.dataset, "metric": "auprc", "mean": 0.5, "sd": 0.1},  # not in the run
    ]}
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(ref))
    assert main(["verify", str(path), "--results", str(edition / "results.jsonl")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("against a paper, Table 1: 3 cells") and out[-1] == "1 of 3 cells reproduced"
    assert out[1].endswith("ok") and out[2].endswith("DIFFERS") and "not in the run" in out[3]
    ref["cells"] = ref["cells"][:1]
    path.write_text(json.dumps(ref))
    assert main(["verify", str(path), "--results", str(edition / "results.jsonl")]) == 0
    assert main(["verify", str(path)]) == 2
    assert "pass --results" in capsys.readouterr().err


def test_the_paper_reference_covers_table_3():
    from pathlib import Path

    ref = json.loads((Path(__file__).resolve().parents[1] / "leaderboard" / "paper-reference.json").read_text())
    cells = {(c["label"], c["dataset"], c["metric"]): c for c in ref["cells"]}
    assert len(cells) == len(ref["cells"]) == 11 * 8  # 11 rows x (4 datasets x Dice, AUPRC)
    assert cells[("cddpm-ens-ssl", "brats21-t2", "auprc")]["mean"] == pytest.approx(0.5884)
    assert cells[("thresh", "wmh-t1", "dice@val-bisection")]["sd"] is None
    from uadbench.grid import load_grid

    root = Path(__file__).resolve().parents[1] / "leaderboard"
    labels = {m.display for g in ("paper.toml", "paper-t1.toml") for m in load_grid(root / g).methods}
    assert {c["label"] for c in ref["cells"]} <= labels  # every reference row names a method of the paper grids


@pytest.mark.slow
def test_the_committed_quickstart_edition_reproduces_its_intensity_threshold(tmp_path, monkeypatch, capsys):
    """A cheap subset of `uadbench verify leaderboard/quickstart`: the thresh cells (no training), on
    the phantom at its default sizes, in a fresh data root: the published numbers, within tolerance."""
    from pathlib import Path

    from uadbench.cli import main

    monkeypatch.setenv("UADBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("UADBENCH_PHANTOM_SIZES", raising=False)
    edition = Path(__file__).resolve().parents[1] / "leaderboard" / "quickstart"
    assert main(["verify", str(edition), "--only", "thresh", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 cells within 0" in out, out
