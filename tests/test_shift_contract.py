"""The shift contract, checked for every registered shift with no per-shift test code, by the check
a plugin author runs (:func:`uadbench.testing.check_shift`), and that check's own teeth.

A shift (see :mod:`uadbench.shifts.base`) takes a preprocessed volume in [0, 1] that is zero outside
the brain mask and returns a float32 image of the same shape, zero outside the brain mask; it is
deterministic in its ``rng``, never writes to its inputs, leaves the image unchanged at the
``neutral`` severity it declares and refuses severities outside the range it declares. Acquisition
shifts re-acquire a dataset's subjects instead; they are checked on a small FLAIR phantom.
"""

from __future__ import annotations

import numpy as np
import pytest

from uadbench.data.dataset import create_dataset
from uadbench.registry import SHIFTS
from uadbench.shifts.base import NO_SHIFT, is_acquisition, neutral_severity, severity_range
from uadbench.testing import check_shift

ALL = SHIFTS.names()
NAMES = [n for n in ALL if not is_acquisition(n)]  # pixel shifts
ACQUISITION = [n for n in ALL if is_acquisition(n)]


def test_builtin_shifts_are_registered():
    assert {NO_SHIFT, "gamma", "bias", "noise"} <= set(NAMES)
    assert {"te", "tr", "ti", "field"} <= set(ACQUISITION)


@pytest.mark.parametrize("name", NAMES)
def test_shift_contract(name):
    check_shift(name)


@pytest.fixture(scope="module")
def flair(tmp_path_factory):
    """A small FLAIR phantom split (inversion recovery, so every acquisition shift applies)."""
    return create_dataset("phantom-ms-flair", root=tmp_path_factory.mktemp("acq"), seed=0, sizes={"val": 2, "test": 2})


@pytest.mark.parametrize("name", ACQUISITION)
def test_acquisition_shift_contract(name, flair):
    check_shift(name, dataset=flair)


# -- the check catches what it says it catches -------------------------------------------------------------------
@neutral_severity(0.0)
@severity_range(0.0, None)
def offset(image, brain_mask, severity, rng):
    """Adds severity x a random number to the brain."""
    out = (image + severity * rng.random()).astype(np.float32)
    out[~brain_mask] = 0
    return out


def _variant(body, neutral=0.0, low=0.0, declare_neutral=True):
    """A fresh shift function calling ``body``, with the declarations asked for."""

    def fn(image, brain_mask, severity, rng):
        return body(image, brain_mask, severity, rng)

    fn.__name__ = body.__name__
    fn = severity_range(low, None)(fn) if low is not None else fn
    return neutral_severity(neutral)(fn) if declare_neutral else fn


def _writes_input(image, brain_mask, severity, rng):
    image *= 1.0
    image[brain_mask] += severity
    return image.astype(np.float32)


def _unseeded(image, brain_mask, severity, rng):
    return offset.__wrapped__(image, brain_mask, severity, np.random.default_rng())


def _leaks_background(image, brain_mask, severity, rng):
    return (image + severity).astype(np.float32)


def _float64(image, brain_mask, severity, rng):
    return offset.__wrapped__(image, brain_mask, severity, rng).astype(np.float64)


def _not_neutral(image, brain_mask, severity, rng):
    return offset.__wrapped__(image, brain_mask, severity + 0.1, rng)


def _does_nothing(image, brain_mask, severity, rng):
    return image.copy()


def test_a_good_shift_passes():
    check_shift(offset)


@pytest.mark.parametrize("fn, message", [
    (_variant(_writes_input), "wrote to its input image or brain mask"),
    (_variant(_unseeded), "gave another image for the same rng seed"),
    (_variant(_leaks_background), "put signal outside the brain mask"),
    (_variant(_float64), "returned float64 \\(24, 20, 12\\); expected a float32 array"),
    (_variant(_not_neutral), "at severity 0.0 \\(its neutral severity\\) changed the image"),
    (_variant(_does_nothing), "at severity 0.2 changed nothing"),
    (_variant(offset.__wrapped__, low=None), None),  # no declared range: any finite severity is accepted
    (_variant(offset.__wrapped__, declare_neutral=False), "declares no neutral severity"),
    (_variant(offset.__wrapped__, neutral=-1.0), "its neutral severity -1.0 is outside its declared range \\(a finite number >= 0\\)"),
])
def test_check_shift_catches_a_broken_rule(fn, message):
    if message is None:
        check_shift(fn)
        return
    with pytest.raises(AssertionError, match=message):
        check_shift(fn)


def test_a_range_that_accepts_too_much_is_caught():
    def lenient(image, brain_mask, severity, rng):
        return offset.__wrapped__(image, brain_mask, severity, rng)

    lenient.neutral = 0.0
    lenient.valid_severities = offset.valid_severities  # declared, but not enforced by severity_range
    with pytest.raises(AssertionError, match="accepted severity nan outside its declared range"):
        check_shift(lenient)


def test_severities_are_chosen_inside_the_declared_range():
    @neutral_severity(1.0)
    @severity_range(0.0, 1.0)
    def fade(image, brain_mask, severity, rng):
        return (image * severity).astype(np.float32)

    check_shift(fade)  # neutral + 0.2 lies outside [0, 1]: 0.8 and 0.5 are tested instead
    with pytest.raises(AssertionError, match="severity 1.5 is outside its declared range"):
        check_shift(fade, severities=[1.5])
