"""WMH: the MICCAI 2017 White Matter Hyperintensity segmentation challenge, T1 and FLAIR.

Registered names: ``wmh-t1``, ``wmh-flair`` (lesion cohorts; splits val/test, all annotated).
The cDDPM paper evaluates on T1.

Where to get it: https://wmh.isi.uu.nl/ (the 60 public training subjects from Utrecht,
Singapore and Amsterdam GE3T; the full release with the test subjects is on DataverseNL,
doi:10.34894/AECRSD). Licence: CC BY-NC 4.0 (DataverseNL release). Cite: H. J. Kuijf et al.,
"Standardized Assessment of Automatic Segmentation of White Matter Hyperintensities and Results
of the WMH Segmentation Challenge", IEEE TMI 38(11):2556-2568, 2019.

Layout read, under ``<data root>/wmh/`` (or ``directory=``, or ``$UADBENCH_WMH_DIR``), one folder
per subject at any depth (``training/Utrecht/0/`` or ``training/Amsterdam/GE3T/100/``)::

    <site>/<id>/wmh.nii.gz           labels: 0 background, 1 white matter hyperintensity,
                                     2 other pathology (ignored by the challenge's metrics)
    <site>/<id>/pre/FLAIR.nii.gz     FLAIR, bias-corrected
    <site>/<id>/pre/T1.nii.gz        T1 registered to the FLAIR (same grid as wmh.nii.gz)
    <site>/<id>/pre/brainmask.nii.gz a brain mask on the same grid (not in the download, see below)

Subject ids are ``<site>-<id>`` (``Utrecht-0``). Lesion mask: label 1. Label 2 ("other
pathology") is neither lesion nor healthy: its voxels come as ``volume.meta["ignore_mask"]``
(:data:`uadbench.data.scans.IGNORE_MASK`, boolean, same grid) so the harness can leave them out
of every metric, as the challenge does. Brain mask: the scans are not skull-stripped and the
download has no brain masks: put one at ``pre/brainmask.nii.gz`` (or ``pre/FLAIR_brainmask.nii.gz``
/ ``pre/T1_brainmask.nii.gz``) or prepare the data with ``uadbench prepare``; a subject without
one is an error naming the expected file. The ``orig/`` scans (native T1 grid) are not read.

Splits: the paper's 15 val / 45 test; scaled down proportionally when fewer subjects are found,
see :mod:`uadbench.data.splits`.
"""

from __future__ import annotations

from uadbench.data.dataset import dataset_variant
from uadbench.data.prepare.layouts import PrepareDefaults
from uadbench.data.scans import FileDataset, ScanFiles, find_nifti, nifti_names
from uadbench.data.splits import PAPER_SPLITS
from uadbench.errors import DataError


class WMHDataset(FileDataset):
    """Base of the WMH datasets; subclasses fix ``tag`` (file name in pre/) and ``modality``."""

    family = "wmh"
    tag = "T1"
    split_plan = PAPER_SPLITS["wmh"]
    splits = ("val", "test")
    lesion_splits = ("val", "test")
    lesion_labels = (1,)
    ignore_labels = (2,)
    layout = "<dir>/**/<site>/<id>/wmh.nii.gz with <id>/pre/{T1,FLAIR}.nii.gz and <id>/pre/brainmask.nii.gz"
    prepare_defaults = PrepareDefaults("mask", "affine", "n4", "WMH scans are native-space heads: masks beside them, affine registration, N4")

    def discover(self) -> list[ScanFiles]:
        top = self.directory
        labels = sorted(p for name in ("wmh.nii.gz", "wmh.nii") for p in top.rglob(name) if p.is_file())
        if not labels:
            raise DataError(f"{top}: no WMH subjects (<site>/<id>/wmh.nii.gz) found ({nifti_names(top)}); expected {self.layout}")
        found = []
        for label in labels:
            folder = label.parent
            pre = folder / "pre"
            image = find_nifti(pre, self.tag)
            if image is None:
                raise DataError(f"{pre / f'{self.tag}.nii.gz'}: file not found (the {self.tag} scan of {folder}); expected {self.layout}")
            brain = find_nifti(pre, "brainmask") or find_nifti(pre, f"{self.tag}_brainmask")
            if brain is None:
                raise DataError(
                    f"{pre / 'brainmask.nii.gz'}: file not found (WMH scans are not skull-stripped and the download has no brain "
                    f"masks); write one there or run `uadbench prepare`"
                )
            found.append(ScanFiles(f"{folder.parent.name}-{folder.name}", image, brain_mask=brain, lesion_mask=label))
        return found


_MODALITIES = {"T1": ("t1", "t1w", "T1-weighted"), "FLAIR": ("flair", "flair", "FLAIR")}


def _variant(tag: str) -> type[WMHDataset]:
    suffix, modality, words = _MODALITIES[tag]
    doc = f"WMH challenge white matter hyperintensities, {words}; label 2 ignored in metrics.\n\nSee :mod:`uadbench.datasets.wmh`."
    return dataset_variant(WMHDataset, f"WMH{tag}", doc, name=f"wmh-{suffix}", tag=tag, modality=modality)


WMHT1 = _variant("T1")
WMHFLAIR = _variant("FLAIR")
