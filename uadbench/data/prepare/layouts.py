"""What a dataset declares for ``uadbench prepare``, where its raw scans are, and where its prepared
files go. This module names no dataset: each dataset's adapter declares its own.

A preparable dataset is a :class:`~uadbench.data.scans.FileDataset` whose class sets
``prepare_defaults`` (a :class:`PrepareDefaults`: what ``auto`` means for it, and why). Raw scans
are found by the dataset's own adapter reading the raw folder, so ``prepare`` reads exactly the
layouts the adapters document: the adapter's :meth:`~uadbench.data.scans.FileDataset.scans`, or
its ``raw_subjects(need_masks=...)`` method where the raw download differs from what the adapter
reads (a download without the brain masks the adapter requires, which HD-BET then computes).

Prepared files keep the raw layout: each file is written at its path relative to the raw folder,
under ``<out>/<family>/`` (the folder the adapter reads under a data root ``<out>``; a dataset
that says otherwise has a ``prepared_folder(out)`` class method, as a folder card does), and the
brain mask goes beside the image as ``<image name>_brainmask.nii.gz``, a name every adapter that
reads mask files finds; adapters of skull-stripped data read ``image != 0`` and ignore it
(``PrepareDefaults.nonzero_brain``). So ``uadbench run --data-root <out>`` reads what
``uadbench prepare DATASET --out <out>`` wrote. Files besides the scans that the adapter reads
(:meth:`~uadbench.data.scans.FileDataset.extra_files`, a participants table) are copied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uadbench.data.scans import FileDataset, ScanFiles, nifti_stem
from uadbench.errors import ConfigError

SKULL_STRIP_DEFAULTS = ("mask", "hd-bet", "none")
REGISTER_DEFAULTS = ("affine", "none", "template-space")
BIAS_DEFAULTS = ("n4", "none")


@dataclass(frozen=True)
class PrepareDefaults:
    """What ``auto`` means when ``uadbench prepare`` prepares a dataset, and why; a dataset declares
    its own as the class attribute ``prepare_defaults`` of its adapter."""

    skull_strip: str  # "mask": the brain masks beside the scans; "hd-bet"; "none": skull-stripped already
    register: str  # "affine", "none"; "template-space": none with the default MNI152 template (the data are in its space), else affine
    bias: str  # "n4", "none"
    why: str  # one sentence, shown with the plan
    without_masks: str | None = None  # what "mask" becomes where a raw scan has no mask beside it ("hd-bet"); None: masks are required
    nonzero_brain: bool = False  # the adapter reads brain = image != 0, so no prepared brain voxel may be exactly 0
    # the other settings, where the dataset has its own (a card's [prepare] table); None: the harness's default
    template: str | None = None  # None: nilearn's MNI152 brain
    resolution: float | None = None  # None: 1 mm
    margin: int | None = None  # None: 0 voxels
    fine_registration: bool | None = None  # None: False
    hd_bet_mode: str | None = None  # None: "fast"

    def __post_init__(self) -> None:
        for name, valid in (("skull_strip", SKULL_STRIP_DEFAULTS), ("register", REGISTER_DEFAULTS), ("bias", BIAS_DEFAULTS),
                            ("without_masks", ("hd-bet", None))):
            if getattr(self, name) not in valid:
                raise ValueError(f"PrepareDefaults.{name} must be one of {', '.join(map(str, valid))}, got {getattr(self, name)!r}")


def prepare_defaults(dataset: Any) -> PrepareDefaults | None:
    """The defaults a dataset (class or instance) declares; None when it declares none (not preparable)."""
    defaults = getattr(dataset, "prepare_defaults", None)
    is_file_dataset = isinstance(dataset, FileDataset) or (isinstance(dataset, type) and issubclass(dataset, FileDataset))
    return defaults if is_file_dataset and isinstance(defaults, PrepareDefaults) else None


def raw_folder(cls: type, raw: Path | None) -> Path:
    """The folder ``prepare`` reads: ``raw``, else the one the dataset knows (a card's root)."""
    if raw is not None:
        return raw
    own = getattr(cls, "default_raw_folder", None)
    if callable(own):
        return Path(own())
    raise ConfigError(f"--raw is required for dataset {getattr(cls, 'registered_name', cls.__name__)!r}: name the folder of its raw download "
                      "(a dataset card knows its own root)")


def prepared_folder(source: FileDataset, out: Path | None) -> Path:
    """The folder ``prepare`` writes into: the dataset's own choice, else ``<out>/<family>``."""
    own = getattr(source, "prepared_folder", None)
    if callable(own):
        return Path(own(out))
    if out is None:
        raise ConfigError(f"--out is required for dataset {source.name!r}: the data root to write into (the data go to OUT/{source.family}/)")
    return out / source.family


def brain_mask_name(image_name: str) -> str:
    """``<stem>_brainmask.nii.gz`` (or ``.nii``) for an image file name."""
    stem = nifti_stem(Path(image_name))
    return f"{stem}_brainmask{'.nii' if image_name.endswith('.nii') else '.nii.gz'}"


def raw_subjects(source: FileDataset, *, need_masks: bool) -> list[ScanFiles]:
    """The raw subjects of ``source`` (whose ``directory`` is the raw folder), sorted by id, as the
    dataset declares them (its ``raw_subjects`` method, else its adapter's scans); no lesion mask
    for a healthy dataset. ``need_masks``: a scan without a brain mask is an error."""
    own = getattr(source, "raw_subjects", None)
    if callable(own):
        return list(own(need_masks=need_masks))
    return [s if source.lesion_splits else dataclasses.replace(s, lesion_mask=None) for s in source.scans().values()]


def has_masks(source: FileDataset) -> bool:
    """Whether every raw scan of ``source`` has a brain mask beside it."""
    return all(s.brain_mask is not None for s in raw_subjects(source, need_masks=False))


def output_paths(raw_dir: Path, out_dir: Path, subject: ScanFiles) -> dict[str, Path]:
    """Where the prepared image, brain mask and lesion mask of ``subject`` go (see the module)."""
    image = out_dir / subject.image.relative_to(raw_dir)
    out = {"image": image, "brain_mask": image.with_name(brain_mask_name(image.name))}
    if subject.lesion_mask is not None:
        out["lesion_mask"] = out_dir / subject.lesion_mask.relative_to(raw_dir)
    return out
