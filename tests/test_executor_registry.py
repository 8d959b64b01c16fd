"""Executors are plugins like methods: registered by name, found through the ``uadbench.executors``
entry points, listed by ``uadbench list executors``, and a third-party one is one module plus one
entry-point line."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from uadbench.cli import main
from uadbench.errors import UadbenchError
from uadbench.executors import EXECUTORS, Executor, LocalPoolExecutor, SerialExecutor, create_executor, list_executors
from uadbench.executors.ray import RayExecutor
from uadbench.executors.slurm import SlurmExecutor

SMOKE = Path(__file__).parent / "data" / "smoke.toml"


def test_local_slurm_and_ray_are_registered_through_entry_points():
    declared = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="uadbench.executors")}
    assert {"local": "uadbench.executors.local", "slurm": "uadbench.executors.slurm", "ray": "uadbench.executors.ray"}.items() <= declared.items()
    assert {"local", "slurm", "ray"} <= set(list_executors())
    assert (EXECUTORS.get("local"), EXECUTORS.get("slurm"), EXECUTORS.get("ray")) == (LocalPoolExecutor, SlurmExecutor, RayExecutor)
    for name in list_executors():
        cls = EXECUTORS.get(name)
        assert issubclass(cls, Executor) and cls.registered_name == name and EXECUTORS.describe(name)
    assert isinstance(create_executor(kind="local"), SerialExecutor)
    assert isinstance(create_executor(2, kind="local"), LocalPoolExecutor)


def test_uadbench_list_executors(capsys):
    assert main(["list", "executors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines}
    assert {"local", "ray", "slurm"} <= set(listed)
    assert "uadbench[slurm]" in listed["slurm"] and "uadbench[ray]" in listed["ray"]


def test_an_unknown_executor_is_one_line_with_the_closest_names(tmp_path, capsys):
    with pytest.raises(UadbenchError) as exc:
        create_executor(kind="slurmm")
    assert str(exc.value) == "unknown executor 'slurmm'; did you mean 'slurm'? available: local, ray, slurm"
    out = tmp_path / "run"
    assert main(["run", str(SMOKE), "--out", str(out), "--no-tracking", "--executor", "rayy"]) == 2
    err = capsys.readouterr().err
    assert err == "uadbench: error: unknown executor 'rayy'; did you mean 'ray'? available: local, ray, slurm\n"
    assert not out.exists()


PLUGIN = '''
"""An executor of one's own: every task in this process, each key written to $INLINE_LOG."""
import os

from uadbench.executors import SerialExecutor, register_executor


@register_executor("inline")
class InlineExecutor(SerialExecutor):
    """Every task in this process, each task's key written to a log"""

    def run(self, tasks):
        for task, result in super().run(tasks):
            with open(os.environ["INLINE_LOG"], "a") as log:
                log.write(task.key + "\\n")
            yield task, result
'''


def test_a_third_party_executor_is_one_module_and_one_entry_point_line(tmp_path, data_root):
    site = tmp_path / "site"
    (site / "uadbench_inline").mkdir(parents=True)
    (site / "uadbench_inline" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "uadbench_inline-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uadbench-inline\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[uadbench.executors]\ninline = uadbench_inline\n")
    log = tmp_path / "inline.log"
    env = dict(os.environ, PYTHONPATH=str(site), INLINE_LOG=str(log), MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_DATA=str(data_root),
               OMP_NUM_THREADS="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "uadbench.cli", *args], env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=600)

    listing = run("list", "executors", "in*")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split()[:2] == ["inline", "Every"]
    proc = run("run", str(SMOKE), "--out", str(tmp_path / "run"), "--no-tracking", "--executor", "inline")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 4  # thresh and ae x (none, gamma@1.5)
    assert len(log.read_text().splitlines()) == 4  # two fits and two evaluation tasks, all through the plugin
