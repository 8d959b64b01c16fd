"""Registered, deterministic intensity and contrast shifts, applied to evaluation images only.

A shift is a function ``shift(image, brain_mask, severity, rng) -> image`` on a preprocessed
volume in [0, 1]. Shifts never touch masks, never reach training data, and keep the background
(outside the brain mask) at 0. ``severity`` is the shift's own parameter (documented per shift);
``rng`` is a numpy Generator seeded by the harness from the grid seed and the subject.

Every shift declares its neutral severity as the attribute ``neutral`` (set with
:func:`neutral_severity`): the severity at which it returns a preprocessed image unchanged
(``None`` for ``none``, which takes no severity). The contract tests check it for every
registered shift. A shift also declares the severities it accepts with :func:`severity_range`
(the attribute ``valid_severities``, a :class:`SeverityRange`); a grid is checked against it when
it is read (:func:`check_severity`), so a bad severity never waits until after training.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from uadbench.config import stable_hash
from uadbench.errors import ConfigError
from uadbench.registry import SHIFTS, register_shift

NO_SHIFT = "none"
SHIFTS_VERSION = "2"  # bump whenever a shift's output changes (cache keys include it); 2: draws no longer depend on the severity


def neutral_severity(value: float | None):
    """Decorator: declare the severity at which a shift leaves a preprocessed image unchanged."""

    def mark(fn):
        fn.neutral = value
        return fn

    return mark


@dataclass(frozen=True)
class SeverityRange:
    """The severities a shift accepts: finite numbers between ``low`` and ``high`` (None: unbounded)."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[float, ...] | None = None  # only these values (a discrete setting such as a field strength)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        if self.choices is not None and float(value) not in self.choices:
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        if self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)):
            return False
        return True

    def describe(self) -> str:
        """'a finite number > 0', 'a finite number in [0, 1]', ..."""
        if self.choices is not None:
            return f"one of {', '.join(f'{c:g}' for c in self.choices)}"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"a finite number in {'[' if self.low_inclusive else '('}{lo:g}, {hi:g}{']' if self.high_inclusive else ')'}"
        if lo is not None:
            return f"a finite number {'>=' if self.low_inclusive else '>'} {lo:g}"
        if hi is not None:
            return f"a finite number {'<=' if self.high_inclusive else '<'} {hi:g}"
        return "a finite number"


ANY_FINITE = SeverityRange()


def severity_range(low: float | None = None, high: float | None = None, *, low_inclusive: bool = True, high_inclusive: bool = True,
                   choices: tuple[float, ...] | None = None):
    """Decorator: declare the severities a shift accepts (finite, within [low, high] by default;
    only ``choices`` when given). The shift refuses any other severity with a ValueError, also when
    called directly; a grid is checked against the declaration when it is read (:func:`check_severity`)."""
    valid = SeverityRange(low, high, low_inclusive, high_inclusive, choices)

    def mark(fn):
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            severity = kwargs["severity"] if "severity" in kwargs else args[2]  # (image, mask, severity, rng) or (dataset, split, severity)
            if severity not in valid:
                raise ValueError(f"{fn.__name__}: severity must be {valid.describe()}, got {severity!r}")
            return fn(*args, **kwargs)

        checked.valid_severities = valid
        return checked

    return mark


def calibration_range(start: float, stop: float):
    """Decorator: the severities searched when calibrating a shift on the common similarity scale
    (:mod:`uadbench.shifts.calibration`): from ``start`` (its neutral severity, similarity 1) towards
    ``stop``, along which the shift grows monotonically stronger."""

    def mark(fn):
        fn.calibration = (float(start), float(stop))
        return fn

    return mark


def acquisition_shift(fn):
    """Decorator: the shift re-acquires the subjects instead of transforming a preprocessed image.

    Such a shift is called as ``shift(dataset, split, severity) -> list[Volume]`` on the dataset
    source and returns the split's raw volumes as the other acquisition would have recorded them
    (same subjects, same masks); the runner preprocesses them like any split. ``apply_shift``
    refuses it."""
    fn.acquisition = True
    return fn


