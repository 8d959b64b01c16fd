"""uadbench works as an installed wheel from outside the repository, not only editable."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_the_mapped_packages_and_runs_outside_the_repo(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("uadbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "uadbench/methods/ae.py" in names and "uadbench/methods/thresh.py" in names
    assert "uadbench/datasets/__init__.py" in names
    assert not any(n.startswith(("methods/", "datasets/", "tests/")) for n in names)  # nothing at top level
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import uadbench, uadbench.methods, uadbench.datasets;"
        "print(uadbench.__file__);"
        "print(uadbench.methods.__file__);"
        "print(' '.join(uadbench.list_methods()))"
    )
    env = dict(os.environ, PYTHONPATH=str(site), MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pkg_file, methods_file, listed = proc.stdout.strip().splitlines()
    assert Path(pkg_file).is_relative_to(site) and Path(methods_file).is_relative_to(site)
    assert {"thresh", "ae"} <= set(listed.split())
