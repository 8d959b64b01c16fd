"""The volume pipeline of the reference implementation (METHOD_SPEC §3.3), for any image grid.

1. clip to the 1st-99th intensity percentiles inside the brain mask and rescale to [0, 1], in the
   scan's native space; voxels outside the brain mask are set to 0 (the reference works on
   skull-stripped images);
2. put the volume on the grid with MONAI (:func:`uadbench.data.geometry.to_grid`): reorient to
   RAS, resample to the grid's voxel size (cubic B-spline for the image, nearest for masks) and
   cut the grid's shape centred on the brain mask's bounding box, with an exact affine;
3. clip the B-spline's overshoot back to [0, 1] and zero the image outside the resampled brain.

Axial slices are the last array axis (inferior -> superior). The ``paper`` grid is 96x96x50 at
2 mm (a 192x192x100 mm field of view).

Deviations from the reference: the reference cuts each registered scan to its brain's bounding
box offline, centre-crops 192x192x100 voxels at 1 mm and takes the percentiles over the brain
inside that box. Here the field of view is centred on the brain's bounding box in world space,
for any orientation and voxel size, and the percentiles are taken over the whole brain at the
scan's own resolution, so they do not depend on the grid (the two differ where the grid's field
of view cuts the brain, as the paper grid's 100 mm does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from uadbench.data.geometry import to_grid
from uadbench.data.volume import Volume
from uadbench.errors import ConfigError, DataError

PIPELINE_VERSION = "2"


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
    """Run the pipeline; returns a new Volume on ``grid`` whose affine maps each voxel to its
    world position (``meta`` records the input's affine and shape, see
    :func:`uadbench.data.geometry.to_native`)."""
    if not volume.brain_mask.any():
        raise DataError(f"volume {volume.subject_id!r}: brain mask is empty; the pipeline needs a brain mask with at least one voxel")
    # 1. percentile normalisation inside the brain mask, at native resolution
    normalised = volume.with_image(percentile_normalise(volume.image, volume.brain_mask))
    # 2. RAS, the grid's voxel size and shape, exact affine (MONAI)
    placed = to_grid(normalised, spacing=grid.spacing, shape=grid.shape, image_order=3)
    # 3. B-spline overshoot clipped back to [0, 1]; nothing outside the brain
    image = np.clip(placed.image, 0.0, 1.0).astype(np.float32)
    image[~placed.brain_mask] = 0.0
    return replace(placed, image=image)
