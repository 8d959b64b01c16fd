"""Digital brain phantom datasets: healthy and lesion cohorts in T1w, T2w and FLAIR.

Registered names (``<cohort>`` x ``<modality>``)::

    phantom-healthy-{t1w,t2w,flair}   splits train/val/test, no lesions (lesion_mask is None)
    phantom-tumour-{t1w,t2w,flair}    splits val/test, annotated (glioma-like tumours)
    phantom-ms-{t1w,t2w,flair}        splits val/test, annotated (multiple-sclerosis lesions)
    phantom-stroke-{t1w,t2w,flair}    splits val/test, annotated (chronic cortical strokes)

The data are generated on first use by :mod:`uadbench.data.phantom` (MNI152 anatomy, spin-echo
and inversion-recovery physics, bias field, Rician noise) and written once as NIfTI under
``<root>/phantom/v<version>/seed<seed>/``; later calls and other processes reuse them. The
three modalities of a cohort hold the same subjects. Volumes come at the phantom's native
2 mm grid (99x117x95, MNI152 orientation), skull-stripped, with brain and lesion masks.

Split sizes default to healthy 24/6/6 (train/val/test) and 10/6 (test/val) for lesion cohorts;
pass ``sizes={"test": 4}`` to the constructor or set ``UADBENCH_PHANTOM_SIZES`` (for example
``"train=8,val=2,test=2"`` or ``"healthy.train=8,tumour.test=4"``). ``scanner`` picks a named
acquisition protocol (``generic-3t``, the default, or ``generic-1.5t``); it is each subject's
``site`` in the result records. Phantom ids are synthetic: records keep them (no pseudonyms).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from uadbench.data import phantom as ph
from uadbench.data.dataset import DatasetSource, dataset_variant
from uadbench.data.nifti import read_manifest, read_subject
from uadbench.data.volume import Volume

_MODALITY_NAMES = {"t1w": "T1-weighted", "t2w": "T2-weighted", "flair": "FLAIR"}


class PhantomDataset(DatasetSource):
    """Base class of the phantom datasets; subclasses fix ``cohort`` and ``modality``."""

    cohort: str = "healthy"
    synthetic_ids = True  # generated subjects: their ids identify nobody (records keep them)

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        seed: int = 0,
        *,
        sizes: Mapping[str, int] | None = None,
        scanner: str = ph.DEFAULT_SCANNER,
    ) -> None:
        super().__init__(root=root, seed=seed)
        self.scanner = ph.get_scanner(scanner).name
        self.sizes = ph.resolve_sizes(self.cohort, sizes)
        self._verified = False

    # -- splits -------------------------------------------------------------------------------
    def subjects(self, split: str) -> list[str]:
        self.check_split(split)
        return [ph.subject_id(self.cohort, split, i) for i in range(self.sizes[split])]

    def subject_info(self, split: str) -> dict[str, dict[str, str]]:
        """Each subject's site: the scanner its cohort was rendered on (one per dataset)."""
        return {sid: {"site": self.scanner} for sid in self.subjects(split)}

    @property
    def directory(self):
        """Where this dataset's NIfTI files live (they may not exist yet)."""
        name = ph.cohort_dir_name(self.cohort, self.modality, self.sizes, self.scanner)
        return ph.phantom_root(self.root, self.seed) / name

    def prepare(self):
        """Generate the cohort (all three modalities) unless it is on disk; returns the folder."""
        dirs = ph.ensure_cohort(
            self.root, self.cohort, seed=self.seed, sizes=self.sizes, scanner=self.scanner
        )
        directory = dirs[self.modality]
        if not self._verified:
            ph.verify_manifest(directory)
            self._verified = True
        return directory

    def load(self, split: str) -> list[Volume]:
        self.check_split(split)
        directory = self.prepare()
        listed = read_manifest(directory)["splits"].get(split, [])
        volumes = []
        for sid in self.subjects(split):
            if sid not in listed:  # pragma: no cover - only after a manual edit of the folder
                from uadbench.errors import DataError

                raise DataError(f"{directory}: subject {sid} is missing; delete the folder to regenerate it")
            vol = read_subject(directory, split, sid)
            vol.meta.update(
                {
                    "dataset": self.name,
                    "cohort": self.cohort,
                    "modality": self.modality,
                    "scanner": self.scanner,
                    "lesion_type": ph.COHORTS[self.cohort].lesion,
                    "split": split,
                }
            )
            volumes.append(vol)
        return volumes

    def acquire(self, split: str, scanner: str | ph.Scanner) -> list[Volume]:
        """The subjects of ``split`` recorded on ``scanner`` instead: the same anatomy, lesions,
        bias field and noise draws, another protocol (acquisition shifts, :mod:`uadbench.shifts.acquisition`).
        Nothing is written; on the dataset's own scanner this gives exactly :meth:`load`'s images."""
        self.check_split(split)
        scanner = ph.get_scanner(scanner)
        lesion = ph.COHORTS[self.cohort].lesion is not None
        volumes = []
        for index in range(self.sizes[split]):
            subject = ph.generate_subject(self.seed, self.cohort, split, index, field_strength=scanner.field_strength)
            image = ph.render(subject, self.modality, scanner)
            vol = ph.to_volume(subject, image, modality=self.modality, scanner=scanner.name, lesion=lesion)
            vol.meta.update({"dataset": self.name, "cohort": self.cohort, "split": split})
            volumes.append(vol)
        return volumes

    def fingerprint(self) -> str:
        sizes = ",".join(f"{k}={v}" for k, v in self.sizes.items())
        return (
            f"{self.name}:phantom-v{ph.PHANTOM_VERSION}:seed={self.seed}:"
            f"scanner={self.scanner}:sizes={sizes}"
        )


def _variant(cohort: str, modality: str) -> type[PhantomDataset]:
    spec = ph.COHORTS[cohort]
    lesion = spec.lesion is not None
    doc = (
        f"Digital brain phantom, {spec.description}, {_MODALITY_NAMES[modality]} "
        f"(MNI152 anatomy, simulated MR physics).\n\n"
        f"{ph.COHORT_DETAILS[cohort]} Splits: {', '.join(spec.splits)}"
        + (" (all with lesion masks)." if lesion else " (no lesions; lesion_mask is None).")
        + " See :mod:`uadbench.datasets.phantom`."
    )
    return dataset_variant(PhantomDataset, f"Phantom{cohort.capitalize()}{modality.upper()}", doc, name=f"phantom-{cohort}-{modality}",
                           cohort=cohort, modality=modality, splits=spec.splits, lesion_splits=spec.splits if lesion else ())


for _cohort in ph.COHORTS:
    for _modality in ph.MODALITIES:
        _cls = _variant(_cohort, _modality)
        globals()[_cls.__name__] = _cls
del _cohort, _modality, _cls
