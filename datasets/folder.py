"""Folder datasets: any folder of NIfTI scans, registered by a TOML card (no code).

A card names the dataset, its root folder, glob patterns for the image, brain mask and lesion
mask of each subject (``{subject}`` marks the subject id), the modality, whether the cohort is
healthy or annotated, and optionally split sizes. The card format, the pattern rules and the
split defaults are documented in :mod:`uadbench.data.cards`; an example over the MSLUB release::

    name = "my-mslub-t2"
    root = "/data/mslub"
    modality = "t2w"
    cohort = "lesion"
    image = "{subject}_MNI_T2.nii.gz"
    brain_mask = "nonzero"                      # skull-stripped: brain = image != 0
    lesion_mask = "{subject}_MNI_GOLD_STANDARD.nii.gz"

Cards register under their ``name`` when this module is imported (the dataset registry imports
it through its entry point): every ``*.toml`` in the folders listed in ``$UADBENCH_CARDS``
(colon-separated; a ``.toml`` file may be listed too). ``uadbench list datasets --cards DIR``
and :func:`uadbench.data.cards.register_cards` add more. A card is read, split, checked and
fingerprinted like the built-in datasets (:class:`uadbench.data.scans.FileDataset`).
"""

from __future__ import annotations

from uadbench.data.cards import CardDataset, DatasetCard, read_card, register_cards, register_cards_from_env

__all__ = ["CardDataset", "DatasetCard", "read_card", "register_cards"]

register_cards_from_env()
