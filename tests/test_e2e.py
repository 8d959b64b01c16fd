"""End to end: the smoke grid through the CLI, the MLflow store, resume, and a third-party plugin."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke.toml"


def _env(data_root: Path, extra_path: Path | None = None) -> dict:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_DATA=str(data_root), OMP_NUM_THREADS="1")
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(args, cwd, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "uadbench.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_root):
    work = tmp_path_factory.mktemp("smoke")
    out = work / "run"
    proc = _run(["run", str(SMOKE), "--out", str(out)], cwd=work, env=_env(data_root))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, out, proc


def test_smoke_grid_writes_results_leaderboard_and_prints_table(smoke_run):
    work, out, proc = smoke_run
    assert "[fit ae seed 0]" in proc.stdout  # progress while it works
    assert "Dice@oracle*" in proc.stdout  # the terminal table at the end
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # 2 methods x 1 dataset x (no shift + gamma@1.5) x 1 seed
    assert len(records) == 4
    cells = {(r["method"], r["shift"], r["severity"]) for r in records}
    assert cells == {("thresh", "none", None), ("thresh", "gamma", 1.5), ("ae", "none", None), ("ae", "gamma", 1.5)}
    for r in records:
        for key in ("method", "preset", "config_hash", "dataset", "split", "shift", "seed", "metrics", "thresholds", "versions", "spec_hash"):
            assert key in r, key
        assert 0.0 <= r["metrics"]["auprc"] <= 1.0 and 0.0 <= r["metrics"]["auroc"] <= 1.0
        assert "val-bisection" in r["thresholds"] and "/val" in r["thresholds"]["val-bisection"]["source"]
        assert r["metrics"]["dice@oracle"] >= r["metrics"]["dice@val-bisection"] - 1e-9
        lesion_volumes = [v for k, v in r["per_volume"].items() if k.startswith("tumour-")]
        healthy_volumes = [v for k, v in r["per_volume"].items() if k.startswith("healthy-")]
        assert len(lesion_volumes) == 4 and len(healthy_volumes) == 4
        assert all(math.isfinite(v["auprc"]) for v in lesion_volumes)
        assert all("auprc" not in v and v["fp_volume_ml@val-bisection"] >= 0 for v in healthy_volumes)
        assert r["metrics"]["fp_volume_ml@val-bisection"] >= 0
        if r["method"] == "ae":
            assert 0 < r["metrics"]["ssim"] <= 1 and r["metrics"]["psnr"] > 0
    board = (out / "leaderboard.md").read_text()
    assert "Dice@val-bisection" in board and "Dice@oracle (upper bound)" in board
    assert "phantom-tumour-t2w under gamma" in board and "| *floor* " in board
    assert not list(out.rglob("*.tmp"))


def test_smoke_grid_mlflow_store(smoke_run):
    import mlflow

    work, out, _ = smoke_run
    uri = f"sqlite:///{out / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["uadbench-smoke"])
    kinds = runs["tags.uadbench.kind"].fillna("parent").tolist()
    assert kinds.count("fit") == 2 and kinds.count("eval") == 4 and kinds.count("parent") == 1
    parent = runs[runs["tags.uadbench.kind"].isna()]["run_id"].iloc[0]
    children = runs[runs["tags.uadbench.kind"].notna()]
    assert (children["tags.mlflow.parentRunId"] == parent).all()
    evals = children[children["tags.uadbench.kind"] == "eval"]
    assert evals["metrics.auprc"].between(0, 1).all()
    assert set(evals["tags.shift"]) == {"none", "gamma"}
    ae_fit = children[(children["tags.uadbench.kind"] == "fit") & (children["tags.method"] == "ae")]
    assert "params.config.latent_dim" in ae_fit.columns or any(c.startswith("params.config.") for c in ae_fit.columns)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_cell = {(r["method"], r["shift"]): r["metrics"]["auprc"] for r in records}
    for _, row in evals.iterrows():
        assert row["metrics.auprc"] == pytest.approx(by_cell[(row["tags.method"], row["tags.shift"])])


def test_compare_two_methods_with_a_paired_permutation_test(smoke_run, data_root):
    from uadbench.evaluation.stats import paired_permutation_test

    work, out, _ = smoke_run
    proc = _run(["compare", str(out / "results.jsonl"), "ae", "thresh", "--shift", "none", "--subjects-only"], cwd=work, env=_env(data_root))
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    records = {r["method"]: r for r in rows if r["shift"] == "none"}
    subjects = sorted(s for s in records["ae"]["per_volume"] if "auprc" in records["ae"]["per_volume"][s])
    a = [records["ae"]["per_volume"][s]["auprc"] for s in subjects]
    b = [records["thresh"]["per_volume"][s]["auprc"] for s in subjects]
    assert f"n={len(subjects)}" in line and f"p={paired_permutation_test(a, b):.4g}" in line
    bad = _run(["compare", str(out / "results.jsonl"), "ae", "cdpm"], cwd=work, env=_env(data_root))
    assert bad.returncode == 2 and "no method 'cdpm'" in bad.stderr


def test_rerun_resumes_from_cache_with_identical_results(smoke_run, data_root):
    work, out, _ = smoke_run
    before = (out / "results.jsonl").read_text()
    proc = _run(["run", str(SMOKE), "--out", str(out), "--no-tracking"], cwd=work, env=_env(data_root))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training on" not in proc.stdout  # every fit came from the cache
    after = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "created"} for r in rs]
    assert strip(after) == strip([json.loads(line) for line in before.splitlines()])


PLUGIN = '''
"""A third-party method living outside uadbench."""
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from uadbench import ReconstructionMethod, register_method


@dataclass(frozen=True)
class BlurConfig:
    kernel: int = 5


@register_method("blur-residual")
class BlurResidual(ReconstructionMethod):
    """Residual against a box-blurred copy of the input (a plugin example)."""

    Config = BlurConfig
    presets = {"paper": {}, "cpu": {}, "smoke": {"kernel": 3}}

    def fit(self, train, val, ctx):
        ctx.progress("nothing to train")

    def reconstruct(self, images, *, generator):
        k = self.config.kernel
        return F.avg_pool2d(images, k, stride=1, padding=k // 2, count_include_pad=False)

    def state_dict(self):
        return {"kernel": self.config.kernel}

    def load_state_dict(self, state):
        assert state["kernel"] == self.config.kernel
'''


def test_third_party_method_from_entry_point(tmp_path, data_root):
    site = tmp_path / "site"
    (site / "uadbench_blurplugin").mkdir(parents=True)
    (site / "uadbench_blurplugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "uadbench_blurplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uadbench-blurplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[uadbench.methods]\nblur-residual = uadbench_blurplugin\n")
    env = _env(data_root, extra_path=site)

    listing = _run(["list", "methods", "blur*"], cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split()[0] == "blur-residual"
    assert "box-blurred" in listing.stdout

    grid = tmp_path / "plugin.toml"
    grid.write_text(SMOKE.read_text().replace('name = "ae"', 'name = "blur-residual"').replace('name = "smoke"', 'name = "plugin"'))
    proc = _run(["run", str(grid), "--out", str(tmp_path / "run"), "--no-tracking"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    methods = {json.loads(line)["method"] for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()}
    assert methods == {"thresh", "blur-residual"}
