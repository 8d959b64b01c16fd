"""MRI artefact shifts built on MONAI transforms, applied to evaluation images only.

Each shift follows the contract of :mod:`uadbench.shifts.base` (``shift(image, brain_mask, severity,
rng)``): it is computed on the preprocessed volume (X, Y, Z in [0, 1], zero outside the brain),
then the background is re-zeroed and the result clipped to [0, 1]. It never writes to its inputs,
draws every random parameter from ``rng`` (a MONAI ``Rand*`` transform is seeded with
``set_random_state(seed=int(rng.integers(2**31)))``, never from a global state) and returns the
image unchanged at its neutral severity. Like every shift it reaches evaluation images only,
never training data. MONAI arrays are channel-first: a volume is one channel (1, X, Y, Z) unless
a shift works per axial slice (the last axis), when the slices are the channels (Z, X, Y).

``gibbs``
    Gibbs ringing from truncated k-space (``GibbsNoise``), per axial slice (2D k-space, as in a
    multi-slice acquisition): each slice's k-space is cut to a disc of radius (1 - severity) x
    max(X, Y) x sqrt(2) / 2 around its centre. severity = MONAI's alpha in [0, 1], neutral 0;
    calibrated over [0, 0.98]. Small alphas change nothing until the disc cuts the corners of
    k-space (alpha ~ 0.02 on a square slice); near alpha 1 (above 1 - 1 / max(X, Y) for even
    sizes) no sample is left and the image is blank. Per slice because MONAI's radius is the 2D one: in 3D the
    disc misses k-space corners even at alpha 0, so 3D GibbsNoise(0) is not the identity.
``kspace-spike``
    A spike (herringbone) artefact: one corrupted k-space sample of a 3D acquisition
    (``KSpaceSpikeNoise``), at a position drawn from ``rng`` between 1/8 and 3/8 of the sampling
    rate from the k-space centre along every axis (random signs). The sample's magnitude grows
    by severity x N x (mean brain intensity) (N: the number of voxels; MONAI's ``k_intensity``
    is the log of the new magnitude, the phase is kept), which adds stripes (a 3D plane wave)
    of peak amplitude severity x (mean brain intensity) before clipping. severity >= 0 = the
    stripe amplitude in units of the mean brain intensity, neutral 0; calibrated over [0, 1.5].
``bias-field``
    Smooth multiplicative bias field (``RandBiasField``, degree 3): the image times exp(f), f a
    sum of the 20 products of Legendre polynomials of total degree <= 3 (constant term
    included) with coefficients drawn uniformly in [-severity, severity]. severity >= 0 = the
    largest coefficient of the log field, neutral 0; calibrated over [0, 3].
``rician``
    Rician noise (``RandRicianNoise``): the magnitude of the image plus complex Gaussian noise.
    severity >= 0 = the noise's standard deviation in units of the [0, 1] intensity range,
    neutral 0; calibrated over [0, 0.5].
``smooth-contrast``
    Smoothly varying contrast (``RandSmoothFieldAdjustContrast``): each voxel raised to a power
    gamma(x) (relative to the image maximum), a trilinear field through a 4 x 4 x 4 grid of
    exponents drawn uniformly in [1 / (1 + severity), 1 + severity]. severity >= 0 = how far
    the local contrast exponent may go from 1 (up to a factor 1 + severity either way),
    neutral 0; calibrated over [0, 9].
``histogram-shift``
    A nonlinear intensity remapping (``RandHistogramShift``, a random monotone piecewise-linear
    curve through 10 control points spanning the image's range), blended in:
    out = (1 - severity) x image + severity x remapped. severity in [0, 1] = the fraction of
    the remapping applied, neutral 0; calibrated over [0, 1]. The full remapping is mild
    (whole-volume SSIM about 0.93 to 0.99), so this shift does not reach SSIM 0.90 or 0.80.
``low-resolution``
    Acquisition at a lower resolution (``RandSimulateLowResolution``): the volume is averaged
    down to round(n / severity) voxels along every axis (area averaging: the partial-volume
    effect of larger voxels), then trilinearly resampled to the original grid. severity >= 1 =
    the downsampling factor, neutral 1; calibrated over [1, 8]. The resampling smooths as soon
    as one axis loses a voxel, so the similarity jumps at the first change (SSIM about 0.9 on
    the ``cpu`` grid), and it is monotone in the severity only up to the rounding of the sizes.

Apart from ``low-resolution``'s rounding, each shift grows monotonically stronger along its
calibration range for a fixed ``rng`` (the random draws do not depend on the severity).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uadbench.registry import register_shift
from uadbench.shifts.base import calibration_range, neutral_severity, severity_range

#: Degree of the Legendre polynomials of the ``bias-field`` log field.
BIAS_DEGREE = 3
#: Size of the coarse random grid of the ``smooth-contrast`` exponent field.
CONTRAST_GRID = (4, 4, 4)
#: Control points of the ``histogram-shift`` intensity curve.
HISTOGRAM_CONTROL_POINTS = 10
#: Band of the ``kspace-spike`` position along each axis, as a fraction of the sampling rate.
SPIKE_BAND = (1 / 8, 3 / 8)


# -- shared steps ------------------------------------------------------------------------------
def _volume(image: np.ndarray) -> np.ndarray:
    """The volume as MONAI's one channel, (1, X, Y, Z): a float32 copy, so no transform can write to the input."""
    return np.array(image, dtype=np.float32)[None]


