import subprocess
import sys

import numpy as np
import pytest
import torch

from uadbench.data import IMAGE_GRIDS, SliceDataset, Volume, get_image_grid, preprocess
from uadbench.data.cache import load_split, save_split
from uadbench.data.geometry import NATIVE_AFFINE, NATIVE_SHAPE
from uadbench.data.nifti import read_subject, write_subject
from uadbench.data.pipeline import crop_or_pad, percentile_normalise
from uadbench.errors import ConfigError


def _volume(shape=(99, 117, 95), spacing=2.0, seed=0):
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij")
    brain = (x / 35) ** 2 + (y / 45) ** 2 + (z / 35) ** 2 < 1
    image = (100 + 50 * rng.random(shape)) * brain
    lesion = ((x - 5) ** 2 + y**2 + (z - 3) ** 2 < 36) & brain
    image[lesion] = 400
    return Volume(image, np.diag([spacing, spacing, spacing, 1.0]), brain, "s0", lesion)


def test_crop_or_pad_is_centred():
    a = np.arange(5 * 6 * 7, dtype=float).reshape(5, 6, 7)
    out = crop_or_pad(a, (3, 8, 7))
    assert out.shape == (3, 8, 7)
    np.testing.assert_array_equal(out[:, 1:7, :], a[1:4])
    assert (out[:, 0] == 0).all() and (out[:, 7] == 0).all()


def test_percentile_normalisation_matches_definition():
    rng = np.random.default_rng(1)
    img = rng.normal(100, 20, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(img.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    out = percentile_normalise(img, mask)
    p1, p99 = np.percentile(img[mask], [1, 99])
    expected = (np.clip(img, p1, p99) - p1) / (p99 - p1)
    np.testing.assert_allclose(out[mask], expected[mask], rtol=1e-5, atol=1e-6)
    assert (out[~mask] == 0).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("grid_name", ["paper", "cpu", "smoke"])
def test_preprocess_shapes_and_range(grid_name):
    grid = IMAGE_GRIDS[grid_name]
    out = preprocess(_volume(), grid)
    assert out.image.shape == grid.shape
    assert out.brain_mask.shape == grid.shape and out.lesion_mask.shape == grid.shape
    assert out.image.dtype == np.float32
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    assert (out.image[~out.brain_mask] == 0).all()
    assert out.lesion_mask.any()
    np.testing.assert_allclose(out.spacing, (grid.spacing,) * 3)
    # the lesion is the brightest tissue after normalisation
    assert out.image[out.lesion_mask].mean() > out.image[out.brain_mask & ~out.lesion_mask].mean()


def test_preprocess_centres_the_grid_on_the_brain():
    """2 mm in, 2 mm out: the brain's bounding box is cut out around its centre, not resampled."""
    vol = _volume()
    grid = IMAGE_GRIDS["paper"]
    out = preprocess(vol, grid)
    starts = []
    for axis, n in enumerate(grid.shape):
        hits = np.flatnonzero(vol.brain_mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, extent = hits[0], hits[-1] - hits[0] + 1
        starts.append(lo + (extent - n) // 2)
    block = tuple(slice(s, s + n) for s, n in zip(starts, grid.shape))
    assert all(s >= 0 for s in starts) and all(b.stop <= m for b, m in zip(block, vol.shape))
    np.testing.assert_array_equal(out.brain_mask, vol.brain_mask[block])
    np.testing.assert_array_equal(out.lesion_mask, vol.lesion_mask[block])
    np.testing.assert_allclose(out.affine, _shifted(vol.affine, starts))
    assert out.meta[NATIVE_SHAPE] == vol.shape
    np.testing.assert_array_equal(out.meta[NATIVE_AFFINE], vol.affine)


def _shifted(affine, starts):
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ np.asarray(starts, float) + affine[:3, 3]
    return out


def test_pipeline_module_imports_neither_torch_nor_monai():
    code = "import sys, uadbench.data.pipeline, uadbench.data.cache; print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing the pipeline loaded {out}"


def test_split_cache_keeps_each_volumes_affine_and_native_geometry(tmp_path):
    grid = IMAGE_GRIDS["smoke"]
    shifted = _volume(seed=1)
    shifted.affine[:3, 3] = [-90.0, -120.0, 30.0]
    volumes = [preprocess(_volume(), grid), preprocess(shifted, grid)]
    assert not np.allclose(volumes[0].affine, volumes[1].affine)
    save_split(tmp_path / "split.npz", volumes)
    back = load_split(tmp_path / "split.npz")
    for v, w in zip(volumes, back):
        np.testing.assert_array_equal(w.affine, v.affine)
        np.testing.assert_array_equal(w.image, v.image)
        np.testing.assert_array_equal(w.lesion_mask, v.lesion_mask)
        np.testing.assert_array_equal(w.meta[NATIVE_AFFINE], v.meta[NATIVE_AFFINE])
        assert w.meta[NATIVE_SHAPE] == v.meta[NATIVE_SHAPE]


def test_paper_grid_is_96x96x50_at_2mm():
    g = IMAGE_GRIDS["paper"]
    assert g.shape == (96, 96, 50) and g.spacing == 2.0 and g.fov_mm == (192.0, 192.0, 100.0)


def test_custom_grid_validation():
    assert get_image_grid({"shape": [48, 48, 24], "spacing": 4}).shape == (48, 48, 24)
    with pytest.raises(ConfigError, match="unknown image grid 'huge'"):
        get_image_grid("huge")
    with pytest.raises(ConfigError, match="divisible by 4"):
        get_image_grid({"shape": [50, 48, 24], "spacing": 4})


def test_nifti_roundtrip(tmp_path):
    vol = _volume(shape=(20, 22, 18))
    write_subject(tmp_path, "test", vol)
    back = read_subject(tmp_path, "test", "s0")
    np.testing.assert_array_equal(back.image, vol.image)
    np.testing.assert_array_equal(back.brain_mask, vol.brain_mask)
    np.testing.assert_array_equal(back.lesion_mask, vol.lesion_mask)
    np.testing.assert_allclose(back.affine, vol.affine)
    assert not list(tmp_path.rglob("*.tmp"))


def test_slice_dataset_draws_axial_slices():
    vols = [np.full((8, 8, 5), i, np.float32) + np.arange(5)[None, None, :] / 10 for i in range(3)]
    ds = SliceDataset(vols)
    assert ds.num_volumes == 3 and ds.slices_per_volume == 5 and ds.image_shape == (8, 8)
    assert ds.all_slices().shape == (15, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    epoch = ds.epoch(g)
    assert epoch.shape == (3, 1, 8, 8)
    # one slice of every volume per epoch
    assert sorted(int(e[0, 0, 0]) for e in epoch) == [0, 1, 2]
    batches = ds.batches(4, torch.Generator().manual_seed(0))
    b1, b2 = next(batches), next(batches)
    assert b1.shape == b2.shape == (4, 1, 8, 8)
    again = next(ds.batches(4, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(b1, again)
    assert not hasattr(ds, "lesion_mask") and not hasattr(ds, "brain_mask")