def is_acquisition(name: str) -> bool:
    return bool(getattr(SHIFTS.get(name), "acquisition", False))


def check_severity(name: str, severity: object) -> float:
    """``severity`` as a float if shift ``name`` accepts it; a ConfigError naming the valid range if not.

    A shift that declares no range accepts any finite number."""
    fn = SHIFTS.get(name)
    valid: SeverityRange = getattr(fn, "valid_severities", ANY_FINITE)
    if severity not in valid:
        neutral = getattr(fn, "neutral", None)
        hint = f" ({neutral:g} leaves the image unchanged)" if isinstance(neutral, numbers.Real) else ""
        raise ConfigError(f"shift {name!r}: severity must be {valid.describe()}, got {severity!r}{hint}")
    return float(severity)  # type: ignore[arg-type]


@register_shift("none")
@neutral_severity(None)
def no_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """No shift: the images as preprocessed (the reference condition)."""
    return image


@register_shift("gamma")
@neutral_severity(1.0)
@severity_range(0.0, None, low_inclusive=False)
@calibration_range(1.0, 0.05)
def gamma_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Simulated contrast x**cl with cl = severity (the paper's cl in {0.3, 0.7, 1.0, 1.5, 2.0})."""
    out = np.power(np.clip(image, 0.0, 1.0), severity).astype(np.float32)
    out[~brain_mask] = 0.0
    return out


@register_shift("bias")
@neutral_severity(0.0)
@severity_range(0.0, None)
@calibration_range(0.0, 8.0)
def bias_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative bias field with peak amplitude severity (0.2 = +-20 %), then clipped to [0, 1]."""
    coarse = rng.standard_normal((4, 4, 4))
    field = ndimage.zoom(coarse, [s / 4 for s in image.shape], order=3, mode="nearest")
    field = field / (np.abs(field).max() + 1e-8)
    out = np.clip(image * (1.0 + severity * field), 0.0, 1.0).astype(np.float32)
    out[~brain_mask] = 0.0
    return out


@register_shift("noise")
@neutral_severity(0.0)
@severity_range(0.0, None)
@calibration_range(0.0, 0.5)
def noise_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise of standard deviation severity (in units of the [0, 1] intensity range)."""
    real = image + severity * rng.standard_normal(image.shape)
    imag = severity * rng.standard_normal(image.shape)
    out = np.clip(np.sqrt(real**2 + imag**2), 0.0, 1.0).astype(np.float32)
    out[~brain_mask] = 0.0
    return out


def apply_shift(name: str, image: np.ndarray, brain_mask: np.ndarray, severity: float | None, rng: np.random.Generator) -> np.ndarray:
    fn = SHIFTS.get(name)
    if name == NO_SHIFT:
        return image
    if getattr(fn, "acquisition", False):
        raise TypeError(f"shift {name!r} re-acquires whole subjects; apply it with uadbench.shifts.acquisition.acquire_split")
    if severity is None:
        raise TypeError(f"shift {name!r} needs a severity, got None")
    return fn(image, brain_mask, check_severity(name, severity), rng)


def subject_seed(*parts: Any) -> int:
    """A 32-bit seed from a stable hash of ``parts`` (the grid seed, the subject id, ...)."""
    return int(stable_hash(list(parts), length=8), 16)


def shifted_image(volume: Any, shift_name: str, severity: float | None, seed: int) -> np.ndarray:
    """``volume``'s image under the shift, with the subject's own deterministic randomness: the
    same draws at every severity (one bias field, one noise pattern per subject, scaled by the
    severity), so a stronger severity is the same artefact, stronger."""
    rng = np.random.default_rng(subject_seed("shift", shift_name, seed, volume.subject_id))
    return apply_shift(shift_name, volume.image, volume.brain_mask, severity, rng)
