"""The shift contract, checked for every registered shift with no per-shift test code.

A shift (see :mod:`uadbench.shifts.base`) takes a preprocessed volume in [0, 1] that is zero outside the
brain mask and returns a float32 image of the same shape, zero outside the brain mask; it is
deterministic in its ``rng``, never writes to its inputs, and leaves the image unchanged at the
``neutral`` severity it declares. The severities tested away from neutral are the same offsets
for every shift, so a newly registered shift is tested with no edit here.
"""

from __future__ import annotations

import numbers

import numpy as np
import pytest

from synthetic import brainlike_volumes
from uadbench.registry import SHIFTS
from uadbench.shifts.base import NO_SHIFT, apply_shift, is_acquisition

SHAPE = (24, 20, 12)  # not a cube, so a mixed-up axis shows
OFFSETS = (0.2, 0.5)  # severities tested: neutral, neutral + 0.2, neutral + 0.5


def _severities(name: str) -> list[float | None]:
    neutral = getattr(SHIFTS.get(name), "neutral", None)
    if neutral is None:
        return [None]
    return [neutral] + [neutral + d for d in OFFSETS]


ALL = SHIFTS.names()
NAMES = [n for n in ALL if not is_acquisition(n)]  # pixel shifts; acquisition shifts: tests at the end
CASES = [pytest.param(name, sev, id=f"{name}@{sev}") for name in NAMES for sev in _severities(name)]


@pytest.fixture(scope="module")
def volume():
    images, brains, _ = brainlike_volumes(1, shape=SHAPE, seed=3, lesion=True)
    image, brain = images[0], brains[0]
    assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0
    assert not image[~brain].any() and brain.any() and (~brain).any()
    for a in (image, brain):  # shared by every test: a shift writing to its inputs fails loudly
        a.setflags(write=False)
    return image, brain


def _apply(name, image, brain, severity, seed=123):
    return apply_shift(name, image, brain, severity, np.random.default_rng(seed))


def test_builtin_shifts_are_registered():
    assert {NO_SHIFT, "gamma", "bias", "noise"} <= set(NAMES)
    assert {"te", "tr", "ti", "field"} <= set(ALL) - set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shift_declares_its_neutral_severity(name):
    fn = SHIFTS.get(name)
    assert hasattr(fn, "neutral"), (
        f"shift {name!r} declares no neutral severity; decorate it with "
        "@uadbench.shifts.neutral_severity(value), the severity at which it changes nothing"
    )
    if name == NO_SHIFT:
        assert fn.neutral is None
    else:
        # apply_shift passes float(severity) to every shift but 'none'
        assert isinstance(fn.neutral, numbers.Real) and not isinstance(fn.neutral, bool), fn.neutral


@pytest.mark.parametrize("name", NAMES)
def test_identity_at_neutral_severity(name, volume):
    image, brain = volume
    neutral = SHIFTS.get(name).neutral
    out = _apply(name, image, brain, neutral)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)
    if neutral is not None:
        # and the severity does something: away from neutral the image changes
        for sev in _severities(name)[1:]:
            assert not np.array_equal(_apply(name, image, brain, sev), image), f"{name}@{sev} changed nothing"


@pytest.mark.parametrize("name, severity", CASES)
def test_same_seed_same_output(name, severity, volume):
    image, brain = volume
    first = _apply(name, image, brain, severity, seed=7)
    again = _apply(name, image.copy(), brain.copy(), severity, seed=7)
    assert first.tobytes() == again.tobytes()


@pytest.mark.parametrize("name, severity", CASES)
def test_inputs_are_not_modified(name, severity, volume):
    image, brain = volume
    img_in, brain_in = image.copy(), brain.copy()
    _apply(name, img_in, brain_in, severity)
    np.testing.assert_array_equal(img_in, image)
    np.testing.assert_array_equal(brain_in, brain)
    assert img_in.dtype == image.dtype and brain_in.dtype == brain.dtype


@pytest.mark.parametrize("name, severity", CASES)
def test_output_float32_same_shape_zero_background(name, severity, volume):
    image, brain = volume
    out = _apply(name, image, brain, severity)
    assert isinstance(out, np.ndarray)
    assert out.shape == image.shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert not out[~brain].any(), f"{name}@{severity} put signal outside the brain mask"


# -- acquisition shifts: the same subjects re-acquired (uadbench.shifts.acquisition) ----------------------
ACQUISITION = [n for n in ALL if is_acquisition(n)]


def _strong(name: str) -> float:
    """A severity well away from neutral: the end of its calibration range, or the other field."""
    fn = SHIFTS.get(name)
    return fn.calibration[1] if getattr(fn, "calibration", None) else 1.5


@pytest.fixture(scope="module")
def flair(tmp_path_factory):
    """A small FLAIR phantom split (inversion recovery, so every acquisition shift applies)."""
    from uadbench.data.dataset import create_dataset

    source = create_dataset("phantom-ms-flair", root=tmp_path_factory.mktemp("acq"), seed=0)
    source.sizes = {"val": 2, "test": 2}
    return source, source.load("val")


@pytest.mark.parametrize("name", ACQUISITION)
def test_acquisition_shift_contract(name, flair):
    from uadbench.shifts.acquisition import acquire_split

    source, original = flair
    own = source.acquire("val", source.scanner)  # re-rendering on the dataset's own scanner gives its stored images
    assert all(np.array_equal(a.image, o.image) and np.array_equal(a.brain_mask, o.brain_mask) for a, o in zip(own, original, strict=True))
    fn = SHIFTS.get(name)
    assert isinstance(fn.neutral, numbers.Real)
    same = acquire_split(source, "val", name, fn.neutral)
    strong = acquire_split(source, "val", name, _strong(name))
    again = acquire_split(source, "val", name, _strong(name))
    for o, n, s, a in zip(original, same, strong, again, strict=True):
        assert o.subject_id == n.subject_id == s.subject_id
        np.testing.assert_array_equal(n.image, o.image)  # identity at neutral
        assert s.image.tobytes() == a.image.tobytes()  # deterministic
        np.testing.assert_array_equal(s.brain_mask, o.brain_mask)  # masks untouched
        np.testing.assert_array_equal(s.lesion_mask, o.lesion_mask)
        assert not s.image[~s.brain_mask].any()  # background zero
        assert not np.array_equal(s.image, o.image), f"{name}@{_strong(name)} changed nothing"
        assert s.image.dtype == np.float32 and np.isfinite(s.image).all()


@pytest.mark.parametrize("name", ACQUISITION)
def test_acquisition_shift_refuses_images(name, volume):
    image, brain = volume
    with pytest.raises(TypeError, match="re-acquires"):
        _apply(name, image, brain, 1.0)
