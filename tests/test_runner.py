"""Runner pieces: fits that reuse other fits, caching keys, deterministic predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uadbench import ReconstructionMethod, register_method
from uadbench.data.pipeline import IMAGE_GRIDS
from uadbench.grid import MethodSpec, make_fit_job
from uadbench.inference import predict_volume
from uadbench.registry import METHODS
from uadbench.runner import fit_dir, load_fitted, run_fit


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
