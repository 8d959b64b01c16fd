"""The floor: the protocol's result for a map constant on the brain mask (no learning, no intensity).

The protocol zeroes every map outside the eroded brain, so a constant map already separates brain
from background: its AUPRC is about the brain-voxel lesion prevalence, well above the prevalence
over all voxels, and its AUROC well above 50 %. Every cell records this floor; a method whose map
is constant on the brain ties it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from synthetic import brainlike_volumes
from uadbench import register_method
from uadbench.evaluation.protocol import EvalVolume, evaluate_dataset
from uadbench.method import AnomalyOutput, Method
from uadbench.run.cells import constant_brain_map, floor_evaluation

SHAPE = (32, 32, 12)


def _split(prefix: str, n: int, seed: int, lesion: bool) -> list[EvalVolume]:
    vols, brains, lesions = brainlike_volumes(n, shape=SHAPE, seed=seed, lesion=lesion)
    rng = np.random.default_rng(seed)
    return [EvalVolume(f"{prefix}-{i}", rng.random(SHAPE, dtype=np.float32), b, les if lesion else None, 3.0, image=v)
            for i, (v, b, les) in enumerate(zip(vols, brains, lesions))]


@pytest.fixture(scope="module")
def splits():
    return {"test": _split("tumour", 5, 1, True) + _split("healthy", 3, 2, False), "lesion_val": _split("val", 3, 3, True),
            "healthy_val": _split("hval", 3, 4, False)}


def _with_maps(volumes: list[EvalVolume], make) -> list[EvalVolume]:
    return [EvalVolume(v.subject_id, make(v), v.brain_mask, v.lesion_mask, v.spacing) for v in volumes]


def test_the_floor_is_the_protocol_on_a_map_constant_on_the_brain(splits):
    floor = floor_evaluation(splits["test"], lesion_val=splits["lesion_val"], healthy_val=splits["healthy_val"], seed=0)
    brain_map = lambda v: np.asarray(v.brain_mask, dtype=np.float32)  # noqa: E731
    direct = evaluate_dataset(_with_maps(splits["test"], brain_map), lesion_val=_with_maps(splits["lesion_val"], brain_map),
                              healthy_val=_with_maps(splits["healthy_val"], brain_map), seed=0).to_dict()
    assert floor["metrics"] == direct["aggregates"] and floor["per_volume"] == direct["per_volume"]
    assert floor["confidence_intervals"] == direct["confidence_intervals"]
    lesioned = [v for v in splits["test"] if v.lesion_mask is not None]
    prevalence = np.mean([(v.lesion_mask & v.brain_mask).sum() / v.brain_mask.sum() for v in lesioned])
    all_voxels = np.mean([v.lesion_mask.mean() for v in lesioned])
    assert floor["brain_prevalence"] == pytest.approx(prevalence)
    # the point of the floor: a constant map scores well above the prevalence over all voxels
    assert floor["metrics"]["auprc"] > 1.5 * all_voxels and floor["metrics"]["auroc"] > 0.6
    # the image plays no part: the floor's input has neither image nor reconstruction
    assert constant_brain_map(splits["test"][0]).image is None and constant_brain_map(splits["test"][0]).reconstruction is None


@pytest.mark.parametrize("value", [0.37, 5.0])
def test_a_map_constant_on_the_brain_ties_the_floor(splits, value):
    floor = floor_evaluation(splits["test"], lesion_val=splits["lesion_val"], healthy_val=splits["healthy_val"], seed=0)
    constant = lambda v: value * np.asarray(v.brain_mask, dtype=np.float32)  # noqa: E731
    result = evaluate_dataset(_with_maps(splits["test"], constant), lesion_val=_with_maps(splits["lesion_val"], constant),
                              healthy_val=_with_maps(splits["healthy_val"], constant), seed=0).to_dict()["aggregates"]
    assert set(result) == set(floor["metrics"])
    for key, expected in floor["metrics"].items():
        if key in ("l1_lesion", "l1_healthy"):  # in the raw map's units: scaled by the constant (their ratio is not)
            assert result[key] == pytest.approx(value * expected), key
        else:
            assert result[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), key


# -- through a whole run: a method whose map is one constant everywhere --------------------------------
@dataclass(frozen=True)
class ConstantConfig:
    value: float = 0.5


@register_method("test-constant")
class ConstantMap(Method):
    """Test method: the same anomaly score everywhere (it learns nothing and ignores the image)."""

    Config = ConstantConfig
    presets = {"paper": {}, "cpu": {}, "smoke": {}}

    def fit(self, train, val, ctx) -> None:
        ctx.progress("nothing to learn")

    def predict(self, images, *, generator):
        return AnomalyOutput(anomaly_map=torch.full_like(images, self.config.value))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_run_records_the_floor_and_a_constant_method_ties_it(tmp_path, data_root):
    from uadbench import report
    from uadbench.grid import parse_grid
    from uadbench.registry import METHODS
    from uadbench.run.runner import run_grid

    assert "test-constant" in METHODS.names()
    grid = {"name": "floor", "image_grid": "smoke", "seeds": [0], "train_dataset": "phantom-healthy-t2w",
            "methods": [{"name": "test-constant", "preset": "smoke"}, {"name": "thresh", "preset": "smoke"}],
            "datasets": [{"name": "phantom-tumour-t2w"}]}
    summary = run_grid(parse_grid(grid), out_dir=tmp_path / "run", track=False, progress=lambda m: None)
    records = {r.method: r for r in summary.records}
    floor = records["thresh"].floor
    assert floor and floor == records["test-constant"].floor  # the same floor for every method of a cell
    assert 0 < floor["brain_prevalence"] < 1 and floor["metrics"]["auprc"] > records["thresh"].dataset_stats["lesion_prevalence"]
    tied = records["test-constant"].metrics
    for key in ("auprc", "auroc", "auprc_brain", "auroc_brain", "dice@val-bisection", "dice@val-exact", "dice@oracle",
                "fp_volume_ml@val-bisection", "dice@healthy-fpr@5%"):
        assert tied[key] == pytest.approx(floor["metrics"][key], abs=1e-12), key
    board = (tmp_path / "run" / "leaderboard.md").read_text()
    assert "| *floor* " in board and "brain-voxel lesion prevalence" in board and "random score" not in board
    (table, *_) = report.tables_for(summary.records)
    col = ("", "AUPRC ↑")
    assert table.cells.loc["test-constant", col] == table.cells.loc["floor", col]
    example = tmp_path / "run" / "cache" / records["thresh"].example  # the record names its example volume
    assert records["thresh"].example.endswith(f"{records['thresh'].eval_key}-example") and any(example.glob("*_anomaly_map.nii.gz"))
