"""Anatomy of the phantom: the MNI152 template's tissue fractions and landmarks.

The MNI152 2009a symmetric template and its grey/white-matter probability maps, shipped inside
nilearn (no download), at 2 mm (99x117x95 voxels). CSF is the rest of the brain mask,
``csf = brain - gm - wm``; the three are partial-volume tissue fractions. nilearn is imported
on first use only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from uadbench.errors import DataError

SPACING_MM = 2.0


@dataclass(frozen=True)
class Anatomy:
    """Tissue fractions of the template on its 2 mm grid, plus landmarks in voxel coordinates."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray  # float 0/1
    affine: np.ndarray
    ventricle_centre: np.ndarray  # voxel coordinates
    ventricle_distance: np.ndarray  # mm from the lateral ventricles (template space)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.gm.shape)


# The lateral ventricles' centre in MNI mm (x, y, z); used for ventricle-size variation.
VENTRICLE_CENTRE_MNI = np.array([0.0, -12.0, 14.0])


@functools.lru_cache(maxsize=1)
def load_anatomy() -> Anatomy:
    """The MNI152 template's tissue fractions at 2 mm (from nilearn's bundled files)."""
    try:
        from nilearn import datasets as nl_datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise DataError(f"the phantom needs nilearn for the MNI152 template: {exc}") from exc
    gm_img = nl_datasets.load_mni152_gm_template(resolution=2)
    gm = np.asarray(gm_img.dataobj, dtype=np.float32)
    wm = np.asarray(nl_datasets.load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
    brain = np.asarray(nl_datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    affine = np.asarray(gm_img.affine, dtype=np.float64)
    gm = np.clip(gm, 0.0, 1.0) * brain
    wm = np.clip(wm, 0.0, 1.0) * brain
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(brain - gm - wm, 0.0, 1.0).astype(np.float32)
    centre = np.linalg.solve(affine, np.r_[VENTRICLE_CENTRE_MNI, 1.0])[:3]
    # Lateral ventricles: CSF-dominated voxels within an ellipsoid around their centre.
    idx = np.indices(gm.shape, dtype=np.float32)
    radii_vox = np.array([22.0, 40.0, 20.0]) / SPACING_MM
    ell = sum(((idx[i] - centre[i]) / radii_vox[i]) ** 2 for i in range(3)) <= 1.0
    ventricles = (csf > 0.5) & ell
    dist = ndimage.distance_transform_edt(~ventricles, sampling=SPACING_MM).astype(np.float32)
    arrays = [gm.astype(np.float32), wm.astype(np.float32), csf, brain.astype(np.float32), dist]
    for a in arrays:  # shared by every subject of the process: never modified
        a.setflags(write=False)
    gm, wm, csf, brain, dist = arrays
    return Anatomy(
        gm=gm,
        wm=wm,
        csf=csf,
        brain=brain,
        affine=affine,
        ventricle_centre=centre,
        ventricle_distance=dist,
    )

