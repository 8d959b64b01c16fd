"""check_shift: the shift contract of :mod:`uadbench.shifts.base` (see :mod:`uadbench.testing`)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from uadbench.testing.base import brainlike_volumes, fail

if TYPE_CHECKING:
    from uadbench.data.dataset import DatasetSource


#: Severities tested besides the neutral one: neutral + each offset (or neutral - offset where
#: only that lies in the declared range).
SHIFT_OFFSETS = (0.2, 0.5)


def _shift(shift: str | Callable[..., Any]) -> tuple[Any, str]:
    from uadbench.registry import SHIFTS

    fn = SHIFTS.get(shift) if isinstance(shift, str) else shift
    if not callable(fn):
        raise fail(f"{shift!r} is not a shift; pass a registered shift name or the shift function")
    return fn, shift if isinstance(shift, str) else (getattr(fn, "registered_name", "") or getattr(fn, "__name__", repr(fn)))


def _shift_severities(fn: Any, name: str, severities: Sequence[float] | None) -> list[float]:
    neutral = fn.neutral
    valid = getattr(fn, "valid_severities", None)
    if severities is None:
        ups = [neutral + d for d in SHIFT_OFFSETS]
        downs = [neutral - d for d in SHIFT_OFFSETS]
        if valid is None or all(s in valid for s in ups):
            severities = ups
        elif not (severities := [s for s in ups + downs if s in valid][:2]):
            raise fail(f"shift {name!r}: no severity neutral +- {SHIFT_OFFSETS} lies in its range ({valid.describe()}); pass severities=")
    for s in severities:
        if valid is not None and s not in valid:
            raise fail(f"shift {name!r}: severity {s!r} is outside its declared range ({valid.describe()})")
    return [float(s) for s in severities]


def _check_neutral(fn: Any, name: str) -> None:
    if not hasattr(fn, "neutral"):
        raise fail(f"shift {name!r} declares no neutral severity; decorate it with @uadbench.shifts.neutral_severity(value), "
                   "the severity at which it changes nothing")
    neutral = fn.neutral
    valid = getattr(fn, "valid_severities", None)
    if neutral is None:
        if name != "none":
            raise fail(f"shift {name!r}: neutral severity None is for 'none' only; declare the number at which it changes nothing")
        return
    if not isinstance(neutral, (int, float)) or isinstance(neutral, bool) or not math.isfinite(neutral):
        raise fail(f"shift {name!r}: neutral severity must be a finite number, got {neutral!r}")
    if valid is not None and neutral not in valid:
        raise fail(f"shift {name!r}: its neutral severity {neutral!r} is outside its declared range ({valid.describe()})")


def _outside(valid: Any) -> list[float]:
    """Severities just outside a declared range (and NaN)."""
    out = [math.nan, math.inf]
    if valid.low is not None:
        out.append(valid.low - 1.0 if valid.low_inclusive else valid.low)
    if valid.high is not None:
        out.append(valid.high + 1.0 if valid.high_inclusive else valid.high)
    if valid.choices is not None:
        out.append(max(valid.choices) + 1.0)
    return out


def _shift_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    images, brains, _ = brainlike_volumes(1, shape=shape, seed=3, lesion=True)
    image, brain = images[0], brains[0]
    for a in (image, brain):  # a shift writing to its inputs fails loudly
        a.setflags(write=False)
    return image, brain


def check_shift(shift: str | Callable[..., Any], *, severities: Sequence[float] | None = None, dataset: DatasetSource | None = None,
                split: str = "val", shape: tuple[int, int, int] = (24, 20, 12)) -> None:
    """Check a shift (a registered name or the shift function) against the contract of
    :mod:`uadbench.shifts.base`, at its neutral severity and at ``severities`` (default: neutral +
    0.2 and + 0.5), on a synthetic volume of ``shape`` (not a cube, so a mixed-up axis shows).

    An acquisition shift (registered, see :func:`uadbench.shifts.base.acquisition_shift`) is
    checked on ``dataset``'s ``split`` (default: a small ``phantom-ms-flair`` in a temporary
    folder) at its neutral severity and its strongest calibrated one."""
    fn, name = _shift(shift)
    _check_neutral(fn, name)
    if getattr(fn, "acquisition", False):
        return _check_acquisition(fn, name, dataset, split)
    image, brain = _shift_volume(shape)
    neutral = fn.neutral
    tested: list[float | None] = [neutral]
    if neutral is not None:
        tested += _shift_severities(fn, name, severities)
    for severity in tested:
        at = f"shift {name!r} at severity {severity!r}"
        img_in, brain_in = image.copy(), brain.copy()
        out = fn(img_in, brain_in, severity, np.random.default_rng(7))
        if not np.array_equal(img_in, image) or not np.array_equal(brain_in, brain):
            raise fail(f"{at} wrote to its input image or brain mask; shifts return a new image and never touch masks")
        if not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.float32:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise fail(f"{at} returned {got}; expected a float32 array of the input's shape {image.shape}")
        if not np.isfinite(out).all():
            raise fail(f"{at} returned NaN or infinite values")
        if out[~brain].any():
            raise fail(f"{at} put signal outside the brain mask; keep the background at 0")
        again = fn(image.copy(), brain.copy(), severity, np.random.default_rng(7))
        if out.tobytes() != again.tobytes():
            raise fail(f"{at} gave another image for the same rng seed; draw every random number from the rng argument")
        if severity == neutral and not np.array_equal(out, image):
            raise fail(f"{at} (its neutral severity) changed the image; at neutral a shift returns the image unchanged")
        if severity != neutral and np.array_equal(out, image):
            raise fail(f"{at} changed nothing; away from its neutral severity a shift changes the image")
    _check_refusals(fn, name, lambda s: fn(image, brain, s, np.random.default_rng(0)))


def _check_refusals(fn: Any, name: str, call: Callable[[float], Any]) -> None:
    valid = getattr(fn, "valid_severities", None)
    if valid is None:
        return
    for bad in _outside(valid):
        try:
            call(bad)
        except ValueError:
            continue
        raise fail(f"shift {name!r} accepted severity {bad!r} outside its declared range ({valid.describe()}); "
                   "declare the range with @uadbench.shifts.severity_range, which refuses the rest")


def _check_acquisition(fn: Any, name: str, dataset: Any, split: str) -> None:
    from uadbench.registry import SHIFTS
    from uadbench.shifts.acquisition import acquire_split
    from uadbench.shifts.base import apply_shift

    if not isinstance(getattr(fn, "registered_name", None), str) or SHIFTS.get(fn.registered_name) is not fn:
        raise fail(f"acquisition shift {name!r} is not registered; register it (@uadbench.register_shift) before checking it")
    name = fn.registered_name
    if dataset is None:
        from uadbench.data.dataset import create_dataset

        with tempfile.TemporaryDirectory(prefix="uadbench-check-") as root:
            source = create_dataset("phantom-ms-flair", root=root, seed=0, sizes={"val": 2, "test": 2})
            return _check_acquisition(fn, name, source, split)
    original = dataset.load(split)
    own = dataset.acquire(split, dataset.scanner)
    if not all(np.array_equal(a.image, o.image) and np.array_equal(a.brain_mask, o.brain_mask) for a, o in zip(own, original, strict=True)):
        raise fail(f"dataset {dataset.name!r}: re-acquired on its own scanner, {split!r} differs from its stored images")
    calibration = getattr(fn, "calibration", None)
    strong = calibration[1] if calibration else 1.5
    same = acquire_split(dataset, split, name, fn.neutral)
    shifted = acquire_split(dataset, split, name, strong)
    again = acquire_split(dataset, split, name, strong)
    for o, n, s, a in zip(original, same, shifted, again, strict=True):
        at = f"acquisition shift {name!r} on {dataset.name}/{split}/{o.subject_id}"
        if not o.subject_id == n.subject_id == s.subject_id:
            raise fail(f"{at}: the subjects changed; an acquisition shift re-acquires the same subjects in order")
        if not np.array_equal(n.image, o.image):
            raise fail(f"{at}: at its neutral severity the image differs from the dataset's own")
        if s.image.tobytes() != a.image.tobytes():
            raise fail(f"{at} at {strong}: two calls gave other images")
        if not np.array_equal(s.brain_mask, o.brain_mask) or not np.array_equal(np.asarray(s.lesion_mask), np.asarray(o.lesion_mask)):
            raise fail(f"{at} at {strong}: the brain or lesion mask changed; shifts touch images only")
        if s.image.dtype != np.float32 or not np.isfinite(s.image).all() or s.image[~s.brain_mask].any():
            raise fail(f"{at} at {strong}: expected a finite float32 image, zero outside the brain mask")
        if np.array_equal(s.image, o.image):
            raise fail(f"{at} at {strong} changed nothing")
    image, brain = _shift_volume((8, 8, 4))
    try:
        apply_shift(name, image, brain, 1.0, np.random.default_rng(0))
    except TypeError as exc:
        if "re-acquires" not in str(exc):
            raise fail(f"apply_shift refused acquisition shift {name!r} with another message: {exc}") from exc
    else:
        raise fail(f"apply_shift applied acquisition shift {name!r} to an image; it must refuse (it re-acquires whole subjects)")
    _check_refusals(fn, name, lambda s: fn(dataset, split, s))
