"""BraTS 2021: pre-operative gliomas, T1, T1ce (T1Gd), T2 and FLAIR, with expert tumour labels.

Registered names: ``brats21-t1``, ``brats21-t1ce``, ``brats21-t2``, ``brats21-flair`` (lesion
cohorts; splits val/test, all annotated). The cDDPM paper evaluates on T2.

Where to get it: the RSNA-ASNR-MICCAI BraTS 2021 challenge, training data (1,251 cases) from
Synapse (https://www.synapse.org/brats2021, ``BraTS2021_Training_Data.tar``) or the Kaggle mirror
of the challenge. Licence: the challenge's data terms (research use; cite the papers below).
Cite: U. Baid et al., "The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation and
Radiogenomic Classification", arXiv:2107.02314 (2021); B. H. Menze et al., IEEE TMI 34(10), 2015;
S. Bakas et al., Scientific Data 4:170117, 2017.

Layout read, under ``<data root>/brats21/`` (or ``directory=``, or ``$UADBENCH_BRATS21_DIR``), one
folder per case, directly there or one folder below (the tar's top folder)::

    BraTS2021_00000/BraTS2021_00000_t1.nii.gz
    BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz
    BraTS2021_00000/BraTS2021_00000_t2.nii.gz
    BraTS2021_00000/BraTS2021_00000_flair.nii.gz
    BraTS2021_00000/BraTS2021_00000_seg.nii.gz      labels 0, 1 (necrosis), 2 (oedema), 4 (enhancing)

Lesion mask: the whole tumour, ``seg > 0``. Brain mask: the scans are skull-stripped (SRI24,
1 mm, 240x240x155), so brain = ``image != 0`` of the scan read; the download has no mask file.

Splits: the paper's 100 val, the rest test (1,151 of 1,251); scaled down proportionally when
fewer cases are found (:mod:`uadbench.data.splits`).
"""

from __future__ import annotations

import re

from uadbench.data.dataset import dataset_variant
from uadbench.data.prepare.layouts import PrepareDefaults
from uadbench.data.scans import FileDataset, ScanFiles, find_nifti, nifti_names
from uadbench.data.splits import PAPER_SPLITS
from uadbench.errors import DataError

CASE = re.compile(r"BraTS2021_\d{5}")


class BraTS21Dataset(FileDataset):
    """Base of the BraTS 2021 datasets; subclasses fix ``tag`` (file suffix) and ``modality``."""

    family = "brats21"
    tag = "t2"
    split_plan = PAPER_SPLITS["brats21"]
    splits = ("val", "test")
    lesion_splits = ("val", "test")
    layout = "<dir>/BraTS2021_<NNNNN>/BraTS2021_<NNNNN>_{t1,t1ce,t2,flair,seg}.nii.gz (case folders directly in <dir> or one folder below)"
    prepare_defaults = PrepareDefaults("none", "affine", "n4", "BraTS scans are skull-stripped in SRI24 space: registered to the template "
                                       "as the reference does, N4", nonzero_brain=True)

    def discover(self) -> list[ScanFiles]:
        top = self.directory
        cases = [p for p in sorted(top.iterdir()) if p.is_dir() and CASE.fullmatch(p.name)]
        if not cases:
            below = [sub for sub in sorted(top.iterdir()) if sub.is_dir()]
            cases = [p for sub in below for p in sorted(sub.iterdir()) if p.is_dir() and CASE.fullmatch(p.name)]
        if not cases:
            raise DataError(f"{top}: no BraTS2021_<NNNNN> case folders found ({nifti_names(top)}); expected {self.layout}")
        found = []
        for case in cases:
            image = find_nifti(case, f"{case.name}_{self.tag}")
            seg = find_nifti(case, f"{case.name}_seg")
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
