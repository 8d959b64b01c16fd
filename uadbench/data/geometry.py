"""Exact volume geometry with MONAI: from a scan's native space onto an image grid and back.

:func:`to_grid` puts a :class:`~uadbench.data.volume.Volume` (image, brain mask, lesion mask) on
an isotropic grid, working on MONAI ``MetaTensor`` s, which carry the affine through every
transform:

1. ``Orientation``: reorient to RAS. The array is flipped and transposed, nothing is
   interpolated; the last axis then runs inferior -> superior, so slices along it are axial.
2. Place the grid: a world-aligned RAS lattice at the grid's spacing through the centre of the
   oriented scan's voxel (0, 0, 0) (where MONAI's ``Spacing(diagonal=True)`` puts it), and on it
   a window of the grid's shape centred on the bounding box of the brain mask.
3. Resample onto that window in one pass with ``SpatialResample`` (the resampler under
   ``Spacing``): the image with a cubic B-spline, masks with nearest neighbour, so they stay
   binary; zeros beyond the scan. An oblique scan is rotated onto the lattice here. When the
   window is the oriented scan shifted by whole voxels (a scan already at the grid's spacing and
   axis-aligned), it is cut out with ``BorderPad`` and ``SpatialCrop`` instead: values copied,
   not interpolated.

Resampling straight onto the window, rather than ``Spacing`` over the whole scan and then a crop,
computes only the grid's voxels (a 2-10 times smaller array) with one interpolation and the same
geometry.

The affine of the result is exact: voxel (i, j, k) of the prepared array maps through it to the
same world point (mm, NIfTI's RAS+) as the input point it was sampled from. :func:`to_native`
resamples an array on the grid (an anomaly map) back to the scan's own voxel grid through the two
affines, so the map opens over the original file in any viewer. It needs no record of the
transforms (MONAI's ``Invertd`` does), which is what lets it work on volumes read from a cache.

``import monai`` loads every MONAI submodule (seconds): it is imported inside the functions that
use it, never when this module is imported.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, cast

import numpy as np

from uadbench.data.volume import Volume
from uadbench.errors import DataError

if TYPE_CHECKING:
    from monai.data import MetaTensor

#: keys of ``Volume.meta`` that :func:`to_grid` sets: the input's affine and array shape
NATIVE_AFFINE = "native_affine"
NATIVE_SHAPE = "native_shape"

# NIfTI world axes: x runs left -> right, y posterior -> anterior, z inferior -> superior
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def axcodes(affine: np.ndarray) -> tuple[str, str, str]:
    """The direction each array axis points to in world space, e.g. ``("R", "A", "S")``."""
    import nibabel as nib

    return cast("tuple[str, str, str]", tuple(nib.aff2axcodes(np.asarray(affine))))


def voxel_to_world(affine: np.ndarray, ijk) -> np.ndarray:
    """World coordinates (mm) of voxel indices ``ijk`` (..., 3)."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz) -> np.ndarray:
    """Voxel indices (fractional) of world points ``xyz`` (..., 3) in mm."""
    inverse = np.linalg.inv(affine)
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz @ inverse[:3, :3].T + inverse[:3, 3]


