"""IXI: about 580 healthy adults scanned in three London hospitals, T1, T2 and PD weighted.

Registered names: ``ixi-t1``, ``ixi-t2``, ``ixi-pd`` (healthy; splits train/val/test).

Where to get it: https://brain-development.org/ixi-dataset/ (``IXI-T1.tar``, ``IXI-T2.tar``,
``IXI-PD.tar`` and the demographics ``IXI.xls``). Licence: CC BY-SA 3.0. Cite the dataset by its
URL (IXI, Imperial College London); there is no dataset paper.

Layouts read, under ``<data root>/ixi/`` (or ``directory=``, or ``$UADBENCH_IXI_DIR``); scans may
sit in that folder or in ``IXI-T1/``, ``IXI-T2/``, ``IXI-PD/`` below it:

- **Official download**, untarred: ``IXI002-Guys-0828-T1.nii.gz`` (``<ID>-<T1|T2|PD>.nii.gz``).
  The scans are *not* skull-stripped and the download has no brain masks: put one beside each
  scan as ``<ID>-T1_mask.nii.gz`` (HD-BET's name) or ``<ID>-T1_brainmask.nii.gz``, or prepare the
  data with ``uadbench prepare``. A scan without a mask is an error naming the expected file.
- **Prepared / NiChart**: ``<ID>_T1.nii.gz`` with a brain mask ``<ID>_T1_brainmask.nii.gz``,
  ``<ID>_T1_mask.nii.gz``, or a parcellation ``<ID>_T1_DLMUSE.nii.gz`` (brain = labels > 0), as in
  the 40-subject sample in ``../shared/realdata/ixi_t1``.

A mask must lie on its scan's grid (same shape and affine). Demographics: ``participants.csv``
(or ``.tsv``, or ``IXI.csv`` saved from ``IXI.xls``) in the data folder, with an id column
(``MRID``, ``IXI_ID``, ``subject_id`` or ``participant_id``; ``IXI_ID`` may be the bare number),
``Age``/``AGE`` and ``Sex``/``SEX_ID`` (1 = M, 2 = F). They reach the result records through
:meth:`subject_info` (``{"age": 57.2, "sex": "F", "site": "HH"}``), with the site from the id
(``IXI002-Guys-0828``: Guys; the three hospitals are HH, Guys and IOP, each its own scanner) also
where there is no demographics table. ``ixi-t2@Guys+HH`` is the subjects of those sites only
(:class:`~uadbench.data.dataset.SiteSubset`): train there, evaluate on ``ixi-t2@IOP``.

Splits (:mod:`uadbench.data.splits`): the paper's 358 train / 44 val / 158 test, five folds whose
validation sets are disjoint, the test set fixed; ``train`` takes any extra subjects and every
size scales down when fewer are found (the 40-subject sample: 26 / 3 / 11). The fold is
``fold=`` (0..4), else ``$UADBENCH_IXI_FOLD``, else 0. The paper's T2 models use the subjects that
have a T2 scan, which these splits do too (each modality splits its own subjects).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from uadbench.data.dataset import dataset_variant
from uadbench.data.prepare.layouts import PrepareDefaults
from uadbench.data.scans import FileDataset, ScanFiles, find_nifti, match_files, nifti_names, nifti_stem
from uadbench.data.splits import PAPER_SPLITS, assign_splits
from uadbench.errors import ConfigError, DataError

IXI_ID = r"IXI\d{3}-[A-Za-z]+-\d{4}"
MASK_SUFFIXES = ("_brainmask", "_mask", "_DLMUSE")  # looked for in this order
PARTICIPANT_FILES = ("participants.csv", "participants.tsv", "IXI.csv")
ID_COLUMNS = ("MRID", "IXI_ID", "subject_id", "participant_id")
AGE_COLUMNS = ("Age", "AGE", "age")
SEX_COLUMNS = ("Sex", "SEX", "sex", "SEX_ID")
SEX_CODES = {"1": "M", "2": "F", "m": "M", "f": "F", "male": "M", "female": "F"}


class IXIDataset(FileDataset):
    """Base of the IXI datasets; subclasses fix ``tag`` (the file-name contrast) and ``modality``."""

    family = "ixi"
    tag: ClassVar[str] = "T1"
    split_plan = PAPER_SPLITS["ixi"]
    splits = ("train", "val", "test")
    lesion_splits = ()
    prepare_defaults = PrepareDefaults("mask", "affine", "n4", "IXI scans are native-space heads: masks beside them (else HD-BET), "
                                       "affine registration, N4", without_masks="hd-bet")

    def __init__(self, root: str | os.PathLike | None = None, seed: int = 0, *, directory: str | os.PathLike | None = None,
                 fold: int | None = None) -> None:
        super().__init__(root=root, seed=seed, directory=directory)
        if fold is None:
            env = os.environ.get("UADBENCH_IXI_FOLD", "0")
            try:
                fold = int(env)
            except ValueError:
                raise ConfigError(f"$UADBENCH_IXI_FOLD must be a fold number 0..{self.split_plan.folds - 1}, got {env!r}") from None
        if not 0 <= fold < self.split_plan.folds:
            raise ConfigError(f"IXI fold must be 0..{self.split_plan.folds - 1}, got {fold}")
        self.fold = fold
        self._participants: dict[str, dict[str, Any]] | None = None

    def options(self) -> dict[str, Any]:
        return {"seed": self.seed, "fold": self.fold}

    def split_csv_path(self) -> Path:
        return self.sidecar / f"splits-{self.name}-seed{self.seed}-fold{self.fold}.csv"

    def assign(self, subject_ids: Sequence[str]) -> dict[str, list[str]]:
        return assign_splits(subject_ids, self.split_plan, seed=self.seed, fold=self.fold, where=str(self.directory))

    def _folders(self) -> list[Path]:
        """Where the scans may sit: the data folder, or IXI-<tag>/ below it."""
        return [self.directory, self.directory / f"IXI-{self.tag}"]

    def _scan_files(self, *, need_masks: bool, remedy: str) -> list[ScanFiles]:
        """Every scan of the folder with the brain mask beside it (None where there is none and
        ``need_masks`` is false), in file order."""
        scan_name = re.compile(rf"({IXI_ID})([-_]){re.escape(self.tag)}\.nii(\.gz)?")
        found = []
        for path, m in match_files(self._folders(), scan_name):
            stem = nifti_stem(path)
            mask = next((p for p in (find_nifti(path.parent, stem + s) for s in MASK_SUFFIXES) if p is not None), None)
            if mask is None and need_masks:
                raise DataError(
                    f"{path}: no brain mask beside it (IXI scans are not skull-stripped); expected "
                    f"{stem}_mask.nii.gz, {stem}_brainmask.nii.gz or {stem}_DLMUSE.nii.gz, or {remedy}"
                )
            found.append(ScanFiles(m.group(1), path, brain_mask=mask))
        if not found:
            raise DataError(f"{self.directory}: no IXI {self.tag} scans found ({nifti_names(self.directory)}); expected {self.layout}")
        return found

    def discover(self) -> list[ScanFiles]:
        found = self._scan_files(need_masks=True, remedy="run `uadbench prepare`")
        mask_name = re.compile(rf"({IXI_ID})[-_]{re.escape(self.tag)}(_DLMUSE|_mask|_brainmask)\.nii(\.gz)?")
        masks_alone = [p for p, _ in match_files(self._folders(), mask_name) if find_nifti(p.parent, nifti_stem(p).rsplit("_", 1)[0]) is None]
        if masks_alone:
            stem = nifti_stem(masks_alone[0]).rsplit("_", 1)[0]
            raise DataError(f"{masks_alone[0]}: a mask without its scan {stem}.nii.gz; expected {self.layout}")
        return found

    def raw_subjects(self, *, need_masks: bool) -> list[ScanFiles]:
        """The scans of a raw download for ``uadbench prepare``, sorted by id. The official download
        has no brain masks: a scan without one has ``brain_mask=None`` (HD-BET computes it)
        unless ``need_masks``."""
        by_id: dict[str, ScanFiles] = {}
        for scan in self._scan_files(need_masks=need_masks, remedy="use --skull-strip hd-bet"):
            if scan.subject_id in by_id:
                raise DataError(f"{scan.image}: subject {scan.subject_id!r} also has {by_id[scan.subject_id].image}; expected one scan per subject")
            by_id[scan.subject_id] = scan
        return [by_id[k] for k in sorted(by_id)]

    # -- demographics -------------------------------------------------------------------------
    def participants_file(self) -> Path | None:
        return next((self.directory / n for n in PARTICIPANT_FILES if (self.directory / n).is_file()), None)

    def extra_files(self) -> list[Path]:
        path = self.participants_file()
        return [path] if path is not None else []

    def participants(self) -> dict[str, dict[str, Any]]:
        if self._participants is None:
            path = self.participants_file()
            table = read_participants(path, list(self.scans())) if path is not None else {}
            self._participants = {sid: {**table.get(sid, {}), **({"site": site} if (site := site_of(sid)) else {})}
                                  for sid in self.scans()}
        return self._participants


def site_of(subject_id: str) -> str | None:
    """The hospital an IXI id names (``IXI002-Guys-0828`` -> ``Guys``), None if it names none."""
    m = re.fullmatch(r"IXI\d{3}-([A-Za-z]+)-\d{4}", subject_id)
    return m.group(1) if m else None


def expected_layout(t: str) -> str:
    return (f"<dir>[/IXI-{t}]/<ID>-{t}.nii.gz with a brain mask <ID>-{t}_mask.nii.gz (official download), "
            f"or <ID>_{t}.nii.gz with <ID>_{t}_DLMUSE.nii.gz or <ID>_{t}_brainmask.nii.gz (prepared), ID like IXI002-Guys-0828")


def read_participants(path: Path, subject_ids: list[str]) -> dict[str, dict[str, Any]]:
    """subject id -> {"age": float | None, "sex": "M" | "F" | None} from an IXI demographics table."""
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        id_col = next((c for c in ID_COLUMNS if c in columns), None)
        if id_col is None:
            raise DataError(f"{path}: no subject id column; expected one of {', '.join(ID_COLUMNS)} (found {', '.join(columns) or 'none'})")
        age_col = next((c for c in AGE_COLUMNS if c in columns), None)
        sex_col = next((c for c in SEX_COLUMNS if c in columns), None)
        rows = list(reader)
    by_number = {int(m.group(1)): sid for sid in subject_ids if (m := re.match(r"IXI(\d+)", sid))}
    known = set(subject_ids)
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        raw_id = (row.get(id_col) or "").strip()
        sid = raw_id if raw_id in known else by_number.get(int(raw_id)) if raw_id.isdigit() else None
        if sid is None:
            continue
        info: dict[str, Any] = {}
        if age_col is not None:
            text = (row.get(age_col) or "").strip()
            try:
                info["age"] = float(text) if text else None
            except ValueError:
                raise DataError(f"{path}: age {text!r} of {raw_id} is not a number") from None
        if sex_col is not None:
            text = (row.get(sex_col) or "").strip()
            info["sex"] = SEX_CODES.get(text.lower(), text or None)
        out[sid] = info
    return out


_MODALITIES = {"T1": ("t1", "t1w", "T1-weighted"), "T2": ("t2", "t2w", "T2-weighted"), "PD": ("pd", "pdw", "proton-density weighted")}


def _variant(tag: str) -> type[IXIDataset]:
    suffix, modality, words = _MODALITIES[tag]
    doc = f"IXI healthy adults, {words} (brain-development.org, CC BY-SA 3.0); 5 folds.\n\nSee :mod:`uadbench.datasets.ixi`."
    return dataset_variant(IXIDataset, f"IXI{tag}", doc, name=f"ixi-{suffix}", tag=tag, modality=modality, layout=expected_layout(tag))


IXIT1 = _variant("T1")
IXIT2 = _variant("T2")
IXIPD = _variant("PD")
