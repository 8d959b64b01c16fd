"""Geometry of the volume pipeline: scans stored in any orientation land where their affine says.

Each synthetic scan holds a spherical brain and a marker (a smooth blob in the image, a small
sphere in the lesion mask) at known world positions (mm, RAS+). After the pipeline the marker
must sit where the prepared volume's affine says, within half a grid voxel; back in native space
it must sit on its own native voxel.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from uadbench.data import ImageGrid, Volume, preprocess
from uadbench.data.geometry import (
    NATIVE_AFFINE,
    NATIVE_SHAPE,
    axcodes,
    to_grid,
    to_native,
    voxel_to_world,
    world_to_voxel,
)
from uadbench.data.nifti import load_nifti, save_nifti
from uadbench.data.pipeline import percentile_normalise
from uadbench.errors import DataError

GRID = ImageGrid("test", (32, 32, 28), 2.0)
BRAIN_CENTRE = np.array([4.0, -10.0, 12.0])  # world mm
BRAIN_RADIUS = 24.0
MARKER_OFFSET = np.array([7.0, -5.0, 9.0])  # from the brain centre, mm


def _affine(linear: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """An affine with this linear part whose array centre lies at BRAIN_CENTRE."""
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = BRAIN_CENTRE - linear @ ((np.asarray(shape) - 1) / 2)
    return affine


def _orientations() -> dict[str, tuple[np.ndarray, tuple[int, int, int]]]:
    psr = np.zeros((3, 3))
    psr[1, 0], psr[2, 1], psr[0, 2] = -1.1, 1.3, 1.2  # axis 0 -> posterior, 1 -> superior, 2 -> right
    oblique = Rotation.from_euler("zxy", [25, 12, -8], degrees=True).as_matrix() @ np.diag([1.1, 1.2, 1.4])
    cases = {
        "RAS": (np.diag([1.2, 1.1, 1.5]), (48, 52, 40)),
        "LPS": (np.diag([-1.0, -1.2, 1.4]), (56, 48, 42)),
        "PSR": (psr, (52, 44, 48)),
        "oblique": (oblique, (56, 56, 48)),
    }
    return {name: (_affine(linear, shape), shape) for name, (linear, shape) in cases.items()}


ORIENTATIONS = _orientations()


def _world_grid(affine: np.ndarray, shape) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return voxel_to_world(affine, ijk)


def _scan(affine: np.ndarray, shape, *, seed: int = 0) -> tuple[Volume, np.ndarray]:
    """A scan and its marker's world position (the centre of a native voxel)."""
    rng = np.random.default_rng(seed)
    marker_voxel = np.round(world_to_voxel(affine, BRAIN_CENTRE + MARKER_OFFSET))
    marker = voxel_to_world(affine, marker_voxel)
    world = _world_grid(affine, shape)
    brain = np.linalg.norm(world - BRAIN_CENTRE, axis=-1) < BRAIN_RADIUS
    to_marker = np.linalg.norm(world - marker, axis=-1)
    # a flat brain with a bright blob: after normalisation the blob is ~1 and the brain ~0
    image = (100 + 10 * rng.random(shape)) * brain + 1000 * np.exp(-(to_marker**2) / (2 * 3.0**2))
    lesion = to_marker < 4.0
    return Volume(image.astype(np.float32), affine, brain, "s0", lesion), marker


def _centroid(weights: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in weights.shape], indexing="ij"), -1)
    w = np.clip(weights, 0, None)
    return (w[..., None] * ijk).reshape(-1, 3).sum(0) / w.sum()


def _marker_error_mm(array: np.ndarray, affine: np.ndarray, marker: np.ndarray) -> float:
    return float(np.linalg.norm(voxel_to_world(affine, _centroid(array)) - marker))


@pytest.fixture(scope="module")
def prepared() -> dict[str, tuple[Volume, Volume, np.ndarray]]:
    out = {}
    for name, (affine, shape) in ORIENTATIONS.items():
        scan, marker = _scan(affine, shape)
        out[name] = (scan, preprocess(scan, GRID), marker)
    return out


