"""Calibration of the phantom's lesion contrast against real scans.

:func:`lesion_contrast_ratio` measures the mean lesion intensity over the mean intensity of the
surrounding brain, identically on the phantom (:func:`phantom_lesion_ratios`) and on real scans
(:func:`mslub_lesion_ratios`); :data:`CALIBRATION_TARGETS` are the ranges the lesion tissues of
:mod:`uadbench.data.phantom.lesions` were tuned to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import nibabel as nib
import numpy as np
from scipy import ndimage

from uadbench.data.phantom.anatomy import SPACING_MM
from uadbench.data.phantom.physics import DEFAULT_SCANNER, MODALITIES, Scanner, get_scanner
from uadbench.data.phantom.subject import COHORTS, get_cohort
from uadbench.data.phantom.synthesis import generate_subject, render
from uadbench.errors import ConfigError, DataError

if TYPE_CHECKING:
    from nibabel.spatialimages import SpatialImage


def lesion_contrast_ratio(
    image: np.ndarray,
    lesion_mask: np.ndarray,
    brain_mask: np.ndarray,
    spacing: Sequence[float] = (SPACING_MM,) * 3,
    shell_mm: float = 5.0,
) -> float:
    """Mean lesion intensity over mean intensity of the surrounding brain.

    The surrounding brain is the shell of voxels within ``shell_mm`` of the lesion (Euclidean
    distance in mm), outside the lesion and inside the brain mask. Used identically on the
    phantom and on real scans so the two can be compared. NaN when the mask or the shell is
    empty.
    """
    lesion = np.asarray(lesion_mask, dtype=bool)
    brain = np.asarray(brain_mask, dtype=bool)
    if not lesion.any():
        return float("nan")
    # distance only in the lesion's bounding box (plus the shell) to stay fast on 1 mm volumes
    pad = [int(np.ceil(shell_mm / s)) + 1 for s in spacing]
    nz = np.nonzero(lesion)
    box = tuple(
        slice(max(0, int(a.min()) - p), min(n, int(a.max()) + p + 1))
        for a, p, n in zip(nz, pad, lesion.shape)
    )
    dist = ndimage.distance_transform_edt(~lesion[box], sampling=spacing)
    shell = (dist > 0) & (dist <= shell_mm) & brain[box]
    if not shell.any():
        return float("nan")
    img = np.asarray(image, dtype=np.float64)[box]
    return float(img[lesion[box]].mean() / img[shell].mean())


#: Lesion-to-surrounding-brain ratio ranges the phantom is calibrated to, per lesion type and
#: modality: tumours from BraTS (whole tumour, 1.2-2.3x FLAIR, 1.1-2.1x T2; hypointense on
#: pre-contrast T1), MS lesions from the MSLUB scans measured with :func:`lesion_contrast_ratio`
#: (see :func:`mslub_lesion_ratios`), chronic stroke from its qualitative appearance
#: (T1-hypointense, T2-hyperintense).
CALIBRATION_TARGETS: dict[str, dict[str, tuple[float, float]]] = {
    "tumour": {"flair": (1.2, 2.3), "t2w": (1.1, 2.1), "t1w": (0.6, 1.0)},
    "ms": {"flair": (1.3, 1.6), "t2w": (1.3, 1.6), "t1w": (0.75, 1.05)},
    "stroke": {"flair": (0.8, 1.6), "t2w": (1.3, 3.0), "t1w": (0.4, 0.9)},
}


def phantom_lesion_ratios(
    cohort: str,
    *,
    count: int = 6,
    seed: int = 0,
    split: str = "test",
    modalities: Sequence[str] = MODALITIES,
    scanner: str | Scanner = DEFAULT_SCANNER,
    shell_mm: float = 5.0,
) -> dict[str, list[float]]:
    """Lesion-to-surrounding-brain ratios of ``count`` phantom subjects, per modality."""
    spec = get_cohort(cohort)
    if spec.lesion is None:
        raise ConfigError(f"cohort {cohort!r} has no lesions; choose one of "
                          f"{', '.join(c for c, s in COHORTS.items() if s.lesion)}")
    scanner = get_scanner(scanner)
    out: dict[str, list[float]] = {m: [] for m in modalities}
    for index in range(count):
        subject = generate_subject(seed, cohort, split, index, field_strength=scanner.field_strength)
        for m in modalities:
            image = render(subject, m, scanner)
            lesion_mask = subject.lesion_mask
            assert lesion_mask is not None  # the cohort has lesions (checked above)
            out[m].append(lesion_contrast_ratio(image, lesion_mask, subject.brain_mask, shell_mm=shell_mm))
    return out


MSLUB_MODALITIES = {"flair": "FLAIR", "t1w": "T1", "t2w": "T2"}


def mslub_lesion_ratios(folder: str | os.PathLike, shell_mm: float = 5.0) -> dict[str, dict[str, float]]:
    """Lesion-to-surrounding-brain ratios of MNI-registered MSLUB scans, per patient and modality.

    ``folder`` holds ``patientNN_MNI_{FLAIR,T1,T2,GOLD_STANDARD}.nii.gz`` (skull-stripped;
    brain mask = nonzero voxels).
    """
    folder = Path(folder)
    masks = sorted(folder.glob("*_MNI_GOLD_STANDARD.nii.gz"))
    if not masks:
        raise DataError(f"no MSLUB lesion masks (*_MNI_GOLD_STANDARD.nii.gz) in {folder}")
    out: dict[str, dict[str, float]] = {}
    for mask_path in masks:
        patient = mask_path.name.split("_MNI_")[0]
        lesion = np.asarray(cast("SpatialImage", nib.load(str(mask_path))).dataobj) > 0
        out[patient] = {}
        for modality, tag in MSLUB_MODALITIES.items():
            img = cast("SpatialImage", nib.load(str(folder / f"{patient}_MNI_{tag}.nii.gz")))
            data = np.asarray(img.dataobj, dtype=np.float32)
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
            out[patient][modality] = lesion_contrast_ratio(data, lesion, data != 0, spacing, shell_mm)
    return out
