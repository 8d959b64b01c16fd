"""MSLUB: 30 multiple-sclerosis patients (Ljubljana), T1, T2 and FLAIR, with consensus lesion masks.

Registered names: ``mslub-t1``, ``mslub-t2``, ``mslub-flair`` (lesion cohorts; splits val/test,
all annotated). The cDDPM paper evaluates on T2.

Where to get it: the Laboratory of Imaging Technologies, University of Ljubljana
(http://lit.fe.uni-lj.si/tools.php?lang=eng, "3D MR image database of Multiple Sclerosis
patients with white matter lesion segmentations"). Licence: CC BY (Creative Commons Attribution). Cite: Ž. Lesjak et al.,
"A Novel Public MR Image Dataset of Multiple Sclerosis Patients With Lesion Segmentations Based
on Multi-rater Consensus", Neuroinformatics 16(1):51-63, 2018.

Layout read, under ``<data root>/mslub/`` (or ``directory=``, or ``$UADBENCH_MSLUB_DIR``): the
skull-stripped, bias-corrected release registered to MNI152 (1 mm, 182x218x182), as in the
3-patient sample in ``../shared/realdata/mslub``; files directly in the folder or in one folder
per patient::

    patient01_MNI_T1.nii.gz   patient01_MNI_T2.nii.gz   patient01_MNI_FLAIR.nii.gz
    patient01_MNI_GOLD_STANDARD.nii.gz                   consensus lesion mask (0/1)

(``patientNN_MNI_T1POST.nii.gz``, contrast-enhanced T1, is present but not used.) Lesion mask:
``GOLD_STANDARD > 0``. Brain mask: the scans are skull-stripped, so brain = ``image != 0`` of the
scan read (the background is exactly 0; the brain edge has small negative values, which count
as brain); this release has no mask file.

Splits: the paper's 10 val / 20 test; scaled down proportionally when fewer patients are found
(the 3-patient sample: 1 val / 2 test), see :mod:`uadbench.data.splits`.
"""

from __future__ import annotations

import re

from uadbench.data.dataset import dataset_variant
from uadbench.data.prepare.layouts import PrepareDefaults
from uadbench.data.scans import FileDataset, ScanFiles, find_nifti, match_files, nifti_names
from uadbench.data.splits import PAPER_SPLITS
from uadbench.errors import DataError

PATIENT = r"patient\d+"


class MSLUBDataset(FileDataset):
    """Base of the MSLUB datasets; subclasses fix ``tag`` (file-name contrast) and ``modality``."""

    family = "mslub"
    tag = "T2"
    split_plan = PAPER_SPLITS["mslub"]
    splits = ("val", "test")
    lesion_splits = ("val", "test")
    layout = "<dir>[/patientNN]/patientNN_MNI_{T1,T2,FLAIR}.nii.gz with patientNN_MNI_GOLD_STANDARD.nii.gz"
    prepare_defaults = PrepareDefaults("none", "affine", "none", "the MSLUB release is skull-stripped and N4-corrected, and registered to "
                                       "FSL's MNI152, another template: registered to the template as the IXI scans are", nonzero_brain=True)

    def discover(self) -> list[ScanFiles]:
        top = self.directory
        folders = [top] + [p for p in sorted(top.iterdir()) if p.is_dir() and re.fullmatch(PATIENT, p.name)]
        found = []
        for path, m in match_files(folders, re.compile(rf"({PATIENT})_MNI_{self.tag}\.nii(\.gz)?")):
            gold = find_nifti(path.parent, f"{m.group(1)}_MNI_GOLD_STANDARD")
            if gold is None:
                expected = path.parent / f"{m.group(1)}_MNI_GOLD_STANDARD.nii.gz"
                raise DataError(f"{expected}: file not found (the lesion mask of {path.name}); expected {self.layout}")
            found.append(ScanFiles(m.group(1), path, brain_mask=None, lesion_mask=gold))
        if not found:
            raise DataError(f"{top}: no MSLUB {self.tag} scans found ({nifti_names(top)}); expected {self.layout}")
        have = {s.subject_id for s in found}
        for gold, m in match_files(folders, re.compile(rf"({PATIENT})_MNI_GOLD_STANDARD\.nii(\.gz)?")):
            if m.group(1) not in have:
                raise DataError(f"{gold}: a lesion mask without its scan {m.group(1)}_MNI_{self.tag}.nii.gz; expected {self.layout}")
        return found


_MODALITIES = {"T1": ("t1", "t1w", "T1-weighted"), "T2": ("t2", "t2w", "T2-weighted"), "FLAIR": ("flair", "flair", "FLAIR")}


def _variant(tag: str) -> type[MSLUBDataset]:
    suffix, modality, words = _MODALITIES[tag]
    doc = f"MSLUB multiple-sclerosis patients, {words}, consensus lesion masks (CC BY).\n\nSee :mod:`uadbench.datasets.mslub`."
    return dataset_variant(MSLUBDataset, f"MSLUB{tag}", doc, name=f"mslub-{suffix}", tag=tag, modality=modality)


MSLUBT1 = _variant("T1")
MSLUBT2 = _variant("T2")
MSLUBFLAIR = _variant("FLAIR")
