"""AnoDDPM and THOR on a fitted DDPM: the filters against scipy, the maps against closed forms with a
known denoiser, THOR's harmonisation step by step, the reuse of the grid's DDPM fit, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from scipy.stats import hmean

import uadbench
from synthetic import brainlike_volumes
from uadbench.data import SliceDataset
from uadbench.data.pipeline import IMAGE_GRIDS
from uadbench.errors import ConfigError, UadbenchError
from uadbench.grid import MethodSpec, make_fit_job
from uadbench.method import FitContext, method_class
from uadbench.methods.thor import harmonic_mean, region_mask

SHAPE = (32, 32)


# -- THOR's filters -----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [3, 7, 13])
def test_region_mask_matches_scipy_grey_morphology(size):
    rng = np.random.default_rng(size)
    m = rng.random((2, 24, 20)) ** 3
    closed = ndi.grey_closing(m, size=(1, size, size), mode="nearest")
    expected = np.clip((ndi.grey_dilation(closed, size=(1, size, size), mode="nearest") + m) / 2, 0, 1)
    ours = region_mask(torch.from_numpy(m)[:, None], size)[:, 0].numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_harmonic_mean_matches_scipy():
    rng = np.random.default_rng(0)
    maps = [rng.random((3, 5)) + 0.01 for _ in range(4)]
    ours = harmonic_mean([torch.from_numpy(m) for m in maps]).numpy()
    np.testing.assert_allclose(ours, hmean(np.stack(maps), axis=0), rtol=1e-12)
    maps[2][1, 1] = 0.0  # a pixel that is 0 at one index is 0
    assert harmonic_mean([torch.from_numpy(m) for m in maps])[1, 1] == 0


# -- the methods on a fitted DDPM ---------------------------------------------------------------
def _datasets():
    vols, _, _ = brainlike_volumes(4, shape=(*SHAPE, 4), seed=0)
    return SliceDataset(vols[:3]), SliceDataset(vols[3:])


@pytest.fixture(scope="module")
def images():
    vols, _, _ = brainlike_volumes(1, shape=(*SHAPE, 5), seed=7, lesion=True)
    return torch.from_numpy(np.moveaxis(vols[0], -1, 0))[:, None].float()


@pytest.fixture(scope="module")
def fitted_ddpm():
    torch.manual_seed(0)
    base = uadbench.create_method("ddpm", "smoke", image_shape=SHAPE)
    train, val = _datasets()
    base.fit(train, val, FitContext(generator=torch.Generator().manual_seed(0), max_steps=2))
    return base


def _on(name, base, preset="smoke", **overrides):
    method = uadbench.create_method(name, preset, image_shape=SHAPE, **overrides)
    method.fit(*_datasets(), FitContext(dependencies={"ddpm": base}))
    return method


class _Healer(torch.nn.Module):
    """A denoiser whose x0 estimate is always one known image (in [-1, 1]); records its inputs."""

    def __init__(self, healthy: torch.Tensor):
        super().__init__()
        self.healthy = healthy * 2 - 1
        self.inputs: list[tuple[int, torch.Tensor]] = []

    def forward(self, x_t, t, cond=None):
        self.inputs.append((int(t[0]), x_t.clone()))
        return self.healthy.expand_as(x_t)


def _healed(name, images, healthy, **overrides):
    base = uadbench.create_method("ddpm", "smoke", image_shape=SHAPE)
    healer = _Healer(healthy)
    base.model.unet = healer
    return _on(name, base, **overrides), healer


@pytest.mark.parametrize("name", ["anoddpm", "thor"])
def test_reuses_the_grids_ddpm_fit(name, fitted_ddpm, monkeypatch):
    for preset in ("paper", "cpu", "smoke"):
        cls = method_class(name)
        assert cls.dependencies(uadbench.create_config(name, preset)) == {"ddpm": (preset, {})}
        grid = IMAGE_GRIDS["smoke"]
        job = make_fit_job(MethodSpec(name, preset), "phantom-healthy-t2w", 0, 0, grid)
        assert [d.key for d in job.depends_on] == [make_fit_job(MethodSpec("ddpm", preset), "phantom-healthy-t2w", 0, 0, grid).key]
    cfg = uadbench.create_config(name, "cpu", base_overrides={"steps": 900})
    assert method_class(name).dependencies(cfg) == {"ddpm": ("cpu", {"steps": 900})}

    def no_training(*args, **kwargs):
        raise AssertionError(f"{name} must not train a handed-over ddpm")

    monkeypatch.setattr(type(fitted_ddpm), "fit", no_training)
    method = _on(name, fitted_ddpm)
    assert method.ddpm is fitted_ddpm and method.num_parameters() == fitted_ddpm.num_parameters() > 0


def test_network_passes_follow_t_start_and_the_respacing():
    assert uadbench.create_method("anoddpm", "paper").network_passes == 481  # lambda: indices 480 .. 0
    assert uadbench.create_method("thor", "paper").network_passes == 482  # t_s + 1: indices 481 .. 0
    assert uadbench.create_method("anoddpm", "cpu").network_passes == 8
    assert uadbench.create_method("anoddpm", "cpu", sample_steps=0, t_start=50).network_passes == 50
    assert uadbench.create_config("anoddpm", "cpu", sample_steps=5, t_start=481).indices == (480, 360, 240, 120, 0)


def test_anoddpm_map_is_the_residual_to_the_chains_end(images):
    """With a denoiser that always answers the healthy image h, the chain ends at h and the map is |x - h|,
    for the ancestral and the DDIM chain, simplex and Gaussian noise; every visited index is one pass."""
    healthy = (images * 0.5).clamp(0, 1)
    for overrides in ({}, {"sampler": "ddim", "eta": 0.3}, {"noise": "gaussian", "variance": "small"}):
        method, healer = _healed("anoddpm", images, healthy, sample_steps=4, t_start=300, **overrides)
        out = method.predict(images, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out.reconstruction, healthy, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.anomaly_map, (images - healthy).abs(), rtol=0, atol=1e-6)
        assert [t for t, _ in healer.inputs] == [299, 199, 100, 0]  # linspace(299, 0, 4) rounded


def test_anoddpm_first_state_is_the_noised_input(images):
    """The first network input is sqrt(a) x + sqrt(1 - a) n with one simplex field n shared by the batch."""
    method, healer = _healed("anoddpm", images, images, sample_steps=2, t_start=200)
    method.predict(images, generator=torch.Generator().manual_seed(1))
    t, x_t = healer.inputs[0]
    a = float(method.ddpm.model.process.schedule.alphas_cumprod[t])
    noise = (x_t - math.sqrt(a) * (images * 2 - 1)) / math.sqrt(1 - a)
    torch.testing.assert_close(noise, noise[:1].expand_as(noise))  # shared by the batch
    assert 0.2 < float(noise.std()) < 1.0  # simplex (std about 0.5-0.66), not unit Gaussian


def test_thor_harmonises_with_the_first_noise_field_and_maps_the_harmonic_mean(images):
    """With the healing denoiser every kept residual is |h - x| / max: the map is that (clipped to
    0.999); after each harmonisation the next network input is the blend re-noised with the first field."""
    healthy = (images * 0.5).clamp(0, 1)
    method, healer = _healed("thor", images, healthy, sample_steps=5, t_start=401, harmonise_at=(301, 201), map_at=(401, 1),
                             kernel=3)
    out = method.predict(images, generator=torch.Generator().manual_seed(0))
    r = (healthy - images).abs()
    m = r / r.amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out.anomaly_map, m.clamp(0, 0.999), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.reconstruction, healthy, rtol=0, atol=1e-6)
    visited = [t for t, _ in healer.inputs]
    assert visited == [400, 300, 200, 100, 0]
    abar = method.ddpm.model.process.schedule.alphas_cumprod
    a0 = float(abar[400])
    noise = (healer.inputs[0][1] - math.sqrt(a0) * (images * 2 - 1)) / math.sqrt(1 - a0)
    m_reg = region_mask(m, 3)
    blend = (m_reg * healthy + (1 - m_reg) * images).clamp(0, 1) * 2 - 1
    for k in (2, 3):  # the inputs after the harmonisations at indices 300 and 200
        a = float(abar[visited[k]])
        torch.testing.assert_close(healer.inputs[k][1], math.sqrt(a) * blend + math.sqrt(1 - a) * noise, rtol=0, atol=1e-5)
    # without harmonisation the chain is the plain ancestral one: a fresh draw at each step
    plain, healer = _healed("thor", images, healthy, sample_steps=5, t_start=401, harmonise_at=(), map_at=(401, 1))
    plain.predict(images, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(healer.inputs[2][1], math.sqrt(float(abar[200])) * blend + math.sqrt(1 - float(abar[200])) * noise, atol=1e-3)


def test_thor_snaps_its_timesteps_to_the_visited_indices():
    cfg = uadbench.create_config("thor", "cpu")
    assert cfg.indices == (481, 412, 344, 275, 206, 137, 69, 0)
    keep, harmonise = cfg.kept_indices()
    # wanted 393, 300, 203, 103 (a tie between 137 and 69 goes to the larger) and 481, 0 for the maps
    assert harmonise == {412, 275, 206, 137}
    assert keep == {481, 412, 275, 206, 137, 0}
    assert uadbench.create_config("thor", "paper").kept_indices() == ({481, 393, 300, 203, 103, 0}, {393, 300, 203, 103})


@pytest.mark.parametrize("name", ["anoddpm", "thor"])
def test_predict_is_deterministic_per_seed(name, fitted_ddpm, images):
    method = _on(name, fitted_ddpm)
    out = method.predict(images, generator=torch.Generator().manual_seed(5))
    again = method.predict(images, generator=torch.Generator().manual_seed(5))
    other = method.predict(images, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(out.anomaly_map, again.anomaly_map, rtol=0, atol=0)
    assert not torch.equal(out.anomaly_map, other.anomaly_map)
    assert out.anomaly_map.shape == images.shape and torch.isfinite(out.anomaly_map).all() and out.anomaly_map.min() >= 0


@pytest.mark.parametrize("name", ["anoddpm", "thor"])
def test_state_and_standalone_fit(name, images):
    fresh = uadbench.create_method(name, "smoke", image_shape=SHAPE)
    with pytest.raises(UadbenchError, match="fit or load_state_dict"):
        fresh.predict(images, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UadbenchError, match="'ddpm' state"):
        fresh.load_state_dict({})
    fresh.fit(*_datasets(), FitContext(generator=torch.Generator().manual_seed(0), max_steps=1))
    assert type(fresh.ddpm).__name__ == "DDPM" and fresh.ddpm.config == uadbench.create_config("ddpm", "smoke")
    loaded = uadbench.create_method(name, "smoke", image_shape=SHAPE)
    loaded.load_state_dict(fresh.state_dict())
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded.predict(images, generator=g()).anomaly_map, fresh.predict(images, generator=g()).anomaly_map)


@pytest.mark.parametrize("name, overrides, match", [
    ("anoddpm", {"t_start": 1001}, r"t_start must lie in \[1, 1000\]"),
    ("anoddpm", {"noise": "perlin"}, "valid: simplex, gaussian"),
    ("anoddpm", {"sampler": "euler"}, "valid: ddpm, ddim"),
    ("anoddpm", {"variance": "tiny"}, "valid: small, large"),
    ("anoddpm", {"sample_steps": -1}, r"sample_steps \(a step count\) must lie in \[0, "),
    ("anoddpm", {"eta": -0.5}, "eta >= 0"),
    ("anoddpm", {"base_overrides": {"no_such_key": 1}}, "unknown config key"),
    ("thor", {"harmonise_at": (600,)}, r"harmonise_at must hold timesteps in \[1, t_start=482\]"),
    ("thor", {"kernel": 4}, "kernel must be a positive odd integer"),
    ("thor", {"normalise": "volume"}, "valid: image, none"),
    ("thor", {"map_at": (), "harmonise_at": ()}, "at least one timestep"),
])
def test_config_rejects_bad_values(name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        uadbench.create_config(name, "paper", **overrides)


def test_a_fit_records_its_network_passes(tmp_path, data_root):
    """The fit's meta (and so each cell's cost) carries the chain's network passes per slice; the
    reused DDPM fit is cached on its own and records none."""
    import json

    from uadbench.run.maps import fit_dir
    from uadbench.run.runner import run_fit

    job = make_fit_job(MethodSpec("anoddpm", "smoke"), "phantom-healthy-t2w", 0, 0, IMAGE_GRIDS["smoke"])
    meta = run_fit(job, cache_dir=tmp_path, data_root=None, progress=lambda m: None)
    assert meta["network_passes"] == 3 and meta["own_train_seconds"] < meta["train_seconds"]
    (dep,) = job.depends_on
    assert "network_passes" not in json.loads((fit_dir(tmp_path, dep) / "meta.json").read_text())
