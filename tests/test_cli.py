"""The command line: listings, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from uadbench.cli import main

GOOD = """
name = "bad"
image_grid = "smoke"
train_dataset = "phantom-healthy-t2w"
[[methods]]
name = "thresh"
preset = "smoke"
[[datasets]]
name = "phantom-tumour-t2w"
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    return subprocess.run(
        [sys.executable, "-m", "uadbench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_list_methods_with_wildcard(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "thresh" in out and "ae" in out
    lines = {line.split()[0]: line for line in out.strip().splitlines()}
    assert len(lines["thresh"].split(None, 1)) == 2  # a description follows the name
    assert main(["list", "methods", "th*"]) == 0
    assert capsys.readouterr().out.split()[0] == "thresh"


@pytest.mark.parametrize("kind", ["datasets", "shifts", "metrics"])
def test_list_other_registries(kind, capsys):
    assert main(["list", kind]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace('name = "thresh"', 'name = "thrash"'), "unknown method 'thrash'; did you mean 'thresh'"),
        (lambda s: s.replace('name = "phantom-tumour-t2w"', 'name = "brats"'), "unknown dataset 'brats'"),
        (lambda s: s.replace('preset = "smoke"', 'preset = "smoke"\noverrides = { nope = 1 }'), "unknown config key 'nope'.*valid keys: invert"),
        (lambda s: s.replace('image_grid = "smoke"', 'image_grid = "smoke"\nepochs = 3'), "unknown key 'epochs'"),
        (lambda s: s + "[[shifts]]\nname = 'gama'\nseverities = [1.5]\n", "unknown shift 'gama'; did you mean 'gamma'"),
        (lambda s: s.replace("[[datasets]]", "[[datasets\n"), "not valid TOML"),
    ],
)
def test_bad_grid_is_one_line_exit_2_nothing_written(tmp_path, edit, message):
    grid = tmp_path / "bad.toml"
    grid.write_text(edit(GOOD))
    out = tmp_path / "run"
    proc = run_cli("run", str(grid), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("uadbench: error: ")
    import re

    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir())


def test_missing_grid_file(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"uadbench: error: grid file not found: {tmp_path / 'nope.toml'}"


def test_unknown_subcommand_and_kind():
    proc = run_cli("list", "widgets")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'widgets'" in proc.stderr


def test_report_missing_file(tmp_path):
    proc = run_cli("report", str(tmp_path / "results.jsonl"))
    assert proc.returncode == 2 and "results file not found" in proc.stderr


def test_phantom_preview_writes_a_png(tmp_path):
    out = tmp_path / "preview.png"
    proc = run_cli("phantom", "--preview", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phantom_needs_an_output(tmp_path):
    proc = run_cli("phantom", cwd=tmp_path)
    assert proc.returncode == 2 and "needs --out DIR and/or --preview" in proc.stderr
