"""Runner pieces: fits that reuse other fits, caching keys, deterministic predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from uadbench import ReconstructionMethod, register_method
from uadbench.data.pipeline import IMAGE_GRIDS
from uadbench.grid import MethodSpec, make_fit_job
from uadbench.registry import METHODS
from uadbench.run.maps import fit_dir, load_fitted, predict_volume
from uadbench.run.runner import run_fit


@dataclass(frozen=True)
class ReuseConfig:
    base_preset: str = "smoke"


@register_method("test-reuses-ae")
class ReusesAE(ReconstructionMethod):
    """Test method: reconstructs with a fitted AE that the runner hands over."""

    Config = ReuseConfig
    presets = {"paper": {}, "cpu": {}, "smoke": {}}

    @classmethod
    def dependencies(cls, config):
        return {"ae": (config.base_preset, {})}

    def fit(self, train, val, ctx):
        self.ae = ctx.dependencies["ae"]
        self.received = sorted(ctx.dependencies)

    def reconstruct(self, images, *, generator):
        return self.ae.reconstruct(images, generator=generator)

    def state_dict(self):
        return {"ae": self.ae.state_dict()}

    def load_state_dict(self, state):
        from uadbench import create_method

        self.ae = create_method("ae", self.config.base_preset, image_shape=self.image_shape)
        self.ae.load_state_dict(state["ae"])


def test_fit_that_reuses_another_fit(tmp_path, data_root):
    try:
        grid = IMAGE_GRIDS["smoke"]
        job = make_fit_job(MethodSpec("test-reuses-ae", "smoke"), "phantom-healthy-t2w", 0, 0, grid)
        (dep,) = job.depends_on
        assert dep.method.name == "ae" and dep.seed == job.seed and dep.image_grid == grid
        meta = run_fit(job, cache_dir=tmp_path, data_root=None, progress=lambda m: None)
        assert meta["dependencies"] == {"ae": dep.key}
        import json

        dep_meta = json.loads((fit_dir(tmp_path, dep) / "meta.json").read_text())
        assert meta["train_seconds"] == meta["own_train_seconds"] + dep_meta["train_seconds"]
        assert (fit_dir(tmp_path, dep) / "model.pt").is_file()  # the reused fit is cached on its own
        base = load_fitted(dep, tmp_path)
        reuser = load_fitted(job, tmp_path)
        x = torch.rand(4, 1, *grid.slice_shape)
        g = lambda: torch.Generator().manual_seed(0)
        torch.testing.assert_close(reuser.predict(x, generator=g()).anomaly_map, base.predict(x, generator=g()).anomaly_map)
        assert not list(tmp_path.rglob("*.tmp"))
        # a second call is a cache hit
        assert run_fit(job, cache_dir=tmp_path, data_root=None, progress=lambda m: None)["cached"] is True
    finally:
        METHODS.unregister("test-reuses-ae")


def test_fit_keys_change_with_everything_that_sets_the_weights():
    grid = IMAGE_GRIDS["smoke"]
    base = make_fit_job(MethodSpec("ae", "smoke"), "phantom-healthy-t2w", 0, 0, grid)
    assert make_fit_job(MethodSpec("ae", "smoke"), "phantom-healthy-t2w", 0, 0, grid).key == base.key
    others = [
        make_fit_job(MethodSpec("ae", "smoke", (("lr", 0.5),)), "phantom-healthy-t2w", 0, 0, grid),
        make_fit_job(MethodSpec("ae", "cpu"), "phantom-healthy-t2w", 0, 0, grid),
        make_fit_job(MethodSpec("ae", "smoke"), "phantom-healthy-t1w", 0, 0, grid),
        make_fit_job(MethodSpec("ae", "smoke"), "phantom-healthy-t2w", 1, 0, grid),
        make_fit_job(MethodSpec("ae", "smoke"), "phantom-healthy-t2w", 0, 1, grid),
        make_fit_job(MethodSpec("ae", "smoke"), "phantom-healthy-t2w", 0, 0, IMAGE_GRIDS["cpu"]),
    ]
    assert len({o.key for o in others} | {base.key}) == len(others) + 1
    # a label is presentation only
    assert make_fit_job(MethodSpec("ae", "smoke", (), "AE (mine)"), "phantom-healthy-t2w", 0, 0, grid).key == base.key


def test_predict_volume_restacks_slices_in_order():
    from uadbench import create_method

    method = create_method("thresh", "smoke", image_shape=(8, 8))
    image = np.random.default_rng(0).random((8, 8, 5)).astype(np.float32)
    amap, recon, seconds = predict_volume(method, image, seed=0, batch_size=2, device="cpu")
    np.testing.assert_array_equal(amap, image)  # thresh's map is the image itself
    assert recon is None and seconds >= 0


# -- cache keys and the anomaly-map cache ---------------------------------------------------------
GRID = {
    "name": "keys", "image_grid": "smoke", "seeds": [0], "train_dataset": "phantom-healthy-t2w",
    "methods": [{"name": "thresh", "preset": "smoke"}], "datasets": [{"name": "phantom-tumour-t2w"}],
    "shifts": [{"name": "gamma", "severities": [1.5]}],
}


@pytest.mark.parametrize("module, name", [
    ("uadbench.evaluation.protocol", "PROTOCOL_VERSION"),
    ("uadbench.evaluation.metrics", "METRICS_VERSION"),
    ("uadbench.shifts.base", "SHIFTS_VERSION"),
    ("uadbench.data.pipeline", "PIPELINE_VERSION"),
])
def test_evaluation_keys_and_spec_hash_change_with_every_component_version(monkeypatch, module, name):
    import importlib

    from uadbench.grid import parse_grid

    spec = parse_grid(dict(GRID))
    before = [j.key for j in spec.eval_jobs()], spec.spec_hash
    monkeypatch.setattr(importlib.import_module(module), name, "changed")
    spec = parse_grid(dict(GRID))  # a spec computes its hash once: a new version is a new run
    after = [j.key for j in spec.eval_jobs()], spec.spec_hash
    assert not set(before[0]) & set(after[0]), f"a change of {name} must not serve stale cells"
    assert before[1] != after[1]


def test_spec_hash_ignores_presentation_but_not_what_sets_numbers():
    from uadbench.grid import parse_grid

    base = parse_grid(dict(GRID)).spec_hash
    assert parse_grid({**GRID, "description": "another text", "name": "renamed"}).spec_hash == base
    assert parse_grid({**GRID, "methods": [{"name": "thresh", "preset": "smoke", "label": "T"}]}).spec_hash == base
    assert parse_grid({**GRID, "seeds": [1]}).spec_hash != base
    assert parse_grid({**GRID, "methods": [{"name": "thresh", "preset": "smoke", "overrides": {"invert": True}}]}).spec_hash != base


PREDICTED: list[str] = []


@dataclass(frozen=True)
class CountingConfig:
    scale: float = 1.0


@register_method("test-counting")
class Counting(ReconstructionMethod):
    """Test method: the residual against zero, remembering every input it predicts."""

    Config = CountingConfig
    presets = {"paper": {}, "cpu": {}, "smoke": {}}

    def fit(self, train, val, ctx):
        pass

    def reconstruct(self, images, *, generator):
        import hashlib

        PREDICTED.append(hashlib.sha1(images.numpy().tobytes()).hexdigest())
        return torch.zeros_like(images)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_each_input_is_predicted_once_and_new_metrics_reuse_the_maps(tmp_path, data_root, monkeypatch):
    """The healthy test split is predicted once per shift (not once per dataset and shift), and a
    rerun under a new metrics version recomputes every cell from cached maps without predicting."""
    from uadbench.grid import parse_grid
    from uadbench.run.runner import run_grid

    grid = {**GRID, "methods": [{"name": "test-counting", "preset": "smoke"}],
            "datasets": [{"name": "phantom-tumour-t2w"}, {"name": "phantom-ms-t2w"}]}
    PREDICTED.clear()
    first = run_grid(parse_grid(grid), out_dir=tmp_path / "run", track=False, progress=lambda m: None)
    assert len(first.records) == 4
    assert PREDICTED and len(PREDICTED) == len(set(PREDICTED)), "an input volume was predicted twice"
    # every input once: healthy val + healthy test x 2 shifts + per dataset (val + test x 2 shifts)
    n = {split: 3 if split == "val" else 4 for split in ("val", "test")}
    assert len(PREDICTED) == n["val"] + 2 * n["test"] + 2 * (n["val"] + 2 * n["test"])

    PREDICTED.clear()
    monkeypatch.setattr("uadbench.evaluation.metrics.METRICS_VERSION", "next")
    again = run_grid(parse_grid(grid), out_dir=tmp_path / "run", track=False, progress=lambda m: None)
    assert PREDICTED == [], "a new metric version must reuse the cached maps"
    assert {r.eval_key for r in again.records}.isdisjoint({r.eval_key for r in first.records})
    assert [r.metrics for r in again.records] == [r.metrics for r in first.records]


def test_whole_volume_methods_get_one_volume_per_predict_batch():
    from uadbench.grid import parse_grid

    spec = parse_grid({**GRID, "eval_batch_size": 4, "methods": [{"name": "mhd", "preset": "smoke"}, {"name": "ae", "preset": "smoke"}]})
    assert METHODS.get("mhd").whole_volume and not METHODS.get("ae").whole_volume
    assert spec.predict_batch_size("mhd") == spec.image_grid.shape[2] and spec.predict_batch_size("ae") == 4


def test_the_grid_docstring_example_is_a_valid_grid():
    import tomllib

    from uadbench import grid

    lines = grid.__doc__.split("A grid file looks like::\n")[1].splitlines()
    block = []
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    spec = grid.parse_grid(tomllib.loads("\n".join(block)))
    assert spec.methods[0].overrides_dict == {"steps": 400}
    assert [s.label for s in spec.shifts] == ["none", "gamma@0.7", "gamma@1.5"]
