"""Mixed precision and the speed benchmark: bf16/fp16 fits run, are keyed and recorded apart, and
stay close to fp32; the GPU benchmark runs on the CPU with its tiny preset."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uadbench import FitContext, create_method
from uadbench.data.slices import SliceDataset
from uadbench.errors import ConfigError
from uadbench.grid import parse_grid

ROOT = Path(__file__).resolve().parents[1]
GRID = {"name": "prec", "image_grid": "smoke", "train_dataset": "phantom-healthy-t2w",
        "methods": [{"name": "ddpm", "preset": "smoke"}], "datasets": [{"name": "phantom-tumour-t2w"}]}


def _fit(precision: str, steps: int = 6):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = SliceDataset(list(rng.random((4, 32, 32, 6)).astype(np.float32)))
    method = create_method("ddpm", "smoke", image_shape=(32, 32), steps=steps)
    method.fit(data, None, FitContext(generator=torch.Generator().manual_seed(0), precision=precision))
    return method


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_stays_close_to_fp32(precision):
    ref, low = _fit("fp32"), _fit(precision)
    a, b = ref.state_dict()["model"], low.state_dict()["model"]
    assert all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point())
    diffs = [float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()]
    assert 0 < max(diffs) < 0.05, f"{precision} weights moved {max(diffs)} from fp32 after 6 steps"


def test_precision_is_part_of_the_fit_key_and_validated():
    fp32 = parse_grid(GRID).fit_jobs()[0]
    bf16 = parse_grid({**GRID, "methods": [{"name": "ddpm", "preset": "smoke", "precision": "bf16"}]}).fit_jobs()[0]
    assert fp32.key != bf16.key and fp32.config_hash != bf16.config_hash
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        parse_grid({**GRID, "methods": [{"name": "ddpm", "preset": "smoke", "precision": "fp8"}]})
    with pytest.raises(ConfigError, match="compile must be true or false"):
        parse_grid({**GRID, "methods": [{"name": "ddpm", "preset": "smoke", "compile": "yes"}]})


def test_a_bf16_grid_runs_and_records_its_precision(tmp_path, data_root):
    from uadbench.run.runner import run_grid

    grid = {**GRID, "methods": [{"name": "ae", "preset": "smoke", "precision": "bf16"}]}
    summary = run_grid(parse_grid(grid), out_dir=tmp_path / "run", track=False, progress=lambda m: None)
    (rec,) = summary.records
    assert rec.precision == "bf16" and summary.fits[0]["precision"] == "bf16"
    assert 0 <= rec.metrics["auprc"] <= 1


def test_speed_benchmark_runs_on_cpu_with_the_tiny_preset(capsys):
    spec = importlib.util.spec_from_file_location("diffusion_speed", ROOT / "benchmarks" / "diffusion_speed.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    assert bench.main(["--device", "cpu", "--preset", "tiny", "--steps", "2", "--methods", "cddpm", "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("cddpm")]
    assert [r[1] for r in rows] == ["fp32", "bf16"]  # fp32 always runs: it is the agreement reference
    for r in rows:
        samples, tflops, mem, per_volume = float(r[2]), float(r[3]), float(r[5]), float(r[6])
        assert samples > 0 and tflops > 0 and mem > 0 and per_volume > 0
    assert float(rows[0][7]) == 0.0 and 0 < float(rows[1][7]) < 0.1 and math.isfinite(float(rows[1][7]))
