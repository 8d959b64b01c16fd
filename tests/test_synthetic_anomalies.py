"""Synthetic anomalies (uadbench.data.synthetic) and the self-supervised methods built on them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg
import torch

import uadbench
from uadbench.data.slices import SliceDataset
from uadbench.data.synthetic import (
    NSASettings,
    disk_median,
    fpi_anomalies,
    interpolate_patches,
    logistic_intensity_label,
    nsa_anomalies,
    object_masks,
    partner_indices,
    poisson_blend,
    poisson_guidance,
    square_patch_masks,
)
from uadbench.errors import ConfigError
from uadbench.method import FitContext, create_method
from uadbench.testing.base import brainlike_volumes


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- FPI -----------------------------------------------------------------------------------------------------------
def test_partners_are_other_slices_of_the_batch():
    for n in (2, 3, 8):
        for seed in range(5):
            idx = partner_indices(n, _gen(seed))
            assert sorted(idx.tolist()) == list(range(n))
            assert (idx != torch.arange(n)).all()


def test_square_patches_have_the_drawn_sides_and_lie_in_the_core():
    masks = square_patch_masks(500, (64, 64), _gen(0), half_width=(0.05, 0.2), core=0.5)
    assert masks.shape == (500, 1, 64, 64) and masks.dtype == torch.bool
    for m in masks[:, 0]:
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        side_y, side_x = len(rows), len(cols)
        assert side_y == side_x and int(m.sum()) == side_y * side_x  # a full square, never clipped here
        assert side_y % 2 == 0 and round(0.05 * 64) <= side_y // 2 < round(0.2 * 64)
        centre_y, centre_x = int(rows[0]) + side_y // 2, int(cols[0]) + side_x // 2
        assert 16 <= centre_y < 48 and 16 <= centre_x < 48
    sides = masks[:, 0].any(1).sum(1)
    assert set((sides // 2).tolist()) == set(range(3, 13))  # every allowed half-width occurs


def test_interpolation_is_the_convex_blend_inside_the_patch_and_its_target_the_foreign_share():
    g = _gen(1)
    x, y = torch.rand(4, 1, 16, 16, generator=g), torch.rand(4, 1, 16, 16, generator=g) + 1  # x != y everywhere
    masks = square_patch_masks(4, (16, 16), g, half_width=(0.1, 0.3), core=0.8)
    alpha = torch.tensor([0.05, 0.3, 0.7, 0.95])
    blended, target = interpolate_patches(x, y, masks, alpha)
    for i, a in enumerate(alpha.tolist()):
        inside = masks[i]
        torch.testing.assert_close(blended[i][inside], (1 - a) * x[i][inside] + a * y[i][inside])
        assert torch.equal(blended[i][~inside], x[i][~inside])
        assert torch.equal(target[i][inside], torch.full_like(target[i][inside], a))
        assert torch.equal(target[i][~inside], torch.zeros_like(target[i][~inside]))


def test_pixels_the_blend_cannot_change_get_no_target():
    x = torch.zeros(1, 1, 8, 8)
    y = torch.zeros(1, 1, 8, 8)
    y[..., :, 4:] = 1.0  # the partner differs from x on the right half only
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[..., 2:6, 2:6] = True
    blended, target = interpolate_patches(x, y, masks, torch.tensor([0.4]))
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 2:6, 4:6] = 0.4
    assert torch.equal(target, expected)
    torch.testing.assert_close(blended, expected)  # (1 - a) * 0 + a * 1 where they differ


def test_fpi_anomalies_are_deterministic_under_a_seed_and_respect_the_factor_range():
    images = torch.rand(8, 1, 32, 32, generator=_gen(3))
    a1, t1 = fpi_anomalies(images, _gen(11), alpha_range=(0.2, 0.6))
    a2, t2 = fpi_anomalies(images, _gen(11), alpha_range=(0.2, 0.6))
    a3, _ = fpi_anomalies(images, _gen(12), alpha_range=(0.2, 0.6))
    assert torch.equal(a1, a2) and torch.equal(t1, t2) and not torch.equal(a1, a3)
    for t in t1:  # one factor per slice, in range, inside the patch only
        values = torch.unique(t[t > 0])
        assert len(values) == 1 and 0.2 <= float(values) <= 0.6
    changed = (a1 != images)
    assert torch.equal(changed, t1 > 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"half_width": (0.3, 0.1)}, "half-width fractions must satisfy"),
    ({"core": 0.0}, "core fraction must be in"),
])
def test_bad_patch_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        square_patch_masks(2, (16, 16), _gen(0), **kwargs)


def test_bad_fpi_config_names_the_field():
    with pytest.raises(ConfigError, match="alpha_min and alpha_max"):
        create_method("fpi", "smoke", alpha_min=0.9, alpha_max=0.1)


# -- Poisson blending ----------------------------------------------------------------------------------------------
def _scipy_poisson(dest: np.ndarray, src: np.ndarray, mask: np.ndarray, mixed: bool) -> np.ndarray:
    """Reference: the 5-point Poisson system on the mask pixels, assembled pixel by pixel and solved with spsolve."""
    h, w = dest.shape
    mask = mask.copy()
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = False
    pixels = list(zip(*np.nonzero(mask), strict=True))
    index = {p: k for k, p in enumerate(pixels)}
    a = scipy.sparse.lil_matrix((len(pixels), len(pixels)))
    b = np.zeros(len(pixels))
    for k, (i, j) in enumerate(pixels):
        a[k, k] = 4
        for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            q = (i + di, j + dj)
            gs = src[i, j] - src[q]
            gd = dest[i, j] - dest[q]
            b[k] += gs if not mixed or abs(gs) > abs(gd) else gd
            if q in index:
                a[k, index[q]] = -1
            else:
                b[k] += dest[q]
    out = dest.copy()
    out[mask] = scipy.sparse.linalg.spsolve(a.tocsr(), b)
    return out


@pytest.mark.parametrize("mixed", [False, True])
def test_poisson_blend_matches_a_sparse_direct_solve(mixed):
    g = _gen(5)
    dest = torch.rand(3, 1, 20, 24, generator=g, dtype=torch.float64)
    src = torch.rand(3, 1, 20, 24, generator=g, dtype=torch.float64) * 2
    mask = torch.zeros(3, 1, 20, 24, dtype=torch.bool)
    mask[0, 0, 3:12, 4:15] = True
    mask[1, 0, 0:9, 10:24] = True  # touches the border: border pixels stay the destination's
    mask[2, 0, 5:17, 2:20] = True
    mask[2, 0, 8:11, 6:9] = False  # a hole: interior Dirichlet pixels
    out = poisson_blend(dest, src, mask, mixed=mixed, tol=1e-12)
    for i in range(3):
        ref = _scipy_poisson(dest[i, 0].numpy(), src[i, 0].numpy(), mask[i, 0].numpy(), mixed)
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-9)


def test_poisson_blend_satisfies_the_discrete_poisson_equation():
    g = _gen(6)
    dest = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    src = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 3:13] = True
    out = poisson_blend(dest, src, mask, mixed=True, tol=1e-12)
    padded = torch.nn.functional.pad(out, (1, 1, 1, 1))
    laplacian = 4 * out - (padded[..., 2:, 1:-1] + padded[..., :-2, 1:-1] + padded[..., 1:-1, 2:] + padded[..., 1:-1, :-2])
    guidance = poisson_guidance(dest, src, mixed=True)
    torch.testing.assert_close(laplacian[mask], guidance[mask], atol=1e-9, rtol=0)
    assert torch.equal(out[~mask], dest[~mask])


def test_poisson_blend_of_a_slice_into_itself_changes_nothing():
    x = torch.rand(2, 1, 16, 16, generator=_gen(7), dtype=torch.float64)
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[..., 3:13, 3:13] = True
    torch.testing.assert_close(poisson_blend(x, x, mask, tol=1e-12), x, atol=1e-9, rtol=0)


# -- NSA -----------------------------------------------------------------------------------------------------------
def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return y**2 + x**2 <= radius**2


def test_disk_median_matches_scipy():
    x = torch.rand(2, 1, 19, 23, generator=_gen(8), dtype=torch.float64)
    ours = disk_median(x, 5)
    for i in range(2):
        ref = scipy.ndimage.median_filter(x[i, 0].numpy(), footprint=_disk(5), mode="nearest")
        np.testing.assert_array_equal(ours[i, 0].numpy(), ref)
    where = x > 0.7
    assert torch.equal(disk_median(x, 5, where=where), torch.where(where, ours, torch.zeros_like(ours)))


def test_object_masks_are_a_7x7_median_of_the_foreground():
    x = torch.rand(1, 1, 30, 30, generator=_gen(9)) - 0.3
    ref = scipy.ndimage.median_filter((x[0, 0] > 0).numpy().astype(np.uint8), size=7, mode="nearest") > 0
    np.testing.assert_array_equal(object_masks(x)[0, 0].numpy(), ref)


def test_the_logistic_intensity_label_follows_the_reference_recipe():
    g = _gen(10)
    original = torch.rand(2, 1, 24, 24, generator=g, dtype=torch.float64)
    blended = original.clone()
    blended[..., 6:18, 5:17] += 0.1 * torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)
    region = torch.zeros(2, 1, 24, 24, dtype=torch.float64)
    region[..., 4:20, 4:20] = 1
    tol, k, x0 = 1 / 255, 127.5, 4 / 255
    label = logistic_intensity_label(original, blended, region, tol=tol, k=k, x0=x0)
    for i in range(2):  # scipy, step by step
        diff = np.abs(original[i, 0].numpy() - blended[i, 0].numpy())
        changed = scipy.ndimage.median_filter(((diff * region[i, 0].numpy()) > tol).astype(np.uint8), size=5, mode="nearest")
        d = scipy.ndimage.median_filter(diff * changed, footprint=_disk(5), mode="nearest")
        np.testing.assert_allclose(label[i, 0].numpy(), changed / (1 + np.exp(-k * (d - x0))), atol=1e-12)
    assert float(label[..., :4, :].abs().max()) == 0 and float(label.max()) > 0.5


def _brain_slices(n: int, size: int = 64) -> torch.Tensor:
    vols, _, _ = brainlike_volumes(n, shape=(size, size, 4), seed=2)
    return torch.stack([torch.from_numpy(v[:, :, 2]) for v in vols])[:, None]


def test_nsa_anomalies_are_deterministic_and_label_only_changed_object_pixels():
    images = _brain_slices(6)
    b1, t1 = nsa_anomalies(images, _gen(21))
    b2, t2 = nsa_anomalies(images, _gen(21))
    b3, _ = nsa_anomalies(images, _gen(22))
    assert torch.equal(b1, b2) and torch.equal(t1, t2) and not torch.equal(b1, b3)
    assert float(b1.min()) >= 0 and float(b1.max()) <= 1 and float(t1.min()) >= 0 and float(t1.max()) <= 1
    changed = (b1 - images).abs() > 1 / 255
    assert changed.flatten(1).any(1).sum() >= 4  # most slices got a patch
    # the label is the 5x5 majority of changed object pixels: it never reaches pixels with no changed pixel nearby
    near = torch.nn.functional.max_pool2d(changed.float(), 5, stride=1, padding=2) > 0
    assert not bool(((t1 > 0) & ~near).any())
    assert float((t1 > 0).float().sum()) > 0.5 * float(changed.float().sum())


def test_nsa_leaves_flat_slices_unchanged():
    images = torch.full((4, 1, 32, 32), 0.5)
    blended, target = nsa_anomalies(images, _gen(0))
    torch.testing.assert_close(blended, images)
    assert float(target.max()) == 0


@pytest.mark.parametrize("field, value, message", [
    ("width_min", 0.6, "width_min and width_max"),
    ("min_overlap", 1.0, "min_object and min_overlap"),
    ("num_patches", 0, "num_patches must be >= 1"),
    ("gamma_shape", 2.5, "gamma_shape must be an integer, got 2.5"),
])
def test_bad_nsa_settings_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        NSASettings(**{field: value})
    if "nsa" in uadbench.list_methods():
        with pytest.raises(ConfigError, match=message):
            create_method("nsa", "smoke", **{field: value})


# -- the methods ---------------------------------------------------------------------------------------------------
# NSA's Gamma-drawn patches are mostly under its 50-pixel minimum on 32x32 slices: larger ones here
SELF_SUPERVISED = {"fpi": {"steps": 150}, "nsa": {"steps": 120, "gamma_offset": 0.15}}


@pytest.mark.parametrize("name", [name for name in SELF_SUPERVISED if name in uadbench.list_methods()])
def test_the_method_learns_to_flag_blended_patches(name):
    """A short fit on brain-like slices ranks the pixels of unseen blended patches above the rest."""
    vols, _, _ = brainlike_volumes(12, shape=(32, 32, 8), seed=0)
    train = SliceDataset(vols)
    method = create_method(name, "smoke", image_shape=(32, 32), depth=3, base_channels=8, batch_size=12, **SELF_SUPERVISED[name])
    method.fit(train, None, FitContext(generator=_gen(0)))
    images = train.all_slices()[::7]
    blended, target = method.anomalies(images, _gen(99))
    scores = method.predict(blended, generator=_gen(0)).anomaly_map
    from sklearn.metrics import roc_auc_score

    labels = (target > 0).flatten().numpy()
    assert labels.any()
    assert roc_auc_score(labels, scores.flatten().numpy()) > 0.8
