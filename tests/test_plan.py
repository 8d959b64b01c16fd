"""`uadbench run GRID --plan`: the fits, cells and splits of a grid, what the cache holds, time and
disk, printed before anything runs and without running anything."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uadbench.cli import main
from uadbench.config import create_config
from uadbench.grid import parse_grid
from uadbench.run import layout
from uadbench.run.plan import (
    DEFAULT_COSTS,
    MEASURED_ON,
    PROTOCOL_SECONDS,
    Placement,
    format_plan,
    placement,
    plan_run,
    training_steps,
)

GRID = {"name": "plan", "image_grid": "smoke", "seeds": [0, 1], "train_dataset": "phantom-healthy-t2w",
        "methods": [{"name": "thresh", "preset": "smoke"}, {"name": "ae", "preset": "smoke"}],
        "datasets": [{"name": "phantom-tumour-t2w"}], "shifts": [{"name": "gamma", "severities": [1.5]}]}
LOCAL = Placement("local", 1, 1, "cpu", "local")


def _files(folder):
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


def test_training_steps_follow_each_methods_budget():
    assert training_steps(create_config("ae", "paper", {})) == 19200
    assert training_steps(create_config("fanogan", "paper", {})) == 19200 + 19200  # the GAN, then the encoder
    assert training_steps(create_config("cddpm", "paper", {})) == 14400
    assert training_steps(create_config("cddpm", "paper", {"pretrain": True})) == 14400 + 14400
    assert training_steps(create_config("thresh", "paper", {})) == 0 and training_steps(create_config("mhd", "paper", {})) == 0


def test_the_cost_table_was_measured_here():
    assert "unmeasured" not in MEASURED_ON and "cores" in MEASURED_ON
    for (method, preset, grid), (step, fixed, predict) in DEFAULT_COSTS.items():
        assert step >= 0 and fixed >= 0 and predict > 0, (method, preset, grid)
    assert {("ae", "smoke", "smoke"), ("ae", "cpu", "cpu"), ("cddpm", "cpu", "cpu")} <= set(DEFAULT_COSTS)
    assert set(PROTOCOL_SECONDS) == {"smoke", "cpu", "paper"}


def test_placement_is_the_executors_without_creating_one():
    assert placement("local", {}, workers=3, threads=2, device="cpu") == Placement("local", 3, 2, "cpu", placement(
        "local", {}, workers=3, threads=2, device="cpu").text)
    slurm = placement("slurm", {"cpus": 4, "gpus": 1, "folder": "x"}, workers=1, threads=1, device="auto")
    assert (slurm.concurrency, slurm.threads, slurm.device) == (None, 4, "cuda")  # as SlurmExecutor.device_type
    assert placement("slurm", {}, workers=1, threads=2, device="auto").device == "cpu"
    assert placement("slurm", {"time": "1-00:00:00"}, workers=1, threads=1, device="cpu").time_limit == 86400.0
    assert placement("slurm", {"gpus": 1}, workers=1, threads=1, device="cpu").device == "cpu"
    ray = placement("ray", {}, workers=2, threads=3, device="cpu")
    assert ray.concurrency == 2 and ray.threads == 3  # a local Ray cluster of workers x cpus
    assert placement("ray", {"address": "auto"}, workers=2, threads=1, device="cpu").concurrency is None


def test_plan_before_a_run_lists_everything_to_do_and_writes_nothing(tmp_path, data_root):
    spec = parse_grid(GRID)
    plan = plan_run(spec, LOCAL, cache_dir=tmp_path / "cache")
    assert _files(tmp_path) == []
    fits = spec.fit_jobs(runtime={"threads": 1, "device": "cpu"})
    assert [f.job.key for f in plan.fits] == [f.key for f in spec.fit_graph(fits)]  # the run's own keys
    assert all(f.cached is False for f in plan.fits) and len(plan.fits) == 4
    assert sum(e.cells for e in plan.evals) == len(spec.eval_jobs(fits)) == 8 and all(e.cached == 0 for e in plan.evals)
    # the phantom's splits (UADBENCH_PHANTOM_SIZES of the test session: 6/3/4, lesion cohorts 4/3 here)
    from uadbench.data.dataset import create_dataset

    sizes = {(s.dataset, s.split): s.subjects for s in plan.splits}
    for (name, split), n in sizes.items():
        assert n == len(create_dataset(name).subjects(split))
    voxels = int(np.prod(spec.image_grid.shape))
    for s in plan.splits:
        assert s.bytes == s.subjects * voxels * (6 if s.dataset == "phantom-tumour-t2w" else 5) and s.cached is False
    # the time: the measured table on the CPU, one worker runs every task after the other
    ae = [f for f in plan.fits if f.job.method.name == "ae"][0]
    step, fixed, predict = DEFAULT_COSTS[("ae", "smoke", "smoke")]
    assert ae.cost.source == "table (smoke preset)" and ae.seconds == pytest.approx(fixed + 3 * step)
    ae_eval = [e for e in plan.evals if e.fit.key == ae.job.key][0]
    # maps: tumour test (none, gamma), tumour val, healthy val, healthy test (none, gamma)
    assert ae_eval.volumes == 2 * sizes[("phantom-tumour-t2w", "test")] + sizes[("phantom-tumour-t2w", "val")] + \
        sizes[("phantom-healthy-t2w", "val")] + 2 * sizes[("phantom-healthy-t2w", "test")]
    assert ae_eval.seconds == pytest.approx(ae_eval.volumes * predict + ae_eval.evaluated * PROTOCOL_SECONDS["smoke"])
    total = sum(f.seconds for f in plan.fits) + sum(e.seconds for e in plan.evals)
    assert plan.wall_seconds == pytest.approx(total)
    # on a cluster every task starts when it may: the longest fit and its evaluation
    cluster = plan_run(spec, Placement("slurm", None, 1, "cpu", "slurm"), cache_dir=tmp_path / "cache")
    assert cluster.wall_seconds == pytest.approx(max(f.seconds + e.seconds for f, e in zip(cluster.fits, cluster.evals, strict=True)))
    text = format_plan(plan)
    assert "fits: 4 (4 listed, 0 reused by others), 0 in the cache" in text and "evaluation cells: 8 (4 tasks, one per fit), 0 in the cache" in text
    assert f"measured on {MEASURED_ON}" in text and "job limit" not in text
    limit = min(f.seconds for f in plan.fits if f.steps) / 2
    over = sum(t > limit for t in [f.seconds for f in plan.fits] + [e.seconds for e in plan.evals])
    short = Placement("slurm", None, 1, "cpu", "slurm", time_limit=limit)
    assert over >= 2 and f"{over} tasks would run past the" in format_plan(plan_run(spec, short, cache_dir=tmp_path / "cache"))


def test_cli_plan_exits_0_and_runs_nothing_then_sees_the_run_in_the_cache(tmp_path, data_root, capsys):
    grid = tmp_path / "plan.toml"
    grid.write_text(
        'name = "plan"\nimage_grid = "smoke"\nseeds = [0]\ntrain_dataset = "phantom-healthy-t2w"\n'
        '[[methods]]\nname = "thresh"\npreset = "smoke"\n[[methods]]\nname = "ae"\npreset = "smoke"\n'
        '[[datasets]]\nname = "phantom-tumour-t2w"\n')
    run = tmp_path / "run"
    assert main(["run", str(grid), "--out", str(run), "--plan", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert not run.exists()  # nothing written, nothing prepared
    assert "plan of grid 'plan': nothing is run" in out and "local, 2 workers x 1 torch thread, cpu" in out
    assert "fits: 2 (2 listed, 0 reused by others), 0 in the cache" in out and "wall time" in out

    assert main(["run", str(grid), "--out", str(run), "--no-tracking"]) == 0
    capsys.readouterr()
    assert main(["run", str(grid), "--out", str(run), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "fits: 2 (2 listed, 0 reused by others), 2 in the cache" in out and "evaluation cells: 2 (2 tasks, one per fit), 2 in the cache" in out
    assert "5 splits, 5 in the cache" in out and "wall time 0 s" in out
    # a later plan of more steps reads the seconds per step of the cached fit
    spec = parse_grid({**GRID, "seeds": [0], "methods": [{"name": "ae", "preset": "smoke", "overrides": {"steps": 300}}]})
    plan = plan_run(spec, LOCAL, cache_dir=layout.default_cache(run))
    (meta,) = [json.loads(p.read_text()) for p in layout.fits_root(layout.default_cache(run)).glob("*/meta.json") if "ae" in p.read_text()
               and json.loads(p.read_text())["method"] == "ae"]
    (fit,) = plan.fits
    assert fit.cached is False and fit.cost.source == "history (1 fit)"
    assert fit.seconds == pytest.approx(300 * meta["own_train_seconds"] / 3)
    assert plan.splits and all(s.cached for s in plan.splits if not s.shift)


def test_a_grid_whose_data_are_missing_is_planned_with_the_papers_split_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("UADBENCH_DATA", str(tmp_path / "nothing"))
    spec = parse_grid({"name": "p", "image_grid": "paper", "seeds": [0, 1], "train_dataset": "ixi-t2",
                       "methods": [{"name": "ae", "preset": "cpu"}, {"name": "mhd", "preset": "cpu"}],
                       "datasets": [{"name": "brats21-t2"}]})
    plan = plan_run(spec, Placement("slurm", None, 1, "cpu", "slurm"), cache_dir=tmp_path / "cache")
    sizes = {(s.dataset, s.split): s.subjects for s in plan.splits}
    assert sizes == {("ixi-t2", "train"): 358, ("ixi-t2", "val"): 44, ("ixi-t2", "test"): 158,
                     ("brats21-t2", "val"): 100, ("brats21-t2", "test"): 1151}
    assert all(s.cached is None for s in plan.splits) and all(f.cached is None for f in plan.fits)
    assert [f.listed for f in plan.fits].count(False) == 2  # the cDDPM each mhd seed reuses
    text = format_plan(plan)
    assert "ixi-t2:" in text and "brats21-t2:" in text and "notes:" in text
    assert not (tmp_path / "cache").exists() and not (tmp_path / "nothing").exists()
    # the paper grid: 96 x 96 x 50 voxels, 6 bytes each for a lesion split
    assert [s.bytes for s in plan.splits if s.split == "test" and s.dataset == "brats21-t2"] == [1151 * 96 * 96 * 50 * 6]
