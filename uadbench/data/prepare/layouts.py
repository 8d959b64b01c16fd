"""Where each dataset's raw scans are and where its prepared files go, and each family's defaults.

Raw scans are found by the dataset's own adapter (``datasets/<family>.py``) reading the raw folder,
so ``prepare`` reads exactly the layouts the adapters document. IXI is the exception: its official
download has no brain masks, which its adapter requires, so it is read here with the masks
optional (HD-BET computes them).

Prepared files keep the raw layout: each file is written at its path relative to the raw folder,
under ``<out>/<family>/`` (the folder the adapter reads under a data root ``<out>``), and the
brain mask goes beside the image as ``<image name>_brainmask.nii.gz``, a name every adapter that
reads mask files finds (IXI, ATLAS, WMH); MSLUB and BraTS read ``image != 0`` and ignore it. So
``uadbench run --data-root <out>`` reads what ``uadbench prepare DATASET --out <out>`` wrote.
Files besides the scans that the adapter reads (IXI's ``participants.csv``) are copied.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from uadbench.data.scans import FileDataset, ScanFiles, find_nifti, match_files, nifti_names, nifti_stem
from uadbench.errors import DataError


@dataclass(frozen=True)
class FamilyDefaults:
    """What ``auto`` means for a dataset family, and why."""

    skull_strip: str  # "mask" (or "hd-bet" where no mask is found), "none"
    register: str  # "affine"; "template-space": none with the default MNI152 template (the data are in its space), else affine
    bias: str  # "n4", "none"
    why: str


FAMILY_DEFAULTS: dict[str, FamilyDefaults] = {
    "ixi": FamilyDefaults("mask", "affine", "n4", "IXI scans are native-space heads: masks beside them (else HD-BET), "
                                                   "affine registration, N4"),
    "brats21": FamilyDefaults("none", "affine", "n4", "BraTS scans are skull-stripped in SRI24 space: registered to the "
                                                      "template as the reference does, N4"),
    "mslub": FamilyDefaults("none", "affine", "none", "the MSLUB release is skull-stripped and N4-corrected, and registered to "
                                                      "FSL's MNI152, another template: registered to the template as the IXI scans are"),
    "atlas": FamilyDefaults("mask", "template-space", "n4", "ATLAS scans are in MNI152NLin2009aSym space, the default template's, "
                                                            "not skull-stripped: masks beside them, N4"),
    "wmh": FamilyDefaults("mask", "affine", "n4", "WMH scans are native-space heads: masks beside them, affine registration, N4"),
}


def brain_mask_name(image_name: str) -> str:
    """``<stem>_brainmask.nii.gz`` (or ``.nii``) for an image file name."""
    stem = nifti_stem(Path(image_name))
    return f"{stem}_brainmask{'.nii' if image_name.endswith('.nii') else '.nii.gz'}"


def raw_subjects(source: FileDataset, *, need_masks: bool) -> list[ScanFiles]:
    """The raw subjects of ``source`` (whose ``directory`` is the raw folder), sorted by id; no
    lesion mask for a healthy dataset."""
    if source.family == "ixi":
        return _ixi_subjects(source, need_masks=need_masks)
    return [s if source.lesion_splits else dataclasses.replace(s, lesion_mask=None) for s in source.scans().values()]


def _ixi_subjects(source: FileDataset, *, need_masks: bool) -> list[ScanFiles]:
    from uadbench.datasets.ixi import IXI_ID, MASK_SUFFIXES

    tag = getattr(source, "tag", "T1")
    folders = [source.directory, source.directory / f"IXI-{tag}"]
    pattern = re.compile(rf"({IXI_ID})([-_]){re.escape(tag)}\.nii(\.gz)?")
    found: dict[str, ScanFiles] = {}
    for path, m in match_files(folders, pattern):
        stem = nifti_stem(path)
        mask = next((p for p in (find_nifti(path.parent, stem + s) for s in MASK_SUFFIXES) if p is not None), None)
        if mask is None and need_masks:
            raise DataError(f"{path}: no brain mask beside it; expected {stem}_mask.nii.gz, {stem}_brainmask.nii.gz or "
                            f"{stem}_DLMUSE.nii.gz, or use --skull-strip hd-bet")
        if m.group(1) in found:
            raise DataError(f"{path}: subject {m.group(1)!r} also has {found[m.group(1)].image}; expected one scan per subject")
        found[m.group(1)] = ScanFiles(m.group(1), path, mask)
    if not found:
        raise DataError(f"{source.directory}: no IXI {tag} scans found ({nifti_names(source.directory)}); expected {source.layout}")
    return [found[k] for k in sorted(found)]


def ixi_has_masks(source: FileDataset) -> bool:
    """Whether every IXI scan in the raw folder has a mask beside it."""
    return all(s.brain_mask is not None for s in _ixi_subjects(source, need_masks=False))


def output_paths(raw_dir: Path, out_dir: Path, subject: ScanFiles) -> dict[str, Path]:
    """Where the prepared image, brain mask and lesion mask of ``subject`` go (see the module)."""
    image = out_dir / subject.image.relative_to(raw_dir)
    out = {"image": image, "brain_mask": image.with_name(brain_mask_name(image.name))}
    if subject.lesion_mask is not None:
        out["lesion_mask"] = out_dir / subject.lesion_mask.relative_to(raw_dir)
    return out