def test_synthetic_scans_are_stored_as_named():
    assert axcodes(ORIENTATIONS["RAS"][0]) == ("R", "A", "S")
    assert axcodes(ORIENTATIONS["LPS"][0]) == ("L", "P", "S")
    assert axcodes(ORIENTATIONS["PSR"][0]) == ("P", "S", "R")


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_marker_lands_where_the_affine_says(prepared, name):
    scan, out, marker = prepared[name]
    half_voxel = GRID.spacing / 2
    # the blob in the image (intensity-weighted, above the normalised brain's ~0.01)
    assert _marker_error_mm(out.image - 0.2, out.affine, marker) < half_voxel
    # the lesion sphere in the mask, sampled by nearest neighbour
    assert _marker_error_mm(out.lesion_mask.astype(float), out.affine, marker) < half_voxel
    # the brain sphere too
    assert _marker_error_mm(out.brain_mask.astype(float), out.affine, BRAIN_CENTRE) < half_voxel


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_prepared_volume_is_on_the_grid_in_ras_with_axial_slices(prepared, name):
    scan, out, marker = prepared[name]
    assert out.shape == GRID.shape
    np.testing.assert_allclose(out.affine[:3, :3], np.diag([GRID.spacing] * 3), atol=1e-9)
    assert axcodes(out.affine) == ("R", "A", "S")
    # the last axis runs inferior -> superior: one step along it moves the world point up
    step = voxel_to_world(out.affine, [0, 0, 1]) - voxel_to_world(out.affine, [0, 0, 0])
    np.testing.assert_allclose(step, [0, 0, GRID.spacing], atol=1e-9)
    # the field of view is centred on the brain: the brain's bounding box sits in the middle
    centre = voxel_to_world(out.affine, (np.asarray(GRID.shape) - 1) / 2)
    assert np.abs(centre - BRAIN_CENTRE).max() <= GRID.spacing
    np.testing.assert_array_equal(out.meta[NATIVE_AFFINE], scan.affine)
    assert tuple(out.meta[NATIVE_SHAPE]) == scan.shape


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_masks_stay_binary_and_aligned_with_the_image(prepared, name):
    scan, out, marker = prepared[name]
    assert out.brain_mask.dtype == bool and out.lesion_mask.dtype == bool
    assert (out.image[~out.brain_mask] == 0).all()
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    # the brain mask is the sphere, to within one voxel of its surface
    distance = np.linalg.norm(_world_grid(out.affine, out.shape) - BRAIN_CENTRE, axis=-1)
    assert out.brain_mask[distance < BRAIN_RADIUS - GRID.spacing].all()
    assert not out.brain_mask[distance > BRAIN_RADIUS + GRID.spacing].any()
    # lesion inside the brain, and the image's blob on the lesion
    assert out.lesion_mask.any() and not (out.lesion_mask & ~out.brain_mask).any()
    assert out.image[out.lesion_mask].min() > 0.5
    assert out.image[out.brain_mask & ~out.lesion_mask].mean() < 0.1


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_native_space_map_overlays_the_input(prepared, name):
    scan, out, marker = prepared[name]
    native_voxel = np.round(world_to_voxel(scan.affine, marker)).astype(int)
    # a map on the grid that peaks at the marker peaks on the marker's native voxel
    to_marker = np.linalg.norm(_world_grid(out.affine, out.shape) - marker, axis=-1)
    peak = np.exp(-(to_marker**2) / (2 * 4.0**2))
    back = to_native(peak, out, scan, order=3)  # a cubic spline keeps the peak between grid nodes
    assert back.shape == scan.shape and back.dtype == np.float32
    assert tuple(np.unravel_index(np.argmax(back), back.shape)) == tuple(native_voxel)
    # the prepared image's blob (flat-topped by the percentile clip) centres on the marker
    native_spacing = min(scan.spacing)
    assert _marker_error_mm(to_native(out.image, out, scan) - 0.2, scan.affine, marker) < native_spacing / 2
    # a mask comes back as a mask, on the native lesion, from the geometry the volume recorded
    lesion = to_native(out.lesion_mask, out)
    assert lesion.dtype == bool and lesion[tuple(native_voxel)]
    assert _marker_error_mm(lesion.astype(float), scan.affine, marker) < GRID.spacing / 2


def test_native_map_written_as_nifti_opens_over_its_input(tmp_path, prepared):
    scan, out, marker = prepared["PSR"]
    save_nifti(tmp_path / "lesion.nii.gz", to_native(out.lesion_mask, out).astype(np.uint8), scan.affine)
    array, affine = load_nifti(tmp_path / "lesion.nii.gz")
    np.testing.assert_allclose(affine, scan.affine)
    assert array.shape == scan.shape
    assert array[tuple(np.round(world_to_voxel(affine, marker)).astype(int))] == 1
    assert _marker_error_mm(array.astype(float), affine, marker) < GRID.spacing / 2


