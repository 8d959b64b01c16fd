"""Synthetic anomalies (uadbench.data.synthetic) and the self-supervised methods built on them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

import uadbench
from uadbench.data.slices import SliceDataset
from uadbench.data.synthetic import (
    fpi_anomalies,
    interpolate_patches,
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


# -- the methods ---------------------------------------------------------------------------------------------------
SELF_SUPERVISED = [name for name in ("fpi", "nsa") if name in uadbench.list_methods()]


@pytest.mark.parametrize("name", SELF_SUPERVISED)
def test_the_method_learns_to_flag_blended_patches(name):
    """A short fit on brain-like slices ranks the pixels of an unseen blended patch above the rest."""
    vols, _, _ = brainlike_volumes(12, shape=(32, 32, 8), seed=0)
    train = SliceDataset(vols)
    method = create_method(name, "smoke", image_shape=(32, 32), depth=3, base_channels=8, batch_size=12, steps=150)
    method.fit(train, None, FitContext(generator=_gen(0)))
    images = train.all_slices()[::7]
    blended, target = method.anomalies(images, _gen(99))
    scores = method.predict(blended, generator=_gen(0)).anomaly_map
    from sklearn.metrics import roc_auc_score

    labels = (target > 0).flatten().numpy()
    assert labels.any()
    assert roc_auc_score(labels, scores.flatten().numpy()) > 0.8