def _slices(image: np.ndarray) -> np.ndarray:
    """The axial slices as MONAI channels, (Z, X, Y): a float32 copy."""
    return np.array(np.moveaxis(image, -1, 0), dtype=np.float32, order="C")


def _seeded(transform: Any, rng: np.random.Generator) -> Any:
    """``transform`` with its random state seeded from ``rng`` (never MONAI's or numpy's global state)."""
    transform.set_random_state(seed=int(rng.integers(2**31)))
    return transform


def _seeded_volume(transform: Any, image: np.ndarray, brain_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random MONAI transform, seeded from ``rng``, on the volume as one channel; finished (see :func:`_finish`)."""
    return _finish(_seeded(transform, rng)(_volume(image)), brain_mask)


def _numpy(out: Any) -> np.ndarray:
    """A MONAI output (tensor, MetaTensor or array) as a numpy array."""
    from monai.utils import convert_to_numpy

    return np.asarray(convert_to_numpy(out))


def _finish(out: Any, brain_mask: np.ndarray, *, slices: bool = False) -> np.ndarray:
    """A transform's output as a float32 (X, Y, Z) volume in [0, 1], zero outside ``brain_mask``.

    ``slices``: the output has the axial slices as channels (Z, X, Y), else one channel (1, X, Y, Z)."""
    array = _numpy(out)
    array = np.moveaxis(array, 0, -1) if slices else array[0]
    result = np.clip(array, 0.0, 1.0).astype(np.float32)
    result[~brain_mask] = 0.0
    return result


def _kspace_sample(image: np.ndarray, loc: tuple[int, ...]) -> complex:
    """The centred-FFT k-space sample at ``loc`` (MONAI's ``shift_fourier`` layout), by separable DFT."""
    out: Any = np.asarray(image, dtype=np.float64)
    for n, i in zip(image.shape, loc):
        f = i - n // 2  # fftshift puts frequency 0 at index n // 2
        out = np.tensordot(np.exp(-2j * np.pi * f * np.arange(n) / n), out, axes=([0], [0]))
    return complex(out)


def spike_location(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """A k-space index (centred layout) between 1/8 and 3/8 of the sampling rate from the centre along every axis."""
    lo, hi = SPIKE_BAND
    loc = []
    for n in shape:
        f = max(1, round(rng.uniform(lo, hi) * n)) * (1 if rng.integers(2) else -1)
        loc.append(int(np.clip(n // 2 + f, 0, n - 1)))
    return tuple(loc)


# -- shifts -----------------------------------------------------------------------------------
@register_shift("gibbs")
@neutral_severity(0.0)
@severity_range(0.0, 1.0)
@calibration_range(0.0, 0.98)
def gibbs(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Gibbs ringing: each axial slice's k-space truncated by MONAI's GibbsNoise, alpha = severity in [0, 1]."""
    if severity == 0:
        return image.copy()
    from monai.transforms import GibbsNoise

    return _finish(GibbsNoise(alpha=severity)(_slices(image)), brain_mask, slices=True)


@register_shift("kspace-spike")
@neutral_severity(0.0)
@severity_range(0.0, None)
@calibration_range(0.0, 1.5)
def kspace_spike(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """k-space spike (herringbone): stripes of peak amplitude severity x the mean brain intensity."""
    if severity == 0:
        return image.copy()
    from monai.transforms import KSpaceSpikeNoise

    loc = spike_location(image.shape, rng)
    boost = severity * image.size * float(image[brain_mask].mean()) if brain_mask.any() else 0.0
    log_intensity = float(np.log(abs(_kspace_sample(image, loc)) + boost + 1e-10))
    return _finish(KSpaceSpikeNoise(loc=loc, k_intensity=log_intensity)(_volume(image)), brain_mask)


@register_shift("bias-field")
@neutral_severity(0.0)
@severity_range(0.0, None)
@calibration_range(0.0, 3.0)
def bias_field(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative bias field exp(Legendre polynomial, degree 3), coefficients uniform in [-severity, severity]."""
    if severity == 0:
        return image.copy()
    from monai.transforms import RandBiasField

    transform = RandBiasField(degree=BIAS_DEGREE, coeff_range=(-severity, severity), prob=1.0)
    return _seeded_volume(transform, image, brain_mask, rng)


@register_shift("rician")
@neutral_severity(0.0)
@severity_range(0.0, None)
@calibration_range(0.0, 0.5)
def rician(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise of standard deviation severity (in units of the [0, 1] intensity range)."""
    if severity == 0:
        return image.copy()
    from monai.transforms import RandRicianNoise

    transform = RandRicianNoise(prob=1.0, std=severity, relative=False, sample_std=False)
    return _seeded_volume(transform, image, brain_mask, rng)


@register_shift("smooth-contrast")
@neutral_severity(0.0)
@severity_range(0.0, None)
@calibration_range(0.0, 9.0)
def smooth_contrast(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Smoothly varying contrast: voxels raised to a smooth exponent field in [1 / (1 + severity), 1 + severity]."""
    if severity == 0:
        return image.copy()
    from monai.transforms import RandSmoothFieldAdjustContrast

    transform = RandSmoothFieldAdjustContrast(
        spatial_size=image.shape, rand_size=CONTRAST_GRID, mode="trilinear", align_corners=True, prob=1.0, gamma=(1 / (1 + severity), 1 + severity)
    )
    return _seeded_volume(transform, image, brain_mask, rng)


@register_shift("histogram-shift")
@neutral_severity(0.0)
@severity_range(0.0, 1.0)
@calibration_range(0.0, 1.0)
def histogram_shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Nonlinear histogram shift: the fraction severity of a random monotone intensity remapping."""
    if severity == 0:
        return image.copy()
    from monai.transforms import RandHistogramShift

    volume = _volume(image)
    shifted = _numpy(_seeded(RandHistogramShift(num_control_points=HISTOGRAM_CONTROL_POINTS, prob=1.0), rng)(volume))
    return _finish((1 - severity) * volume + severity * shifted, brain_mask)


@register_shift("low-resolution")
@neutral_severity(1.0)
@severity_range(1.0, None)
@calibration_range(1.0, 8.0)
def low_resolution(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Lower acquisition resolution: area-averaged down by the factor severity >= 1, trilinearly back up."""
    if severity == 1:
        return image.copy()
    from monai.transforms import RandSimulateLowResolution

    transform = RandSimulateLowResolution(prob=1.0, downsample_mode="area", zoom_range=(1 / severity, 1 / severity))
    return _seeded_volume(transform, image, brain_mask, rng)
