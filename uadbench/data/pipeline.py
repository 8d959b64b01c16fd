"""The volume pipeline of the reference implementation (METHOD_SPEC §3.3), for any image grid.

1. centre crop/pad (zeros) to the grid's field of view, at the volume's own voxel size;
2. clip to the 1st-99th intensity percentiles inside the brain mask and rescale to [0, 1];
   voxels outside the brain mask are set to 0 (the reference works on skull-stripped images);
3. resample to the grid's voxel size (cubic B-spline for the image, nearest for masks);
4. crop/pad to the grid's exact shape.

The ``paper`` grid is 96x96x50 at 2 mm (a 192x192x100 mm field of view).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from uadbench.data.volume import Volume
from uadbench.errors import ConfigError

PIPELINE_VERSION = "1"


@dataclass(frozen=True)
class ImageGrid:
    """The evaluation grid: array shape (X, Y, Z) and isotropic voxel size in mm."""

    name: str
    shape: tuple[int, int, int]
    spacing: float

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        return tuple(s * self.spacing for s in self.shape)  # type: ignore[return-value]

    @property
    def slice_shape(self) -> tuple[int, int]:
        return (self.shape[0], self.shape[1])

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "spacing": self.spacing}


IMAGE_GRIDS: dict[str, ImageGrid] = {
    "paper": ImageGrid("paper", (96, 96, 50), 2.0),
    "cpu": ImageGrid("cpu", (64, 64, 32), 3.0),
    "smoke": ImageGrid("smoke", (32, 32, 16), 6.0),
}


def get_image_grid(spec) -> ImageGrid:
    """An :class:`ImageGrid` from a preset name or a {shape, spacing} mapping."""
    if isinstance(spec, ImageGrid):
        return spec
    if isinstance(spec, str):
        if spec not in IMAGE_GRIDS:
            raise ConfigError(
                f"unknown image grid {spec!r}; available: {', '.join(IMAGE_GRIDS)} "
                "or a table with shape = [X, Y, Z] and spacing = <mm>"
            )
        return IMAGE_GRIDS[spec]
    if isinstance(spec, dict):
        unknown = set(spec) - {"name", "shape", "spacing"}
        if unknown or "shape" not in spec or "spacing" not in spec:
            raise ConfigError(
                "image grid table needs shape = [X, Y, Z] and spacing = <mm> (optional name); "
                f"got keys {sorted(spec)}"
            )
        shape = spec["shape"]
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 3
            or not all(isinstance(s, int) and s >= 8 for s in shape)
        ):
            raise ConfigError(f"image grid shape must be three integers >= 8, got {shape!r}")
        if shape[0] % 4 or shape[1] % 4:
            raise ConfigError(f"image grid in-plane size must be divisible by 4, got {shape!r}")
        spacing = spec["spacing"]
        if not isinstance(spacing, (int, float)) or spacing <= 0:
            raise ConfigError(f"image grid spacing must be a positive number of mm, got {spacing!r}")
        return ImageGrid(str(spec.get("name", "custom")), tuple(shape), float(spacing))
    raise ConfigError(f"image grid must be a name or a table, got {spec!r}")


def crop_or_pad(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre crop/pad with zeros to ``shape`` (torchio's CropOrPad convention)."""
    out = array
    slices = []
    pads = []
    for size, target in zip(array.shape, shape):
        if size >= target:
            start = (size - target) // 2
            slices.append(slice(start, start + target))
            pads.append((0, 0))
        else:
            slices.append(slice(0, size))
            before = (target - size) // 2
            pads.append((before, target - size - before))
    out = out[tuple(slices)]
    if any(p != (0, 0) for p in pads):
        out = np.pad(out, pads, mode="constant")
    return out


def percentile_normalise(image: np.ndarray, brain_mask: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Clip to the [low, high] percentiles inside the brain mask, rescale to [0, 1], zero outside."""
    values = image[brain_mask]
    if values.size == 0:
        raise ValueError("brain mask is empty: cannot normalise intensities")
    p_lo, p_hi = np.percentile(values, [low, high])
    if p_hi <= p_lo:
        out = np.zeros_like(image, dtype=np.float32)
    else:
        out = (np.clip(image, p_lo, p_hi) - p_lo) / (p_hi - p_lo)
    out = out.astype(np.float32)
    out[~brain_mask] = 0.0
    return out


def preprocess(volume: Volume, grid: ImageGrid) -> Volume:
    """Run the pipeline; returns a new Volume on ``grid`` with an affine of the grid's spacing."""
    spacing = np.asarray(volume.spacing)
    fov_vox = tuple(int(round(f / s)) for f, s in zip(grid.fov_mm, spacing))
    # 1. crop/pad to the field of view at native resolution
    image = crop_or_pad(volume.image, fov_vox)
    brain = crop_or_pad(volume.brain_mask.astype(np.uint8), fov_vox).astype(bool)
    lesion = None
    if volume.lesion_mask is not None:
        lesion = crop_or_pad(volume.lesion_mask.astype(np.uint8), fov_vox).astype(bool)
    # 2. percentile normalisation inside the brain mask
    image = percentile_normalise(image, brain)
    # 3. resample to the grid's voxel size
    zoom = tuple(s / grid.spacing for s in spacing)
    if not np.allclose(zoom, 1.0):
        image = ndimage.zoom(image, zoom, order=3, mode="grid-constant", grid_mode=True)
        brain = ndimage.zoom(brain.astype(np.uint8), zoom, order=0, mode="grid-constant", grid_mode=True).astype(bool)
        if lesion is not None:
            lesion = ndimage.zoom(lesion.astype(np.uint8), zoom, order=0, mode="grid-constant", grid_mode=True).astype(bool)
    # 4. exact grid shape; B-spline overshoot is clipped back to [0, 1]
    image = np.clip(crop_or_pad(image, grid.shape), 0.0, 1.0).astype(np.float32)
    brain = crop_or_pad(brain, grid.shape)
    image[~brain] = 0.0
    if lesion is not None:
        lesion = crop_or_pad(lesion, grid.shape)
    affine = np.diag([grid.spacing, grid.spacing, grid.spacing, 1.0])
    affine[:3, 3] = volume.affine[:3, 3]
    return Volume(
        image=image,
        affine=affine,
        brain_mask=brain,
        lesion_mask=lesion,
        subject_id=volume.subject_id,
        meta=dict(volume.meta),
    )
