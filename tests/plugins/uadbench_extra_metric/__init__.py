"""A throwaway metric package: the whole of what a package needs to add per-volume metrics.

The tests install it at run time through a real entry point (a ``.dist-info`` folder with an
``entry_points.txt`` line, ``extra = uadbench_extra_metric``, in the group ``uadbench.metrics``).
"""

from __future__ import annotations

import numpy as np

from uadbench.evaluation.catalogue import volume_metric


@volume_metric("extra_lesion_score", direction="higher")
def lesion_score(processed, lesion, brain, spacing):
    """Mean post-processed score over the lesion voxels (undefined without lesion voxels)."""
    if lesion is None or not lesion.any():
        return float("nan")
    return float(np.mean(processed[lesion], dtype=np.float64))


@volume_metric("extra_brain_ml", direction="signed", version="2")
def brain_ml(processed, lesion, brain, spacing):
    """Brain-mask volume in ml."""
    return float(np.count_nonzero(brain)) * spacing**3 / 1000.0