def native_geometry(volume: Volume) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(affine, shape) of the scan a prepared volume came from, as :func:`to_grid` recorded them."""
    if NATIVE_AFFINE not in volume.meta or NATIVE_SHAPE not in volume.meta:
        raise DataError(
            f"volume {volume.subject_id!r} does not record its native geometry; "
            "pass the native volume or its (affine, shape) to to_native"
        )
    shape = tuple(int(s) for s in volume.meta[NATIVE_SHAPE])
    return np.asarray(volume.meta[NATIVE_AFFINE], dtype=np.float64), cast("tuple[int, int, int]", shape)


# -- MetaTensors ----------------------------------------------------------------------------------
def _metatensor(channels: list[np.ndarray], affine: np.ndarray) -> MetaTensor:
    """A channel-first float32 MetaTensor (C, X, Y, Z) carrying ``affine``."""
    import torch
    from monai.data import MetaTensor

    data = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float32) for c in channels]))
    return MetaTensor(data, affine=torch.as_tensor(affine, dtype=torch.float64))


def _affine(tensor: MetaTensor) -> np.ndarray:
    return np.asarray(tensor.affine.detach().cpu().numpy(), dtype=np.float64)


def _array(tensor: MetaTensor) -> np.ndarray:
    return tensor.as_tensor().detach().cpu().numpy()


def _window_start(ras_affine: np.ndarray, brain: np.ndarray, lattice: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Lattice index of the first voxel of a window of ``shape`` centred on the brain's bounding box
    (the box of its voxel centres, in lattice coordinates). Where the box and the window differ by
    an odd number of voxels, the window's centre lies half a voxel below the box's."""
    # a linear map is monotonic along each column of voxels: its extremes over the brain lie on
    # the first or last brain voxel of a column, so those are the only voxels to map
    columns = brain.any(axis=2)
    if not columns.any():
        raise DataError("brain mask is empty: a volume needs a non-empty brain mask to be placed on the grid")
    i, j = np.nonzero(columns)
    first = np.argmax(brain, axis=2)[i, j]
    last = brain.shape[2] - 1 - np.argmax(brain[:, :, ::-1], axis=2)[i, j]
    voxels = np.concatenate([np.stack([i, j, first], axis=1), np.stack([i, j, last], axis=1)])
    on_lattice = world_to_voxel(lattice, voxel_to_world(ras_affine, voxels))
    centre = (on_lattice.min(axis=0) + on_lattice.max(axis=0)) / 2
    return np.floor(centre - (np.asarray(shape) - 1) / 2 + 1e-6).astype(int)


