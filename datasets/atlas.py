"""ATLAS v2.0: chronic stroke lesions on T1-weighted scans, 655 annotated training subjects.

Registered name: ``atlas-t1`` (lesion cohort; splits val/test, all annotated).

Where to get it: Anatomical Tracings of Lesions After Stroke, release 2.0, from ICPSR
(https://www.icpsr.umich.edu/web/ICPSR/studies/36684, an encrypted ``ATLAS_R2.0_encrypted.tar.gz``;
the key comes with the data use agreement; also linked from
https://fcon_1000.projects.nitrc.org/indi/retro/atlas.html). Licence: the ICPSR data use
agreement (research use, no redistribution). Cite: S.-L. Liew et al., "A large, curated,
open-source stroke neuroimaging dataset to improve lesion segmentation algorithms", Scientific
Data 9:320, 2022.

Layout read, under ``<data root>/atlas/`` (or ``directory=``, or ``$UADBENCH_ATLAS_DIR``): the
BIDS tree of the release, found at any depth (``ATLAS_2/Training/<site>/...`` as untarred)::

    ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
        sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz

Lesion mask: ``label-L_desc-T1lesion_mask > 0``. The 300 test subjects of the release have no
masks and are not read (a ``T1w`` without a lesion mask is skipped only under ``Testing/``, an
error elsewhere). Brain mask: the T1w scans are in MNI152NLin2009aSym space (1 mm, 197x233x189)
but *not* skull-stripped, and the release has no brain masks: put one beside each scan as
``<stem>_desc-brain_mask.nii.gz`` with ``<stem>`` the T1w name without ``_T1w`` (the BIDS
derivative name, e.g. from HD-BET) or as ``<T1w name>_brainmask.nii.gz``, or prepare the data with
``uadbench prepare``. A scan without a brain mask is an error naming the expected file.

Splits: the paper's 175 val / 480 test (the MHD repository uses 66 / 589 for the same 655);
scaled down proportionally when fewer subjects are found, see :mod:`uadbench.data.splits`.
"""

from __future__ import annotations

from uadbench.data.prepare.layouts import PrepareDefaults
from uadbench.data.scans import FileDataset, ScanFiles, find_nifti, nifti_names, nifti_stem
from uadbench.data.splits import PAPER_SPLITS
from uadbench.errors import DataError
from uadbench.registry import register_dataset

SPACE = "space-MNI152NLin2009aSym"
T1W = f"_{SPACE}_T1w"
LESION = f"_{SPACE}_label-L_desc-T1lesion_mask"


@register_dataset("atlas-t1")
class ATLAST1(FileDataset):
    """ATLAS v2.0 chronic stroke, T1-weighted, MNI152NLin2009aSym (ICPSR).

    See :mod:`uadbench.datasets.atlas`.
    """

    family = "atlas"
    modality = "t1w"
    split_plan = PAPER_SPLITS["atlas"]
    splits = ("val", "test")
    lesion_splits = ("val", "test")
    layout = (f"<dir>/**/sub-<ID>_ses-<S>{T1W}.nii.gz with <same stem>{LESION}.nii.gz and a brain mask "
              f"sub-<ID>_ses-<S>_{SPACE}_desc-brain_mask.nii.gz beside it")
    prepare_defaults = PrepareDefaults("mask", "template-space", "n4", "ATLAS scans are in MNI152NLin2009aSym space, the default template's, "
                                       "not skull-stripped: masks beside them, N4")

    def discover(self) -> list[ScanFiles]:
        top = self.directory
        scans = sorted(p for pattern in (f"*{T1W}.nii.gz", f"*{T1W}.nii") for p in top.rglob(pattern) if p.is_file())
        if not scans:
            raise DataError(f"{top}: no ATLAS T1w scans (*{T1W}.nii.gz) found ({nifti_names(top)}); expected {self.layout}")
        found = []
        for path in scans:
            stem = nifti_stem(path)[: -len(T1W)]  # sub-r001s001_ses-1
            lesion = find_nifti(path.parent, f"{stem}{LESION}")
            if lesion is None:
                if "Testing" in path.parts:
                    continue  # the release's test subjects come without masks
                raise DataError(f"{path.parent / f'{stem}{LESION}.nii.gz'}: file not found (the lesion mask of {path.name}); expected {self.layout}")
            brain = find_nifti(path.parent, f"{stem}_{SPACE}_desc-brain_mask") or find_nifti(path.parent, f"{nifti_stem(path)}_brainmask")
            if brain is None:
                raise DataError(
                    f"{path}: no brain mask beside it (ATLAS T1w scans are not skull-stripped); expected "
                    f"{stem}_{SPACE}_desc-brain_mask.nii.gz, or run `uadbench prepare`"
                )
            subject = stem.split("_ses-")[0].removeprefix("sub-")
            session = stem.split("_ses-")[1] if "_ses-" in stem else ""
            found.append(ScanFiles(f"{subject}_ses-{session}" if session and session != "1" else subject, path, brain_mask=brain, lesion_mask=lesion))
        if not found:
            raise DataError(f"{top}: only unannotated ATLAS test scans found; expected {self.layout}")
        for lesion in sorted(top.rglob(f"*{LESION}.nii*")):
            stem = nifti_stem(lesion)[: -len(LESION)]
            if find_nifti(lesion.parent, f"{stem}{T1W}") is None:
                raise DataError(f"{lesion}: a lesion mask without its scan {stem}{T1W}.nii.gz; expected {self.layout}")
        return found
