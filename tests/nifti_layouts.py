"""Tiny synthetic NIfTI files laid out as each dataset's official download (for tests).

Every subject gets a small volume (10x12x8, 2 mm): a bright box of "brain" on a zero background,
a brain mask where the layout has one, and a lesion cube with label 1 (WMH also gets label 2).
The image values are unique per subject, so a test can tell which file a volume came from.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (10, 12, 8)
AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def write(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def subject_arrays(index: int, *, ignore_label: bool = False) -> dict[str, np.ndarray]:
    """image (float32, zero outside the brain box), brain labels and lesion labels of subject ``index``."""
    rng = np.random.default_rng(1000 + index)
    brain = np.zeros(SHAPE, dtype=np.uint8)
    brain[2:8, 2:10, 1:7] = 1
    brain[3:7, 3:9, 2:6] = 7  # a parcellation-like second label: brain = labels > 0
    image = np.where(brain > 0, 100.0 + index + rng.random(SHAPE), 0.0).astype(np.float32)
    lesion = np.zeros(SHAPE, dtype=np.uint8)
    lesion[4:6, 4:6, 3:5] = 1
    if ignore_label:
        lesion[6, 7, 4] = 2
    return {"image": image, "brain": brain, "lesion": lesion}


def ixi_id(i: int) -> str:
    return f"IXI{100 + i:03d}-Guys-{1000 + i:04d}"


def write_ixi(folder: Path, n: int = 12, tags=("T1", "T2", "PD"), scheme: str = "official") -> list[str]:
    """official: IXI-<T>/<ID>-<T>.nii.gz + <ID>-<T>_mask.nii.gz; prepared: <ID>_<T>.nii.gz + <ID>_<T>_DLMUSE.nii.gz."""
    ids = [ixi_id(i) for i in range(n)]
    for i, sid in enumerate(ids):
        a = subject_arrays(i)
        for tag in tags:
            if scheme == "official":
                write(folder / f"IXI-{tag}" / f"{sid}-{tag}.nii.gz", a["image"])
                write(folder / f"IXI-{tag}" / f"{sid}-{tag}_mask.nii.gz", (a["brain"] > 0).astype(np.uint8))
            else:
                write(folder / f"{sid}_{tag}.nii.gz", a["image"])
                write(folder / f"{sid}_{tag}_DLMUSE.nii.gz", a["brain"])
    with open(folder / "participants.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["MRID", "Age", "Sex"])
        for i, sid in enumerate(ids):
            w.writerow([sid, f"{20 + i}.5", "F" if i % 2 else "M"])
    return ids


def write_brats(folder: Path, n: int = 3) -> list[str]:
    ids = [f"BraTS2021_{i:05d}" for i in range(n)]
    for i, sid in enumerate(ids):
        a = subject_arrays(i)
        case = folder / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData" / sid
        for tag in ("t1", "t1ce", "t2", "flair"):
            write(case / f"{sid}_{tag}.nii.gz", a["image"])
        seg = a["lesion"].copy()
        seg[5, 5, 3] = 4  # enhancing tumour: part of the whole tumour
        write(case / f"{sid}_seg.nii.gz", seg)
    return ids


def write_mslub(folder: Path, n: int = 3) -> list[str]:
    ids = [f"patient{i + 1:02d}" for i in range(n)]
    for i, sid in enumerate(ids):
        a = subject_arrays(i)
        for tag in ("T1", "T2", "FLAIR", "T1POST"):
            write(folder / f"{sid}_MNI_{tag}.nii.gz", a["image"])
        write(folder / f"{sid}_MNI_GOLD_STANDARD.nii.gz", a["lesion"])
    return ids


ATLAS_SPACE = "space-MNI152NLin2009aSym"


def write_atlas(folder: Path, n: int = 3) -> list[str]:
    ids = [f"r001s{i + 1:03d}" for i in range(n)]
    for i, sid in enumerate(ids):
        a = subject_arrays(i)
        anat = folder / "ATLAS_2" / "Training" / "R001" / f"sub-{sid}" / "ses-1" / "anat"
        stem = f"sub-{sid}_ses-1_{ATLAS_SPACE}"
        write(anat / f"{stem}_T1w.nii.gz", a["image"])
        write(anat / f"{stem}_label-L_desc-T1lesion_mask.nii.gz", a["lesion"])
        write(anat / f"{stem}_desc-brain_mask.nii.gz", (a["brain"] > 0).astype(np.uint8))
    test_anat = folder / "ATLAS_2" / "Testing" / "R009" / "sub-r009s001" / "ses-1" / "anat"
    write(test_anat / f"sub-r009s001_ses-1_{ATLAS_SPACE}_T1w.nii.gz", subject_arrays(99)["image"])  # unannotated: skipped
    return ids


def write_wmh(folder: Path, n: int = 3) -> list[str]:
    ids = []
    for i in range(n):
        a = subject_arrays(i, ignore_label=True)
        subject = folder / "training" / "Utrecht" / str(i)
        write(subject / "wmh.nii.gz", a["lesion"])
        write(subject / "pre" / "T1.nii.gz", a["image"])
        write(subject / "pre" / "FLAIR.nii.gz", a["image"])
        write(subject / "pre" / "brainmask.nii.gz", (a["brain"] > 0).astype(np.uint8))
        write(subject / "orig" / "T1.nii.gz", np.zeros((4, 4, 4), np.float32))  # native grid: not read
        ids.append(f"Utrecht-{i}")
    return ids


WRITERS = {"ixi": write_ixi, "brats21": write_brats, "mslub": write_mslub, "atlas": write_atlas, "wmh": write_wmh}


def write_family(family: str, folder: Path) -> list[str] | None:
    """Write the synthetic layout of ``family`` into ``folder``; None when there is no writer."""
    writer = WRITERS.get(family)
    return writer(folder) if writer is not None else None
