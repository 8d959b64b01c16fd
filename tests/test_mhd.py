"""MHD: the Mahalanobis map against numpy/scipy references, the filters, and the method's wiring."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from scipy.spatial.distance import mahalanobis
from skimage.metrics import structural_similarity

import uadbench
from synthetic import brainlike_volumes
from uadbench.data import SliceDataset
from uadbench.errors import ConfigError, UadbenchError
from uadbench.method import FitContext
from uadbench.methods.mhd import MHD, mahalanobis_map, mahalanobis_terms
from uadbench.nn.filters import gaussian_filter, ssim_map

SHAPE = (32, 32)


# -- the Mahalanobis map ------------------------------------------------------------------------
def _gaussian_samples(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multivariate_normal(mean, cov, size=n))  # (N, P)


def test_slice_distance_matches_scipy_and_the_true_covariance():
    p = 4
    mean = np.array([0.2, 0.5, 0.4, 0.9])
    std = np.array([0.1, 0.2, 0.05, 0.3])
    corr = np.full((p, p), 0.3) + 0.7 * np.eye(p)
    cov = corr * np.outer(std, std)
    samples = _gaussian_samples(20000, mean, cov, seed=0)[:, None, :]  # (N, B=1, P)
    lam = 1e-6
    sample_mean = samples.mean(0)
    # the mean itself is at distance 0
    assert mahalanobis_terms(sample_mean, samples, regulariser=lam).abs().max() < 1e-9

    x = torch.from_numpy(mean + np.array([0.3, -0.1, 0.02, 0.5]))[None]
    terms = mahalanobis_terms(x, samples, regulariser=lam)
    # the per-pixel terms add up to the squared distance under the regularised sample covariance
    s_cov = np.cov(samples[:, 0].numpy().T) + lam * np.eye(p)
    expected = mahalanobis(x[0].numpy(), sample_mean[0].numpy(), np.linalg.inv(s_cov))
    assert float(terms.sum()) == pytest.approx(expected**2, rel=1e-9)
    # and each term is d_i (S^-1 d)_i
    d = x[0].numpy() - sample_mean[0].numpy()
    np.testing.assert_allclose(terms[0].numpy(), d * np.linalg.solve(s_cov, d), rtol=1e-9)
    # with many samples the sample covariance is the true one: distance under the true covariance
    true = mahalanobis(x[0].numpy(), mean, np.linalg.inv(cov))
    assert float(terms.sum()) ** 0.5 == pytest.approx(true, rel=0.03)


def test_distance_grows_with_a_known_offset():
    p = 6
    std = np.linspace(0.05, 0.3, p)
    samples = _gaussian_samples(50000, np.zeros(p), np.diag(std**2), seed=1)[:, None, :]
    base = mahalanobis_map(torch.zeros(1, p, dtype=torch.float64), samples, regulariser=1e-8)
    assert base.max() < 0.05
    for k in (1.0, 2.0, 4.0):
        # offset of k standard deviations in every pixel: independent pixels give sqrt(m_i) ~ k
        md = mahalanobis_map(torch.from_numpy(k * std)[None], samples, regulariser=1e-8)
        np.testing.assert_allclose(md[0].numpy(), k, rtol=0.05)


def test_terms_match_the_explicit_inverse_of_the_reference_within_the_mask():
    g = torch.Generator().manual_seed(0)
    b, n, h, w = 3, 10, 6, 7
    x = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64)
    samples = x + 0.1 * torch.randn(n, b, 1, h, w, generator=g, dtype=torch.float64)
    mask = torch.rand(b, 1, h, w, generator=g) > 0.3
    terms = mahalanobis_terms(x, samples, mask, regulariser=1e-2)
    md = mahalanobis_map(x, samples, mask, regulariser=1e-2)
    negatives = 0
    for i in range(b):
        m = mask[i].reshape(-1).numpy()
        r = samples[:, i].reshape(n, -1).numpy()[:, m]
        mu = r.mean(0)
        cov = np.cov(r.T) + 1e-2 * np.eye(r.shape[1])  # P x P pixel covariance, as the reference
        d = x[i].reshape(-1).numpy()[m] - mu
        ref = d * (np.linalg.inv(cov) @ d)
        np.testing.assert_allclose(terms[i].reshape(-1).numpy()[m], ref, rtol=1e-7, atol=1e-10)
        # outside the mask: 0; negative terms: 0 after the square root (the reference's NaN -> 0)
        assert (terms[i].reshape(-1).numpy()[~m] == 0).all()
        np.testing.assert_allclose(md[i].reshape(-1).numpy()[m], np.sqrt(np.clip(ref, 0, None)), rtol=1e-6, atol=1e-9)
        negatives += int((ref < 0).sum())
    assert negatives > 0  # the case above does exercise the clamping


def test_masked_pixels_do_not_influence_the_others():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64)
    samples = torch.rand(6, 1, 1, 5, 5, generator=g, dtype=torch.float64)
    mask = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    mask[..., 1:4, 1:4] = True
    altered = samples.clone()
    altered[..., 0, :] = 100 * torch.rand(6, 1, 1, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        mahalanobis_map(x, samples, mask), mahalanobis_map(x, altered, mask), rtol=0, atol=1e-12
    )


def test_regulariser_makes_zero_variance_finite():
    x = torch.tensor([[0.5, 0.2, 0.7, 0.0]], dtype=torch.float64)
    samples = torch.tensor([[0.5, 0.3, 0.4, 0.0]], dtype=torch.float64).expand(5, 1, 4)  # identical samples
    md = mahalanobis_map(x, samples, regulariser=1e-2)
    assert torch.isfinite(md).all()
    # covariance = 0 + lambda I: distance |d| / sqrt(lambda)
    np.testing.assert_allclose(md[0].numpy(), np.abs([0.0, -0.1, 0.3, 0.0]) / 0.1, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"regulariser": 0.0}, "positive"), ({"regulariser": float("nan")}, "positive")],
)
def test_mahalanobis_rejects_bad_input(kwargs, match):
    x = torch.rand(1, 4)
    with pytest.raises(UadbenchError, match=match):
        mahalanobis_map(x, torch.rand(3, 1, 4), **kwargs)
    with pytest.raises(UadbenchError, match="at least 2 samples"):
        mahalanobis_map(x, torch.rand(1, 1, 4))
    with pytest.raises(UadbenchError, match="samples must have shape"):
        mahalanobis_map(x, torch.rand(3, 2, 4))


# -- filters ------------------------------------------------------------------------------------
def test_gaussian_filter_matches_scipy_in_2d_and_3d():
    a = torch.rand(5, 1, 9, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref3 = ndi.gaussian_filter(a[:, 0].numpy(), sigma=1.0)
    np.testing.assert_allclose(gaussian_filter(a, 1.0, dims=(0, 2, 3))[:, 0].numpy(), ref3, atol=1e-12)
    ref2 = np.stack([ndi.gaussian_filter(v, sigma=1.0) for v in a[:, 0].numpy()])
    np.testing.assert_allclose(gaussian_filter(a, 1.0, dims=(2, 3))[:, 0].numpy(), ref2, atol=1e-12)
    refm = np.stack([ndi.gaussian_filter(v, sigma=1.5, mode="mirror", truncate=5 / 1.5) for v in a[:, 0].numpy()])
    got = gaussian_filter(a, 1.5, dims=(2, 3), radius=5, mode="mirror")[:, 0].numpy()
    np.testing.assert_allclose(got, refm, atol=1e-12)
    # a single slice along the smoothed axis is left alone along it
    one = a[:1]
    np.testing.assert_allclose(gaussian_filter(one, 1.0, dims=(0, 2, 3)).numpy(), gaussian_filter(one, 1.0, dims=(2, 3)).numpy())


def test_ssim_map_matches_skimage_gaussian_ssim():
    g = torch.Generator().manual_seed(0)
    x = ndi.gaussian_filter(torch.rand(40, 40, generator=g).numpy().astype(np.float64), 2)
    y = x + 0.05 * torch.randn(40, 40, generator=g, dtype=torch.float64).numpy()
    dr = float(max(np.ptp(x), np.ptp(y)))
    ours = ssim_map(torch.from_numpy(y)[None, None], torch.from_numpy(x)[None, None])[0, 0].numpy()
    _, full = structural_similarity(
        x, y, data_range=dr, gaussian_weights=True, sigma=1.0, use_sample_covariance=False, full=True
    )
    # skimage truncates the window at 3.5 sigma and pads differently: compare away from the border
    np.testing.assert_allclose(ours[6:-6, 6:-6], full[6:-6, 6:-6], atol=1e-4)
    assert np.allclose(ssim_map(torch.from_numpy(x)[None, None], torch.from_numpy(x)[None, None]).numpy(), 1.0)


# -- the method ---------------------------------------------------------------------------------
def _datasets():
    vols, _, _ = brainlike_volumes(4, shape=(*SHAPE, 4), seed=0)
    return SliceDataset(vols[:3]), SliceDataset(vols[3:])


@pytest.fixture(scope="module")
def images():
    vols, _, _ = brainlike_volumes(1, shape=(*SHAPE, 6), seed=7, lesion=True)
    return torch.from_numpy(np.moveaxis(vols[0], -1, 0))[:, None].float()


@pytest.fixture(scope="module")
def fitted_cddpm():
    torch.manual_seed(0)
    base = uadbench.create_method("cddpm", "smoke", image_shape=SHAPE)
    train, val = _datasets()
    base.fit(train, val, FitContext(generator=torch.Generator().manual_seed(0), max_steps=2))
    return base


def _mhd_on(base, preset: str = "smoke", **overrides) -> MHD:
    method = uadbench.create_method("mhd", preset, image_shape=SHAPE, **overrides)
    train, val = _datasets()
    method.fit(train, val, FitContext(dependencies={"cddpm": base}))
    return method


def test_dependencies_name_the_cddpm_with_the_right_preset():
    for preset, base in (("paper", "paper"), ("cpu", "cpu"), ("smoke", "smoke")):
        cfg = uadbench.create_config("mhd", preset)
        assert MHD.dependencies(cfg) == {"cddpm": (base, {})}
    cfg = uadbench.create_config("mhd", "cpu", base_overrides={"steps": 50, "channel_mult": [1, 2]})
    assert cfg.base_overrides == (("channel_mult", (1, 2)), ("steps", 50))
    assert MHD.dependencies(cfg) == {"cddpm": ("cpu", {"steps": 50, "channel_mult": (1, 2)})}
    assert uadbench.create_config("mhd", "paper").num_samples == 10


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown config key"):
        uadbench.create_config("mhd", "smoke", base_overrides={"no_such_key": 1})
    with pytest.raises(ConfigError, match="num_samples"):
        uadbench.create_config("mhd", "smoke", num_samples=1)
    with pytest.raises(ConfigError, match="t_test"):
        uadbench.create_config("mhd", "smoke", t_test=1001)
    with pytest.raises(ConfigError, match="regulariser"):
        uadbench.create_config("mhd", "smoke", regulariser=0.0)
    with pytest.raises(ConfigError, match="unknown preset"):
        uadbench.create_config("mhd", "smoke", base_preset="nope")


def test_fit_reuses_the_handed_over_cddpm_without_training(fitted_cddpm, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("mhd must not train a handed-over cddpm")

    monkeypatch.setattr(type(fitted_cddpm), "fit", no_training)
    method = _mhd_on(fitted_cddpm)
    assert method.cddpm is fitted_cddpm
    assert method.num_parameters() == fitted_cddpm.num_parameters() > 0


def test_predict_is_deterministic_per_seed_and_finite(fitted_cddpm, images):
    method = _mhd_on(fitted_cddpm)
    out = method.predict(images, generator=torch.Generator().manual_seed(5))
    again = method.predict(images, generator=torch.Generator().manual_seed(5))
    other = method.predict(images, generator=torch.Generator().manual_seed(6))
    assert out.anomaly_map.shape == images.shape and torch.isfinite(out.anomaly_map).all()
    torch.testing.assert_close(out.anomaly_map, again.anomaly_map, rtol=0, atol=0)
    assert not torch.equal(out.anomaly_map, other.anomaly_map)
    # zero outside the foreground, min-max normalised MHD times (1 - SSIM) in [0, 2]
    assert (out.anomaly_map[images <= 0] == 0).all()
    assert out.anomaly_map.min() >= 0 and out.anomaly_map.max() <= 2
    assert out.reconstruction.shape == images.shape


def test_predict_composes_the_reference_steps(fitted_cddpm, images):
    """Map = smooth(minmax(MHD)) * (1 - SSIM(mean reconstruction, x)) * foreground."""
    method = _mhd_on(fitted_cddpm, num_samples=4)
    samples = method.sample_reconstructions(images, generator=torch.Generator().manual_seed(2))
    assert samples.shape == (4, *images.shape)
    assert not torch.equal(samples[0], samples[1])  # fresh noise per sample
    fg = images > 0
    md = mahalanobis_map(images, samples, fg).double().numpy()[:, 0]
    md = (md - md.min()) / (md.max() - md.min())
    smooth = ndi.gaussian_filter(md, sigma=1.0)  # the slices of the batch are one volume
    ssim = ssim_map(samples.mean(0), images, dims=(0, 2, 3)).numpy()[:, 0]
    expected = smooth * (1 - ssim) * fg.numpy()[:, 0]
    out = method.predict(images, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(out.anomaly_map[:, 0].numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.reconstruction, samples.mean(0))
    # without the SSIM weighting, in-plane only: the smoothed normalised MHD
    plain = _mhd_on(fitted_cddpm, num_samples=4, ssim_weighting=False, across_slices=False)
    out = plain.predict(images, generator=torch.Generator().manual_seed(2))
    expected = np.stack([ndi.gaussian_filter(m, 1.0) for m in md]) * fg.numpy()[:, 0]
    np.testing.assert_allclose(out.anomaly_map[:, 0].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_state_dict_is_self_contained(fitted_cddpm, images):
    method = _mhd_on(fitted_cddpm)
    state = method.state_dict()
    fresh = uadbench.create_method("mhd", "smoke", image_shape=SHAPE)
    with pytest.raises(UadbenchError, match="fit or load_state_dict"):
        fresh.predict(images, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UadbenchError, match="cddpm"):
        fresh.load_state_dict({})
    fresh.load_state_dict(state)
    g = lambda: torch.Generator().manual_seed(3)
    torch.testing.assert_close(
        fresh.predict(images, generator=g()).anomaly_map, method.predict(images, generator=g()).anomaly_map, rtol=0, atol=0
    )


def test_fit_without_a_dependency_fits_its_own_cddpm(images):
    method = uadbench.create_method("mhd", "smoke", image_shape=SHAPE)
    train, val = _datasets()
    method.fit(train, val, FitContext(generator=torch.Generator().manual_seed(0), max_steps=1))
    assert type(method.cddpm).__name__ == "ConditionedDDPM"
    assert method.cddpm.config == uadbench.create_config("cddpm", "smoke")
    out = method.predict(images, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.anomaly_map).all()
