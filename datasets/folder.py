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
fingerprinted like the built-in datasets (:class:`uadbench.data.scans.FileDataset`); its split
CSVs and checksums go to the user cache, never beside the scans. A card that cannot be read is
refused with its reason (``card 'x' (path) refused: ...``), which ``run``, ``prepare`` and
``list`` print where its name is used; the other cards still register.

``uadbench prepare <card>`` prepares the scans under ``root`` (skull-strip, register, N4, as a
``[prepare]`` table or the flags say) into the card's ``prepared`` folder, which the card then
reads::

    prepared = "/data/mslub-prepared"
    [prepare]
    skull_strip = "none"
    register = "affine"
    bias = "none"
"""

from __future__ import annotations

from uadbench.data.cards import CardDataset, DatasetCard, read_card, register_cards, register_cards_from_env

__all__ = ["CardDataset", "DatasetCard", "read_card", "register_cards"]

register_cards_from_env()
