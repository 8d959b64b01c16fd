"""Nothing lost, nothing left behind: failures recorded while the rest goes on, results never
overwritten by fewer, killed runs resume to the same records and leave no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from uadbench import ReconstructionMethod, register_method
from uadbench.grid import parse_grid
from uadbench.registry import METHODS
from uadbench.run.runner import run_grid

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke.toml"
GRID = {
    "name": "durable", "image_grid": "smoke", "seeds": [0], "train_dataset": "phantom-healthy-t2w",
    "methods": [{"name": "thresh", "preset": "smoke"}], "datasets": [{"name": "phantom-tumour-t2w"}],
}


@dataclass(frozen=True)
class BrokenConfig:
    when: str = "fit"


@register_method("test-broken")
class Broken(ReconstructionMethod):
    """Test method: raises in fit."""

    Config = BrokenConfig
    presets = {"paper": {}, "cpu": {}, "smoke": {}}

    def fit(self, train, val, ctx):
        raise RuntimeError("this method cannot train")

    def reconstruct(self, images, *, generator):
        return torch.zeros_like(images)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_failing_fit_is_recorded_and_the_other_methods_go_on(tmp_path, data_root, capsys):
    from uadbench.cli import main

    grid = tmp_path / "g.toml"
    grid.write_text(SMOKE.read_text().replace('name = "ae"', 'name = "test-broken"'))
    code = main(["run", str(grid), "--out", str(tmp_path / "run"), "--no-tracking"])
    out, err = capsys.readouterr()
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "1 fit(s) or cell(s) failed" in line and "RuntimeError: this method cannot train" in line and "retries only those" in line
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"thresh"} and len(records) == 2
    board = (tmp_path / "run" / "leaderboard.md").read_text()
    assert "## Failed" in board and "fit test-broken seed 0: RuntimeError: this method cannot train" in board
    assert "FAILED fit test-broken" in out


def test_a_run_never_replaces_records_with_fewer(tmp_path, data_root):
    out = tmp_path / "run"
    inverted = {"name": "thresh", "preset": "smoke", "label": "inv", "overrides": {"invert": True}}
    two = {**GRID, "methods": [{"name": "thresh", "preset": "smoke"}, inverted]}
    first = run_grid(parse_grid(two), out_dir=out, track=False, progress=lambda m: None)
    before = (out / "results.jsonl").read_text()
    assert len(first.records) == 2
    second = run_grid(parse_grid(GRID), out_dir=out, track=False, progress=lambda m: None)
    assert len(second.records) == 1
    kept = [p for p in out.glob("results-*.jsonl")]
    assert len(kept) == 1 and kept[0].read_text() == before  # the earlier records, untouched
    # the same grid again replaces nothing
    run_grid(parse_grid(GRID), out_dir=out, track=False, progress=lambda m: None)
    assert len(list(out.glob("results-*.jsonl"))) == 1


def _env(data_root: Path) -> dict:
    return dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_DATA=str(data_root), OMP_NUM_THREADS="1")


def _start(out: Path, data_root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uadbench.cli", "run", str(SMOKE), "--out", str(out), *extra],
                            env=_env(data_root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out.parent)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            return
        assert time.time() < deadline, f"no {marker!r} within {timeout} s"
    raise AssertionError(f"the run ended before {marker!r}")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split()[2] == "Z")


def _records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("created",)}
            for line in path.read_text().splitlines()]


def test_killed_runs_resume_to_the_same_records_and_leave_nothing_behind(tmp_path, data_root):
    """SIGKILL a `--workers 2` run at three moments; each time no process of it survives 10 s, and
    the resumed run gives the records of an uninterrupted run, with killed MLflow runs closed."""
    reference = tmp_path / "reference"
    ref = subprocess.run([sys.executable, "-m", "uadbench.cli", "run", str(SMOKE), "--out", str(reference), "--workers", "2"],
                         env=_env(data_root), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-2000:]

    out = tmp_path / "killed"
    for marker in ("preparing data", "[fit ae seed 0] training", "[eval "):
        proc = _start(out, data_root, "--workers", "2")
        _wait_for(proc, marker)
        time.sleep(0.5)
        family = _children(proc.pid)
        assert family or marker == "preparing data", "the pool's workers should be running by now"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in family):
            time.sleep(0.2)
        assert not [p for p in family if _alive(p)], f"processes left after killing the run at {marker!r}"
    final = subprocess.run([sys.executable, "-m", "uadbench.cli", "run", str(SMOKE), "--out", str(out), "--workers", "2"],
                           env=_env(data_root), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("fit_key", "eval_key", "spec_hash", "cost", "versions")} for r in rs]
    assert strip(_records(out / "results.jsonl")) == strip(_records(reference / "results.jsonl"))
    assert [r["eval_key"] for r in _records(out / "results.jsonl")] == [r["eval_key"] for r in _records(reference / "results.jsonl")]
    assert not list(out.rglob(".*.tmp")), "the resumed run must sweep what the killed ones left half-written"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("uadbench-smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in parents).count("FINISHED") == 1
    assert all(r.info.status != "RUNNING" for r in runs), "a killed run was left RUNNING"


def test_runtime_registered_methods_reach_pool_workers(tmp_path, data_root):
    """A method registered in this process (not through an entry point) works with --workers 2."""
    grid = parse_grid({**GRID, "methods": [{"name": "test-broken", "preset": "smoke"}, {"name": "thresh", "preset": "smoke"}]})
    summary = run_grid(grid, out_dir=tmp_path / "run", track=False, workers=2, progress=lambda m: None)
    (failure,) = summary.failures
    assert "cannot train" in failure.error, failure.error  # it ran in a worker, which knew the method
    assert [r.method for r in summary.records] == ["thresh"]


def teardown_module(module):
    METHODS.unregister("test-broken")


def test_same_numbers_whatever_the_worker_count(tmp_path, data_root):
    """One torch thread per job by default, in-process or in a pool: the same records."""
    grid = parse_grid({**GRID, "methods": [{"name": "ae", "preset": "smoke"}, {"name": "thresh", "preset": "smoke"}]})
    one = run_grid(grid, out_dir=tmp_path / "one", track=False, workers=1, progress=lambda m: None)
    two = run_grid(grid, out_dir=tmp_path / "two", track=False, workers=2, progress=lambda m: None)
    assert [r.eval_key for r in one.records] == [r.eval_key for r in two.records]  # the same keys: thread count and device agree
    assert [(r.metrics, r.per_volume, r.thresholds) for r in one.records] == [(r.metrics, r.per_volume, r.thresholds) for r in two.records]
    assert {r.threads for r in one.records + two.records} == {1}
