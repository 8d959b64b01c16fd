"""BraTS 2021 (and the 2018-2020 releases): pre-operative gliomas, T1, T1ce (T1Gd), T2 and FLAIR,
with expert tumour labels.

Registered names: ``brats21-t1``, ``brats21-t1ce``, ``brats21-t2``, ``brats21-flair`` (lesion
cohorts; splits val/test, all annotated). The cDDPM paper evaluates on T2 of BraTS 2021.

Where to get it: the RSNA-ASNR-MICCAI BraTS 2021 challenge, training data (1,251 cases) from
Synapse (https://www.synapse.org/brats2021, ``BraTS2021_Training_Data.tar``) or the Kaggle mirror
of the challenge. Licence: the challenge's data terms (research use; cite the papers below).
Cite: U. Baid et al., "The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation and
Radiogenomic Classification", arXiv:2107.02314 (2021); B. H. Menze et al., IEEE TMI 34(10), 2015;
S. Bakas et al., Scientific Data 4:170117, 2017.

Layout read, under ``<data root>/brats21/`` (or ``directory=``, or ``$UADBENCH_BRATS21_DIR``), one
folder per case, directly there or up to two folders below (the archive's top folder, and the
``HGG``/``LGG`` folders of 2018 and 2019); the first depth that holds case folders is read::

    BraTS2021_00000/BraTS2021_00000_t1.nii.gz
    BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz
    BraTS2021_00000/BraTS2021_00000_t2.nii.gz
    BraTS2021_00000/BraTS2021_00000_flair.nii.gz
    BraTS2021_00000/BraTS2021_00000_seg.nii.gz      labels 0, 1 (necrosis), 2 (oedema), 4 (enhancing)

The earlier releases name their cases (the files inside follow the same ``<case>_<tag>`` rule,
``.nii.gz`` or ``.nii``)::

    2018  MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/Brats18_2013_10_1/, Brats18_CBICA_AAB_1/, ...
    2019  MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_2013_10_1/, BraTS19_TMC_06290_1/, ...
    2020  MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/ ... (.nii; case 355's label file is
          W39_1998.09.19_Segm.nii: a case without <case>_seg takes its one file named *seg*)

The case folder's name is the subject id. One folder holds one release: the releases share
patients (BraTS 2021 contains the 2018-2020 cases under new names), so mixing them is refused.

Lesion mask: the whole tumour, ``seg > 0``. Brain mask: the scans are skull-stripped (SRI24,
1 mm, 240x240x155), so brain = ``image != 0`` of the scan read; the download has no mask file.

Splits: the paper's 100 val, the rest test (1,151 of 1,251); scaled down proportionally when
fewer cases are found (:mod:`uadbench.data.splits`).
"""

from __future__ import annotations

import re
from pathlib import Path

from uadbench.data.dataset import dataset_variant
from uadbench.data.prepare.layouts import PrepareDefaults
from uadbench.data.scans import NIFTI_SUFFIXES, FileDataset, ScanFiles, find_nifti, nifti_names
from uadbench.data.splits import PAPER_SPLITS
from uadbench.errors import DataError

RELEASES = {  # case folder names of each release
    "BraTS 2018": re.compile(r"Brats18_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"),
    "BraTS 2019": re.compile(r"BraTS19_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"),
    "BraTS 2020": re.compile(r"BraTS20_Training_\d{3}"),
    "BraTS 2021": re.compile(r"BraTS2021_\d{5}"),
}
CASE_DEPTH = 3  # case folders directly in the folder, or up to two folders below


def release(name: str) -> str | None:
    """The release whose case folders are named like ``name``; None for another folder."""
    return next((r for r, pattern in RELEASES.items() if pattern.fullmatch(name)), None)


def find_cases(top: Path) -> list[Path]:
    """The case folders at the first depth (1 to 3) that holds any, sorted by path."""
    level = [top]
    for _ in range(CASE_DEPTH):
        folders = [p for parent in level for p in sorted(parent.iterdir()) if p.is_dir()]
        cases = [p for p in folders if release(p.name)]
        if cases:
            return cases
        level = folders
    return []


def find_label_file(case: Path) -> Path | None:
    """``<case>_seg``, else the case folder's one NIfTI file named *seg* (BraTS 2020's case 355)."""
    seg = find_nifti(case, f"{case.name}_seg")
    if seg is not None:
        return seg
    named = [p for p in sorted(case.iterdir()) if p.is_file() and "seg" in p.name.lower() and p.name.endswith(NIFTI_SUFFIXES)]
    return named[0] if len(named) == 1 else None


class BraTS21Dataset(FileDataset):
    """Base of the BraTS 2021 datasets; subclasses fix ``tag`` (file suffix) and ``modality``."""

    family = "brats21"
    tag = "t2"
    split_plan = PAPER_SPLITS["brats21"]
    splits = ("val", "test")
    lesion_splits = ("val", "test")
    layout = ("<dir>/BraTS2021_<NNNNN>/BraTS2021_<NNNNN>_{t1,t1ce,t2,flair,seg}.nii.gz, or the case folders of BraTS 2018-2020 "
              "(Brats18_*, BraTS19_*, BraTS20_Training_NNN), directly in <dir> or up to two folders below")
    prepare_defaults = PrepareDefaults("none", "affine", "n4", "BraTS scans are skull-stripped in SRI24 space: registered to the template "
                                       "as the reference does, N4", nonzero_brain=True)

    def discover(self) -> list[ScanFiles]:
        top = self.directory
        cases = find_cases(top)
        if not cases:
            raise DataError(f"{top}: no BraTS case folders found ({nifti_names(top)}); expected {self.layout}")
        releases = sorted({str(release(case.name)) for case in cases})
        if len(releases) > 1:
            raise DataError(f"{top}: case folders of {' and '.join(releases)}; the releases share patients, so point at one release's folder")
        found = []
        for case in cases:
            image = find_nifti(case, f"{case.name}_{self.tag}")
            seg = find_label_file(case)
            if image is None:
                raise DataError(f"{case / f'{case.name}_{self.tag}.nii.gz'}: file not found; expected {self.layout}")
            if seg is None:
                raise DataError(f"{case / f'{case.name}_seg.nii.gz'}: file not found (each training case has one); expected {self.layout}")
            found.append(ScanFiles(case.name, image, brain_mask=None, lesion_mask=seg))
        return found


_MODALITIES = {
    "t1": ("t1w", "T1-weighted"),
    "t1ce": ("t1ce", "contrast-enhanced T1 (T1Gd)"),
    "t2": ("t2w", "T2-weighted"),
    "flair": ("flair", "FLAIR"),
}


def _variant(tag: str) -> type[BraTS21Dataset]:
    modality, words = _MODALITIES[tag]
    doc = f"BraTS 2021 gliomas, {words}, whole tumour = labels > 0 (Synapse).\n\nSee :mod:`uadbench.datasets.brats21`."
    return dataset_variant(BraTS21Dataset, f"BraTS21{tag.upper()}", doc, name=f"brats21-{tag}", tag=tag, modality=modality)


BraTS21T1 = _variant("t1")
BraTS21T1CE = _variant("t1ce")
BraTS21T2 = _variant("t2")
BraTS21FLAIR = _variant("flair")
