"""NIfTI reading and writing (nibabel), and the on-disk layout of a prepared dataset.

A prepared dataset directory holds one folder per split and three files per subject::

    <dir>/manifest.json                 {"splits": {split: [subject ids]}, "files": {relpath: sha256}}
    <dir>/<split>/<id>_image.nii.gz     float32 image
    <dir>/<split>/<id>_brainmask.nii.gz uint8 brain mask
    <dir>/<split>/<id>_lesion.nii.gz    uint8 lesion mask (annotated subjects only)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

import nibabel as nib
import numpy as np

from uadbench.data.volume import Volume
from uadbench.errors import DataError
from uadbench.files import atomic_path, sha256_file

if TYPE_CHECKING:
    from nibabel.spatialimages import SpatialImage

MANIFEST = "manifest.json"


MAX_READ_VOXELS = 512**3  # a volume larger than this is refused before its data are read (a header can claim anything)
VOXEL_SIZE_MM = (1e-3, 100.0)  # plausible voxel sizes of a brain scan, in mm


def check_header(img: SpatialImage, path: str | os.PathLike) -> None:
    """Refuse, before any voxel is read, a NIfTI whose header claims an absurd size (a small
    ``.nii.gz`` can declare 32 GiB), zero or absurd voxel sizes, or a singular or non-finite affine."""
    shape = tuple(int(s) for s in img.shape)
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if not shape or voxels > MAX_READ_VOXELS or min(shape) < 1:
        raise DataError(f"{path}: header declares shape {shape} ({voxels:,} voxels); a volume must have 1 to {MAX_READ_VOXELS:,} voxels")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    low, high = VOXEL_SIZE_MM
    if not all(np.isfinite(z) and low <= abs(z) <= high for z in zooms):
        raise DataError(f"{path}: header declares voxel sizes {zooms} mm; each must be between {low:g} and {high:g} mm")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"{path}: the header's affine is singular or not finite; it must map voxels to millimetres")


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of a NIfTI file; a clear error if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIfTI file not found: {path}")
    try:
        img = cast("SpatialImage", nib.load(str(path)))  # NIfTI files load as spatial images (the header only)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise DataError(f"cannot read NIfTI file {path}: {exc}") from exc
    check_header(img, path)
    try:
        return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise DataError(f"cannot read NIfTI file {path}: {exc}") from exc


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` atomically as NIfTI (gzip when the name ends in .gz)."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    with atomic_path(path, suffix=suffix) as tmp:
        final_tmp = tmp.with_name(tmp.name[: -len(".tmp")] )  # nibabel needs the real extension
        nib.save(img, str(final_tmp))
        os.replace(final_tmp, tmp)


def subject_paths(root: Path, split: str, subject: str) -> dict[str, Path]:
    base = root / split
    return {
        "image": base / f"{subject}_image.nii.gz",
        "brainmask": base / f"{subject}_brainmask.nii.gz",
        "lesion": base / f"{subject}_lesion.nii.gz",
    }


def write_subject(root: Path, split: str, volume: Volume) -> dict[str, Path]:
    paths = subject_paths(root, split, volume.subject_id)
    save_nifti(paths["image"], volume.image.astype(np.float32), volume.affine)
    save_nifti(paths["brainmask"], volume.brain_mask.astype(np.uint8), volume.affine)
    if volume.lesion_mask is not None:
        save_nifti(paths["lesion"], volume.lesion_mask.astype(np.uint8), volume.affine)
    return paths


def read_subject(root: Path, split: str, subject: str) -> Volume:
    paths = subject_paths(root, split, subject)
    image, affine = load_nifti(paths["image"])
    brain, _ = load_nifti(paths["brainmask"])
    lesion = None
    if paths["lesion"].is_file():
        lesion = load_nifti(paths["lesion"])[0] > 0
    if brain.shape != image.shape:
        raise DataError(f"{paths['brainmask']}: shape {brain.shape} differs from image {image.shape}")
    return Volume(
        image=image.astype(np.float32),
        affine=affine,
        brain_mask=brain > 0,
        lesion_mask=lesion,
        subject_id=subject,
    )


def write_manifest(root: Path, splits: dict[str, list[str]], extra: dict | None = None) -> dict:
    files = {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*.nii*"))
        if p.is_file()
    }
    manifest = {"splits": splits, "files": files, **(extra or {})}
    with atomic_path(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"dataset manifest not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"dataset manifest {path} is not valid JSON: {exc}") from exc
