"""N4 bias-field correction (Tustison et al., IEEE TMI 2010) with the reference's settings.

The reference (``preprocessing/n4filter.py``, METHOD_SPEC §3.2) runs ANTs's N4 with convergence
iterations [200, 200, 200, 200], tolerance 5e-4 and a weight mask: the brain mask smoothed with a
Gaussian of sigma 1. Here N4 also gets the brain mask itself as its mask, so the field is fitted
on brain voxels only (the reference's BraTS script meant to, but passed a folder that did not
exist yet). Voxels outside the brain are 0 afterwards.
"""

from __future__ import annotations

import numpy as np

from uadbench.data.prepare import antsio

BIAS_METHODS = ("n4", "none")
N4_CONVERGENCE = {"iters": [200, 200, 200, 200], "tol": 5e-4}
N4_SHRINK = 4
N4_WEIGHT_SIGMA = 1.0


def n4_correct(image: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``image`` divided by N4's estimate of its bias field, 0 outside ``brain``."""
    ants = antsio.require_ants("N4 bias-field correction")
    img = antsio.to_ants(np.where(brain, image, 0), affine)
    mask = antsio.to_ants(brain.astype(np.float32), affine)
    weight = ants.smooth_image(mask, N4_WEIGHT_SIGMA)
    out = ants.n4_bias_field_correction(img, mask=mask, shrink_factor=N4_SHRINK, convergence=dict(N4_CONVERGENCE), weight_mask=weight)
    corrected = antsio.from_ants(out)[0]
    return np.where(brain, corrected, 0).astype(np.float32)
