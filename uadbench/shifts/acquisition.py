"""Acquisition shifts: the same subjects recorded with another protocol, from the phantom's physics.

A pixel-wise curve (``gamma``) only bends intensities. A change of scanner protocol moves every
tissue's contrast by its own relaxation times: lengthening TE darkens white matter faster than
CSF, shortening TR brings T1 weighting into a T2-weighted image, a shorter TI no longer nulls CSF
on FLAIR, and another field strength changes T1 and T2 themselves. These shifts re-render the
phantom's subjects (same anatomy, lesions, bias field and noise draws) with the changed protocol
(:mod:`uadbench.data.phantom.physics`); the runner then preprocesses them like any split. Masks
are the subjects' own and do not change.

    te      severity = factor on the echo time TE of the dataset's sequence (1 = as acquired)
    tr      severity = factor on the repetition time TR (1 = as acquired)
    ti      severity = factor on the inversion time TI (inversion-recovery sequences: FLAIR)
    field   severity = field strength in tesla, 1.5 or 3: the generic scanner of that field
            (its sequences, tissue relaxation times, noise and bias); neutral for the default
            3 T phantom

They apply to datasets that can re-acquire their subjects (the ``phantom-*`` datasets, which
define ``acquire(split, scanner)``); a grid that pairs them with other datasets is refused when
it is read. Train on one protocol, evaluate on another: the training split is never shifted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from uadbench.config import stable_hash
from uadbench.data.dataset import dataset_class, parse_site_selector
from uadbench.data.volume import Volume
from uadbench.errors import ConfigError
from uadbench.registry import register_shift
from uadbench.shifts.base import (
    SHIFTS_VERSION,
    acquisition_shift,
    calibration_range,
    is_acquisition,
    neutral_severity,
    severity_range,
)


def _source_scanner(dataset: Any):
    from uadbench.data.phantom import get_scanner

    if not hasattr(dataset, "acquire"):
        raise ConfigError(f"dataset {dataset.name!r} cannot re-acquire its subjects; acquisition shifts apply to phantom-* datasets")
    return get_scanner(dataset.scanner)


def _with_sequence(dataset: Any, **factors: float):
    """The dataset's scanner with its modality's sequence times multiplied by ``factors``."""
    scanner = _source_scanner(dataset)
    seq = scanner.sequence(dataset.modality)
    if "ti" in factors and seq.ti is None:
        raise ConfigError(f"shift 'ti': the {dataset.modality} sequence of {dataset.name!r} has no inversion time; "
                          f"ti applies to inversion-recovery sequences (flair)")
    changed = dataclasses.replace(seq, **{k: getattr(seq, k) * f for k, f in factors.items()})
    label = ",".join(f"{k}x{f:g}" for k, f in factors.items())
    return dataclasses.replace(scanner, name=f"{scanner.name}[{label}]", sequences={**scanner.sequences, dataset.modality: changed})


def _sequence_time_shift(time: str, high: float, stop: float, doc: str):
    """Register the shift named ``time`` (te, tr or ti): that time of the dataset's sequence
    multiplied by the severity (1 = as acquired), valid in [0.05, high], calibrated from 1 to ``stop``."""

    def shift(dataset: Any, split: str, severity: float) -> list[Volume]:
        return dataset.acquire(split, _with_sequence(dataset, **{time: severity}))

    shift.__name__ = shift.__qualname__ = f"{time}_shift"
    shift.__doc__ = doc
    register_shift(time)(acquisition_shift(neutral_severity(1.0)(severity_range(0.05, high)(calibration_range(1.0, stop)(shift)))))
    return shift


echo_time = _sequence_time_shift("te", 10.0, 0.1, "Another echo time: TE multiplied by severity (0.5 halves it), same subjects and noise draws.")
repetition_time = _sequence_time_shift("tr", 10.0, 0.1, "Another repetition time: TR multiplied by severity (shorter TR adds T1 weighting).")
inversion_time = _sequence_time_shift("ti", 3.0, 0.3, "Another inversion time (FLAIR): TI times severity; away from 1 CSF is no longer nulled.")


FIELD_SCANNERS = {1.5: "generic-1.5t", 3.0: "generic-3t"}


@register_shift("field")
@acquisition_shift
@neutral_severity(3.0)
@severity_range(choices=(1.5, 3.0))
def field_strength(dataset: Any, split: str, severity: float) -> list[Volume]:
    """The subjects on the generic scanner of a field strength of 1.5 or 3 T (its sequences, its
    tissues' relaxation times, its noise and bias field)."""
    from uadbench.data.phantom import get_scanner

    _source_scanner(dataset)
    if severity not in FIELD_SCANNERS:
        raise ConfigError(f"shift 'field': severity must be a field strength of {', '.join(f'{f:g}' for f in FIELD_SCANNERS)} T, got {severity:g}")
    return dataset.acquire(split, get_scanner(FIELD_SCANNERS[severity]))


def acquire_split(source: Any, split: str, shift: str, severity: float) -> list[Volume]:
    """The raw volumes of ``split`` of dataset ``source`` under acquisition shift ``shift``; the
    dataset's own volumes at the neutral severity (the same subjects either way)."""
    from uadbench.registry import SHIFTS
    from uadbench.shifts.base import check_severity

    fn = SHIFTS.get(shift)
    if not is_acquisition(shift):
        raise ConfigError(f"shift {shift!r} is not an acquisition shift")
    severity = check_severity(shift, severity)
    if severity == fn.neutral and (shift != "field" or _source_scanner(source).field_strength == severity):
        return source.load(split)
    return fn(source, split, severity)


def check_datasets(shift: str, datasets: list[str], where: str) -> None:
    """Refuse an acquisition shift on datasets that cannot re-acquire their subjects (and ``ti``
    on datasets without an inversion-recovery sequence), when the grid is read."""
    for name in datasets:
        cls = dataset_class(name)
        if not hasattr(cls, "acquire") or parse_site_selector(name)[1]:
            raise ConfigError(f"{where}: shift {shift!r} re-acquires subjects, which dataset {name!r} cannot; "
                              f"acquisition shifts ({', '.join(ACQUISITION_SHIFTS)}) apply to phantom-* datasets")
        if shift == "ti" and getattr(cls, "modality", "") != "flair":
            raise ConfigError(f"{where}: shift 'ti' changes the inversion time, which dataset {name!r} "
                              f"({getattr(cls, 'modality', '?')}) does not have; use it with phantom-*-flair datasets")


ACQUISITION_SHIFTS = ("te", "tr", "ti", "field")


def acquired_split_key(base_key: str, shift: Any) -> str:
    """Key of a preprocessed split under acquisition shift ``shift``: the unshifted split's key,
    the shift and the shifts version."""
    return stable_hash({"split": base_key, "shift": [shift.name, shift.severity], "shifts": SHIFTS_VERSION}, 16)
