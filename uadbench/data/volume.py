"""The Volume: one subject's image with its geometry and masks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Volume:
    """A 3D image (X, Y, Z; axial slices along the last axis) and its masks.

    ``image`` is float32; ``brain_mask`` and ``lesion_mask`` are boolean arrays of the same shape.
    ``lesion_mask`` is None for healthy subjects without annotation. Lesion masks are for the
    harness's evaluation only and never reach a method.
    """

    image: np.ndarray
    affine: np.ndarray
    brain_mask: np.ndarray
    subject_id: str
    lesion_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.brain_mask = np.asarray(self.brain_mask, dtype=bool)
        if self.image.ndim != 3:
            raise ValueError(f"volume {self.subject_id!r}: image must be 3D, got {self.image.shape}")
        if self.brain_mask.shape != self.image.shape:
            raise ValueError(
                f"volume {self.subject_id!r}: brain mask shape {self.brain_mask.shape} "
                f"differs from image shape {self.image.shape}"
            )
        if self.lesion_mask is not None:
            self.lesion_mask = np.asarray(self.lesion_mask, dtype=bool)
            if self.lesion_mask.shape != self.image.shape:
                raise ValueError(
                    f"volume {self.subject_id!r}: lesion mask shape {self.lesion_mask.shape} "
                    f"differs from image shape {self.image.shape}"
                )
        if self.affine.shape != (4, 4):
            raise ValueError(f"volume {self.subject_id!r}: affine must be 4x4")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def has_lesion(self) -> bool:
        return self.lesion_mask is not None and bool(self.lesion_mask.any())

    def with_image(self, image: np.ndarray) -> Volume:
        return replace(self, image=np.asarray(image, dtype=np.float32))
