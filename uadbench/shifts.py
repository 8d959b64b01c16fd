"""Registered, deterministic intensity and contrast shifts, applied to evaluation images only.

A shift is a function ``shift(image, brain_mask, severity, rng) -> image`` on a preprocessed
volume in [0, 1]. Shifts never touch masks, never reach training data, and keep the background
(outside the brain mask) at 0. ``severity`` is the shift's own parameter (documented per shift);
``rng`` is a numpy Generator seeded by the harness from the grid seed and the subject.

Every shift declares its neutral severity as the attribute ``neutral`` (set with
:func:`neutral_severity`): the severity at which it returns a preprocessed image unchanged
(``None`` for ``none``, which takes no severity). The contract tests check it for every
registered shift.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from uadbench.registry import SHIFTS, register_shift

NO_SHIFT = "none"
SHIFTS_VERSION = "1"  # bump whenever a shift's output changes (cache keys include it)


def neutral_severity(value: float | None):
    """Decorator: declare the severity at which a shift leaves a preprocessed image unchanged."""

    def mark(fn):
        fn.neutral = value
        return fn

    return mark


@register_shift("none")
@neutral_severity(None)
def no_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """No shift: the images as preprocessed (the reference condition)."""
    return image


@register_shift("gamma")
@neutral_severity(1.0)
def gamma_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Simulated contrast x**cl with cl = severity (the paper's cl in {0.3, 0.7, 1.0, 1.5, 2.0})."""
    if severity <= 0:
        raise ValueError(f"gamma severity (the exponent cl) must be > 0, got {severity}")
    out = np.power(np.clip(image, 0.0, 1.0), severity).astype(np.float32)
    out[~brain_mask] = 0.0
    return out


@register_shift("bias")
@neutral_severity(0.0)
def bias_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative bias field with peak amplitude severity (0.2 = +-20 %), then clipped to [0, 1]."""
    if severity < 0:
        raise ValueError(f"bias severity must be >= 0, got {severity}")
    coarse = rng.standard_normal((4, 4, 4))
    field = ndimage.zoom(coarse, [s / 4 for s in image.shape], order=3, mode="nearest")
    field = field / (np.abs(field).max() + 1e-8)
    out = np.clip(image * (1.0 + severity * field), 0.0, 1.0).astype(np.float32)
    out[~brain_mask] = 0.0
    return out


@register_shift("noise")
@neutral_severity(0.0)
def noise_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise of standard deviation severity (in units of the [0, 1] intensity range)."""
    if severity < 0:
        raise ValueError(f"noise severity must be >= 0, got {severity}")
    real = image + severity * rng.standard_normal(image.shape)
    imag = severity * rng.standard_normal(image.shape)
    out = np.clip(np.sqrt(real**2 + imag**2), 0.0, 1.0).astype(np.float32)
    out[~brain_mask] = 0.0
    return out


def apply_shift(name: str, image: np.ndarray, brain_mask: np.ndarray, severity: float | None, rng: np.random.Generator) -> np.ndarray:
    fn = SHIFTS.get(name)
    if name == NO_SHIFT:
        return image
    if severity is None:
        raise TypeError(f"shift {name!r} needs a severity, got None")
    return fn(image, brain_mask, float(severity), rng)