def _whole_voxel_shift(source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Integer voxel offset of ``target`` 's origin on ``source`` 's grid when both share the same
    linear part (then moving from one to the other is a crop/pad); None otherwise."""
    if not np.allclose(source[:3, :3], target[:3, :3], atol=1e-6):
        return None
    offset = world_to_voxel(source, target[:3, 3])
    rounded = np.round(offset)
    return rounded.astype(int) if np.allclose(offset, rounded, atol=1e-4) else None


def _crop_or_pad(tensors: list[MetaTensor], start: np.ndarray, shape: tuple[int, ...]) -> list[MetaTensor]:
    """Cut the window [start, start + shape) out of each tensor, zero padding where it overhangs."""
    from monai.transforms import BorderPad, SpatialCrop

    size = tensors[0].shape[1:]
    end = start + np.asarray(shape)
    border: list[int] = []
    for s, e, n in zip(start, end, size):
        border += [max(0, -int(s)), max(0, int(e) - n)]
    before = np.maximum(0, -start)
    crop = SpatialCrop(roi_start=(start + before).tolist(), roi_end=(end + before).tolist())
    out = []
    for tensor in tensors:
        if any(border):
            tensor = cast("MetaTensor", BorderPad(spatial_border=border, mode="constant")(tensor))
        out.append(cast("MetaTensor", crop(tensor)))
    return out


# -- the grid -------------------------------------------------------------------------------------
def to_grid(volume: Volume, *, spacing: float, shape: tuple[int, int, int], image_order: int = 3) -> Volume:
    """``volume`` in RAS at ``spacing`` mm, cut to ``shape`` around the brain, with its exact affine.

    ``image_order`` is the spline order of the image's interpolation (3: cubic B-spline, 1: linear);
    masks always use nearest neighbour. Intensities are not changed otherwise (no clipping: a
    B-spline may overshoot). ``meta`` gains the input's affine and shape (:func:`native_geometry`).
    """
    import torch
    from monai.transforms import Orientation, SpatialResample

    if not spacing > 0 or len(shape) != 3:
        raise DataError(f"grid needs a positive spacing and a 3D shape, got spacing={spacing!r}, shape={shape!r}")
    shape = cast("tuple[int, int, int]", tuple(int(n) for n in shape))
    masks = [volume.brain_mask] + ([volume.lesion_mask] if volume.lesion_mask is not None else [])
    image = _metatensor([volume.image], volume.affine)
    labels = _metatensor(masks, volume.affine)
    # 1. reorient to RAS (exact: flips and transposes)
    orient = Orientation(axcodes="RAS", labels=_RAS_LABELS)
    image, labels = cast("MetaTensor", orient(image)), cast("MetaTensor", orient(labels))
    ras_affine = _affine(image)
    # 2. the lattice at the grid's spacing, and the window on it centred on the brain
    lattice = np.diag([float(spacing)] * 3 + [1.0])
    lattice[:3, 3] = ras_affine[:3, 3]
    start = _window_start(ras_affine, _array(labels)[0] > 0.5, lattice, shape)
    target = lattice.copy()
    target[:3, 3] = voxel_to_world(lattice, start)
    # 3. onto the window: cut out when it is the scan shifted by whole voxels, resampled otherwise
    shift = _whole_voxel_shift(ras_affine, target)
    if shift is not None:
        image, labels = _crop_or_pad([image, labels], shift, shape)
    else:
        dst = torch.as_tensor(target, dtype=torch.float64)
        image = cast("MetaTensor", SpatialResample(mode=image_order, padding_mode="grid-constant")(image, dst_affine=dst, spatial_size=shape))
        labels = cast("MetaTensor", SpatialResample(mode=0, padding_mode="grid-constant")(labels, dst_affine=dst, spatial_size=shape))
    mask_arrays = _array(labels) > 0.5
    meta = dict(volume.meta)
    meta[NATIVE_AFFINE] = np.asarray(volume.affine, dtype=np.float64).copy()
    meta[NATIVE_SHAPE] = tuple(int(s) for s in volume.shape)
    return replace(
        volume,
        image=np.ascontiguousarray(_array(image)[0], dtype=np.float32),
        affine=_affine(image),
        brain_mask=mask_arrays[0],
        lesion_mask=mask_arrays[1] if volume.lesion_mask is not None else None,
        meta=meta,
    )


def to_native(
    array: np.ndarray,
    prepared: Volume,
    native: Volume | tuple[np.ndarray, tuple[int, ...]] | None = None,
    *,
    order: int = 1,
) -> np.ndarray:
    """Resample ``array`` (on ``prepared`` 's grid, e.g. an anomaly map) onto the native voxel grid.

    ``native`` is the input volume, its ``(affine, shape)``, or None to use the geometry
    :func:`to_grid` recorded in ``prepared.meta``. ``order`` is the spline order (0 nearest, for
    masks and labels; 1 linear; 3 cubic). The result has the native shape and is meant to be saved
    with the native affine; native voxels outside the grid's field of view are 0. A boolean array
    comes back boolean (nearest neighbour), anything else as float32.
    """
    import torch
    from monai.transforms import SpatialResample

    array = np.asarray(array)
    if array.shape != prepared.shape:
        raise DataError(f"array shape {array.shape} differs from the prepared volume's {prepared.shape}")
    native_shape: tuple[int, ...]
    if isinstance(native, Volume):
        native_affine, native_shape = native.affine, native.shape
    elif native is None:
        native_affine, native_shape = native_geometry(prepared)
    else:
        native_affine, native_shape = np.asarray(native[0], dtype=np.float64), tuple(int(s) for s in native[1])
    if len(native_shape) != 3 or np.asarray(native_affine).shape != (4, 4):
        raise DataError(f"native geometry needs a 4x4 affine and a 3D shape, got shape {native_shape!r}")
    is_mask = array.dtype == bool
    source = _metatensor([array], prepared.affine)
    resample = SpatialResample(mode=0 if is_mask else int(order), padding_mode="grid-constant")
    out = resample(source, dst_affine=torch.as_tensor(native_affine, dtype=torch.float64), spatial_size=tuple(native_shape))
    values = np.asarray(_array(cast("MetaTensor", out))[0], dtype=np.float32)
    return values > 0.5 if is_mask else values
