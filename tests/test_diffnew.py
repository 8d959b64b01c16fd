"""MAEDiff's hierarchical partition and masking, Synomaly noise, the difference map and the multi-stage
restoration: the maths checked against scipy and against the project's pDDPM partition."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

import uadbench
from uadbench.diffusion.regions import GridPatches
from uadbench.errors import ConfigError
from uadbench.methods.maediff import HierarchicalPatches
from uadbench.methods.synomaly import (
    blurred_difference,
    opencv_sigma,
    remove_small_components,
    scaled_pixels,
    synomaly_noise,
)


# -- MAEDiff: the partition ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [32, 50, 64, 96])
@pytest.mark.parametrize("grid, overlap, sub", [(2, 2, 4), (2, 1, 3), (3, 2, 2)])
def test_sub_level_cells_cover_every_pixel_exactly_once_as_rectangles(side, grid, overlap, sub):
    patches = HierarchicalPatches(grid, overlap, sub)
    ids = patches.cell_ids(side, side + 2)
    n = patches.cells_per_side**2
    one_hot = torch.nn.functional.one_hot(ids, n)
    assert torch.equal(one_hot.sum(-1), torch.ones(side, side + 2, dtype=torch.long))  # one cell per pixel
    for cell in range(n):  # every cell is a non-empty rectangle
        rows, cols = torch.nonzero(ids == cell, as_tuple=True)
        assert rows.numel() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) > 0


def test_upper_patches_are_blocks_of_whole_cells_and_overlap_by_half():
    patches = HierarchicalPatches(2, 2, 4)
    masks = patches.upper_masks(96, 96)
    assert masks.shape == (9, 1, 96, 96)
    ids = patches.cell_ids(96, 96)
    for m in masks[:, 0]:
        inside = ids[m > 0].unique()
        assert inside.numel() == 16 and torch.equal(torch.isin(ids, inside).float(), m)  # 4x4 whole cells
        assert m.sum() == 48 * 48
    coverage = masks.sum(0)[0]
    assert coverage.min() == 1 and coverage.max() == 4  # every pixel covered; the centre by four patches
    assert coverage[40, 40] == 4 and coverage[0, 0] == 1 and coverage[0, 40] == 2


@pytest.mark.parametrize("side", [32, 64, 96])
def test_without_overlap_the_upper_patches_are_pddpms_boxes(side):
    ours = HierarchicalPatches(2, 1, 4).upper_masks(side, side)
    assert torch.equal(ours, GridPatches(2).box_masks(side, side))
    assert torch.equal(ours.sum(0), torch.ones(1, side, side))  # a partition


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
def test_masking_takes_the_exact_fraction_of_context_cells_and_never_the_noised_patch(ratio):
    patches = HierarchicalPatches(2, 2, 4)
    gen = torch.Generator().manual_seed(3)
    noised, masked = patches.train_regions((20, 1, 64, 64), gen, ratio)
    uppers = patches.upper_masks(64, 64)
    ids = patches.cell_ids(64, 64)
    for i in range(20):
        assert any(torch.equal(noised[i], u) for u in uppers)
        assert float((noised[i] * masked[i]).sum()) == 0
        cells_in_patch = ids[noised[i, 0] > 0].unique().numel()
        masked_cells = ids[masked[i, 0] > 0].unique()
        assert torch.equal(torch.isin(ids, masked_cells).float(), masked[i, 0])  # whole cells only
        assert masked_cells.numel() == round(ratio * (64 - cells_in_patch))


def test_masked_cells_are_drawn_uniformly_from_the_context():
    patches = HierarchicalPatches(2, 2, 4)
    gen = torch.Generator().manual_seed(0)
    noised, masked = patches.train_regions((3000, 1, 32, 32), gen, 0.5)
    context = 1 - noised
    freq = masked.sum(0) / context.sum(0).clamp_min(1)
    # each context pixel is masked about half the time it is context (binomial, >= 750 trials each)
    assert float((freq[context.sum(0) > 0] - 0.5).abs().max()) < 0.07


def test_the_partition_is_deterministic_under_a_seed_and_refuses_bad_sizes():
    patches = HierarchicalPatches()
    a = patches.train_regions((4, 1, 32, 32), torch.Generator().manual_seed(1), 0.75)
    b = patches.train_regions((4, 1, 32, 32), torch.Generator().manual_seed(1), 0.75)
    c = patches.train_regions((4, 1, 32, 32), torch.Generator().manual_seed(2), 0.75)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[1], c[1])
    with pytest.raises(ConfigError, match=r"sub_grid \(3\) must be a multiple of patch_overlap \(2\)"):
        HierarchicalPatches(2, 2, 3)
    with pytest.raises(ConfigError, match="image side 6 is smaller than the 8 sub-level cells"):
        patches.cell_ids(6, 6)
    with pytest.raises(ConfigError, match=r"mask_ratio must lie in \[0, 1\)"):
        uadbench.create_method("maediff", "smoke", image_shape=(32, 32), mask_ratio=1.0)


# -- MAEDiff: the loss and the overlap average ------------------------------------------------------------------
class EchoFirstChannel(torch.nn.Module):
    """A stand-in UNet returning its first input channel (plus a learnable offset)."""

    def __init__(self):
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        return x[:, :1] + self.offset


def _maediff(image_shape=(32, 32)):
    method = uadbench.create_method("maediff", "smoke", image_shape=image_shape)
    method.model.unet = EchoFirstChannel()
    return method


def test_overlap_average_divides_by_the_number_of_covering_patches():
    # every pixel is noised in each patch covering it, so an echoing network averages x_t with itself
    method = _maediff()
    images = torch.rand(3, 1, 32, 32)
    recon = method.model.reconstruct(images, torch.Generator().manual_seed(5), t_indices=(299,))
    process = method.model.process
    noise = process.sample_noise(images, torch.Generator().manual_seed(5))
    x_t = process.q_sample(images * 2 - 1, torch.full((3,), 299), noise)
    torch.testing.assert_close(recon, (x_t + 1) / 2, rtol=1e-5, atol=1e-5)


def test_the_loss_only_sees_the_noised_patch_and_the_masked_cells():
    method = _maediff()
    model = method.model
    images = torch.rand(4, 1, 32, 32)
    gen = torch.Generator().manual_seed(2)
    # replay the draws of the loss: t, noise, then the regions
    t = torch.randint(model.process.schedule.timesteps, (4,), generator=gen)
    noise = model.process.sample_noise(images, gen)
    noised, masked = model.patches.train_regions(images.shape, gen, model.mask_ratio)
    x0 = images * 2 - 1
    x_t = noised * model.process.q_sample(x0, t, noise) + (1 - noised) * x0
    expected = ((x_t * (1 - masked) - x0).abs() * (noised + masked)).mean()
    loss = model.loss(images, torch.Generator().manual_seed(2))
    torch.testing.assert_close(loss, expected)
    assert float(masked.sum()) > 0 and float(noised.sum()) > 0


# -- Synomaly noise ------------------------------------------------------------------------------------------------
def test_synomaly_noise_is_gaussian_plus_constant_blobs_per_image():
    gen = torch.Generator().manual_seed(0)
    noise, mask = synomaly_noise((16, 1, 64, 64), gen, sigma=1.5, threshold=175, offset=0.5, direction=1)
    g = torch.randn((16, 1, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    shift = noise - g
    torch.testing.assert_close(shift[~mask], torch.zeros_like(shift[~mask]), atol=1e-6, rtol=0)
    for i in range(16):
        values = shift[i][mask[i]]
        assert values.numel() > 0, "with these parameters every image gets a blob"
        assert 0.5 - 1e-5 <= float(values.min()) and float(values.max()) <= 1.5 + 1e-5
        assert float(values.max() - values.min()) < 1e-5  # one u per image
    assert 0.01 < float(mask.float().mean()) < 0.3


def test_synomaly_mask_matches_scipy_and_shrinks_with_the_threshold():
    gen = torch.Generator().manual_seed(4)
    _, mask = synomaly_noise((3, 1, 48, 40), gen, sigma=2.0, threshold=150)
    g = torch.randn((3, 1, 48, 40), generator=torch.Generator().manual_seed(4), dtype=torch.float64).numpy()
    for i in range(3):
        blurred = scipy.ndimage.gaussian_filter(g[i, 0], 2.0, mode="mirror")
        stretched = (blurred - blurred.min()) / (blurred.max() - blurred.min()) * 255
        np.testing.assert_array_equal(mask[i, 0].numpy(), stretched > 150)
    fractions = [float(synomaly_noise((8, 1, 64, 64), torch.Generator().manual_seed(1), sigma=2.0, threshold=th)[1]
                       .float().mean()) for th in (100, 150, 200, 255)]
    assert fractions == sorted(fractions, reverse=True) and fractions[-1] == 0


def test_synomaly_noise_without_blobs_is_plain_gaussian_and_darker_blobs_subtract():
    noise, mask = synomaly_noise((2, 1, 32, 32), torch.Generator().manual_seed(9), threshold=255)
    g = torch.randn((2, 1, 32, 32), generator=torch.Generator().manual_seed(9), dtype=torch.float64).float()
    assert not mask.any() and torch.equal(noise, g)
    noise, mask = synomaly_noise((4, 1, 32, 32), torch.Generator().manual_seed(9), sigma=1.0, direction=-1)
    g = torch.randn((4, 1, 32, 32), generator=torch.Generator().manual_seed(9), dtype=torch.float64).float()
    assert mask.any() and float((noise - g)[mask].max()) <= -0.5 + 1e-5


# -- the difference map ---------------------------------------------------------------------------------------------
def test_opencv_sigma_and_the_blurred_difference_match_scipy():
    assert [round(opencv_sigma(k), 6) for k in (3, 5, 7, 9)] == [0.8, 1.1, 1.4, 1.7]
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 1, 30, 26)), rng.random((2, 1, 30, 26))
    ours = blurred_difference(torch.from_numpy(x), torch.from_numpy(y), 7).numpy()
    for i in range(2):
        ref = np.abs(scipy.ndimage.gaussian_filter(x[i, 0], 1.4, mode="mirror", radius=3)
                     - scipy.ndimage.gaussian_filter(y[i, 0], 1.4, mode="mirror", radius=3))
        np.testing.assert_allclose(ours[i, 0], ref, rtol=1e-10, atol=1e-12)


def test_small_components_are_removed_with_four_connectivity():
    image = torch.zeros(1, 1, 12, 12)
    image[0, 0, 1:3, 1:3] = 0.5  # 4 px: removed at min_size 5
    image[0, 0, 6, 1:7] = 0.7  # 6 px line: kept
    image[0, 0, 9, 9] = image[0, 0, 10, 10] = image[0, 0, 11, 11] = 0.9  # diagonal: three 1-px components
    out = remove_small_components(image, 5)
    expected = torch.zeros_like(image)
    expected[0, 0, 6, 1:7] = 0.7
    assert torch.equal(out, expected)
    assert torch.equal(remove_small_components(image, 2), image.masked_fill(image == 0.9, 0))
    assert scaled_pixels(30, (128, 128)) == 30 and scaled_pixels(30, (64, 64)) == 8 and scaled_pixels(500, (96, 96)) == 281


# -- Synomaly: the multi-stage restoration --------------------------------------------------------------------------
def _synomaly(fixed: torch.Tensor | None, **overrides):
    method = uadbench.create_method("synomaly", "smoke", image_shape=(32, 32), **overrides)
    if fixed is not None:  # the network's x0 estimate is always ``fixed`` (in [-1, 1])
        method.model.x0_estimate = lambda x_t, t: fixed.expand_as(x_t)
    return method


def test_a_stable_difference_map_stops_after_two_stages_and_is_the_map():
    images = torch.rand(2, 1, 32, 32) * 0.2 + 0.4
    healthy = images * 2 - 1
    healthy[:, :, 10:20, 10:20] = 1.0  # the "reconstruction" differs from the input in one square
    method = _synomaly(healthy, diff_threshold=0.05)
    recon, residual, fused, stages = method.restore(images, torch.Generator().manual_seed(0))
    assert stages.tolist() == [2, 2]  # stage 1 moves the area from all pixels; stage 2 keeps it
    diff = blurred_difference(images * 2 - 1, healthy, 7)
    torch.testing.assert_close(residual, diff)
    expected = remove_small_components(diff * (diff >= 0.05), scaled_pixels(30, (32, 32)))
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(recon, (healthy + 1) / 2)
    out = method.predict(images, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.anomaly_map, diff / 2)
    fused_map = _synomaly(healthy, diff_threshold=0.05, anomaly_map="fused").predict(images, generator=torch.Generator())
    torch.testing.assert_close(fused_map.anomaly_map, expected / 2)


def test_a_perfect_reconstruction_gives_an_empty_map_and_max_stages_caps_the_loop():
    images = torch.rand(3, 1, 32, 32)
    method = _synomaly(images * 2 - 1)
    _, residual, fused, stages = method.restore(images, torch.Generator().manual_seed(0))
    assert stages.tolist() == [2, 2, 2] and float(residual.abs().max()) < 1e-6 and not fused.any()
    _, _, _, stages = _synomaly(images * 2 - 1, max_stages=1).restore(images, torch.Generator().manual_seed(0))
    assert stages.tolist() == [1, 1, 1]


def test_fusion_feeds_the_next_stage_with_the_input_outside_the_map():
    images = torch.rand(1, 1, 32, 32)
    method = _synomaly(None, max_stages=2, stop_tolerance=0.0)
    seen = []
    model = method.model
    real = model.x0_estimate

    def spy(x_t, t):
        seen.append(x_t.clone())
        return real(x_t, t)

    model.x0_estimate = spy
    gen = torch.Generator().manual_seed(3)
    method.restore(images, gen)
    # replay: stage-1 estimate and map, then the fused input noised with the stage-2 draw
    gen = torch.Generator().manual_seed(3)
    x = images * 2 - 1
    t = torch.full((1,), 199)
    n1 = model.process.sample_noise(x, gen)
    torch.testing.assert_close(seen[0], model.process.q_sample(x, t, n1))
    est = real(seen[0], t)
    diff = blurred_difference(x, est, 7)
    d = remove_small_components(diff * (diff >= 0.2), scaled_pixels(30, (32, 32)))
    n2 = model.process.sample_noise(x, gen)
    torch.testing.assert_close(seen[1], model.process.q_sample(est * d + x * (1 - d), t, n2))


def test_synomaly_config_errors_name_the_valid_values():
    with pytest.raises(ConfigError, match="unknown anomaly_map 'binary'; valid: residual, fused"):
        uadbench.create_method("synomaly", "smoke", image_shape=(32, 32), anomaly_map="binary")
    with pytest.raises(ConfigError, match="blur_kernel must be a positive odd integer, got 4"):
        uadbench.create_method("synomaly", "smoke", image_shape=(32, 32), blur_kernel=4)
    with pytest.raises(ConfigError, match="anomaly_direction must be 1 .* or -1"):
        uadbench.create_method("synomaly", "smoke", image_shape=(32, 32), anomaly_direction=0)


# -- both: determinism under a seed ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["maediff", "synomaly"])
def test_training_loss_and_prediction_are_deterministic_under_a_seed(name):
    torch.manual_seed(0)
    method = uadbench.create_method(name, "smoke", image_shape=(32, 32))
    torch.nn.init.normal_(method.model.unet.out_conv.weight, std=0.1)  # zero-initialised: would ignore the noise
    images = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        losses = [float(method.model.loss(images, torch.Generator().manual_seed(s))) for s in (1, 1, 2)]
    assert losses[0] == losses[1] != losses[2]
    maps = [method.predict(images, generator=torch.Generator().manual_seed(s)).anomaly_map for s in (1, 1, 2)]
    assert torch.equal(maps[0], maps[1]) and not torch.equal(maps[0], maps[2])