@pytest.mark.parametrize("linear", [np.diag([2.0, 2.0, 2.0]), np.diag([-2.0, -2.0, 2.0])], ids=["RAS", "LPS"])
def test_scan_at_the_grid_spacing_is_not_resampled(linear):
    """A scan already at 2 mm is only flipped and cut: the same values, an affine shifted by whole voxels."""
    shape = (40, 44, 36)
    scan, _ = _scan(_affine(linear, shape), shape)
    out = preprocess(scan, GRID)
    np.testing.assert_allclose(out.affine[:3, :3], np.diag([2.0, 2.0, 2.0]))
    # where the prepared voxel (0, 0, 0) sits in the input: a whole voxel
    origin = world_to_voxel(scan.affine, out.affine[:3, 3])
    np.testing.assert_allclose(origin, np.round(origin), atol=1e-9)
    # the input flipped to RAS by hand: a negative axis is reversed and its origin moves to the far end
    flips = tuple(slice(None, None, -1 if d < 0 else 1) for d in np.diag(linear))
    ras_affine = scan.affine.copy()
    for axis, d in enumerate(np.diag(linear)):
        if d < 0:
            ras_affine[:3, 3] += ras_affine[:3, axis] * (shape[axis] - 1)
            ras_affine[:3, axis] *= -1
    ras_image = percentile_normalise(scan.image, scan.brain_mask)[flips]
    start = np.round(world_to_voxel(ras_affine, out.affine[:3, 3])).astype(int)
    block = tuple(slice(s, s + n) for s, n in zip(start, GRID.shape))
    assert (start >= 0).all() and all(s + n <= m for s, n, m in zip(start, GRID.shape, shape))
    np.testing.assert_array_equal(out.brain_mask, scan.brain_mask[flips][block])
    np.testing.assert_array_equal(out.lesion_mask, scan.lesion_mask[flips][block])
    np.testing.assert_allclose(out.image, ras_image[block], atol=1e-6)


def test_ras_scan_on_the_grid_keeps_its_geometry():
    """An RAS scan at the grid's spacing and shape, brain centred: the affine comes out unchanged."""
    affine = _affine(np.diag([2.0, 2.0, 2.0]), GRID.shape)
    scan, _ = _scan(affine, GRID.shape)
    out = to_grid(scan, spacing=GRID.spacing, shape=GRID.shape)
    np.testing.assert_allclose(out.affine, scan.affine, atol=1e-9)
    np.testing.assert_array_equal(out.image, scan.image)
    np.testing.assert_array_equal(out.brain_mask, scan.brain_mask)
    np.testing.assert_array_equal(to_native(out.image, out), scan.image)


def test_pipeline_is_deterministic(prepared):
    scan, out, _ = prepared["oblique"]
    again = preprocess(scan, GRID)
    np.testing.assert_array_equal(again.image, out.image)
    np.testing.assert_array_equal(again.affine, out.affine)


def test_geometry_errors_are_one_line():
    scan, _ = _scan(*ORIENTATIONS["RAS"])
    empty = Volume(scan.image, scan.affine, np.zeros(scan.shape, bool), "empty")
    with pytest.raises(DataError, match="brain mask is empty"):
        preprocess(empty, GRID)
    out = to_grid(scan, spacing=GRID.spacing, shape=GRID.shape)
    with pytest.raises(DataError, match="differs from the prepared volume"):
        to_native(np.zeros((3, 3, 3)), out)
    bare = Volume(out.image, out.affine, out.brain_mask, "bare")
    with pytest.raises(DataError, match="does not record its native geometry"):
        to_native(out.image, bare)


def test_example_nifti_files_carry_the_prepared_affine(tmp_path, prepared):
    from uadbench.evaluation.results import EvalVolume
    from uadbench.run.cells import save_example

    scan, out, marker = prepared["oblique"]
    vol = EvalVolume(out.subject_id, out.image, out.brain_mask, out.lesion_mask, GRID.spacing, image=out.image, affine=out.affine)
    save_example(tmp_path, vol)
    for name in ("anomaly_map", "image", "lesion"):
        array, affine = load_nifti(tmp_path / f"{out.subject_id}_{name}.nii.gz")
        np.testing.assert_allclose(affine, out.affine)
    assert _marker_error_mm(array.astype(float), affine, marker) < GRID.spacing / 2
