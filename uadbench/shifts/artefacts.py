"""MRI artefact shifts built on MONAI transforms, applied to evaluation images only.

Each shift follows the contract of :mod:`uadbench.shifts.base` (``shift(image, brain_mask, severity,
rng)``): it is computed on the preprocessed volume (X, Y, Z in [0, 1], zero outside the brain),
then the background is re-zeroed and the result clipped to [0, 1]. It never writes to its inputs,
draws every random parameter from ``rng`` (a MONAI ``Rand*`` transform is seeded with
``set_random_state(seed=int(rng.integers(2**31)))``, never from a global state) and returns the
image unchanged at its neutral severity. Like every shift it reaches evaluation images only,
never training data. MONAI arrays are channel-first: a volume is one channel (1, X, Y, Z) unless
a shift works per axial slice (the last axis), when the slices are the channels (Z, X, Y).

The seven shifts are one parametrised shift (:func:`apply_artefact`): a table of
:class:`ArtefactSpec` (:data:`ARTEFACTS`: name, MONAI transform, severities) registered in a loop.
Adding an artefact is one more row.

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

from collections.abc import Callable
from dataclasses import dataclass
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


def _monai(name: str) -> Any:
    """A transform class of ``monai.transforms``, imported when a shift first runs (importing this module needs no MONAI)."""
    import monai.transforms

    return getattr(monai.transforms, name)


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


# -- the parametrised shift ------------------------------------------------------------------------
#: (severity, image, brain mask, rng) -> the MONAI transform of one call
TransformFactory = Callable[[float, np.ndarray, np.ndarray, np.random.Generator], Any]


@dataclass(frozen=True)
class ArtefactSpec:
    """One MONAI artefact shift: its registered name, its one-line description, the severities it
    accepts (from ``neutral`` to ``highest``) and is calibrated over (from ``neutral`` to
    ``calibration_stop``), and how its MONAI transform is built and applied."""

    name: str
    doc: str
    transform: TransformFactory
    calibration_stop: float
    neutral: float = 0.0  # the severity that leaves the image unchanged, also the lowest accepted
    highest: float | None = None  # the highest severity accepted (None: unbounded)
    per_slice: bool = False  # the axial slices are the channels (2D k-space), else the volume is one channel
    seeded: bool = False  # a MONAI Rand* transform: its random state is seeded from rng
    blend: bool = False  # out = (1 - severity) x image + severity x transformed


def apply_artefact(spec: ArtefactSpec, image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """``spec``'s shift of ``image``: unchanged (a copy) at the neutral severity, else the MONAI
    transform on the volume (or its axial slices), blended if the spec says so, finished (:func:`_finish`)."""
    if severity == spec.neutral:
        return image.copy()
    data = _slices(image) if spec.per_slice else _volume(image)
    transform = spec.transform(severity, image, brain_mask, rng)
    if spec.seeded:
        _seeded(transform, rng)
    out = transform(data)
    if spec.blend:
        out = (1 - severity) * data + severity * _numpy(out)
    return _finish(out, brain_mask, slices=spec.per_slice)


def _spike(severity: float, image: np.ndarray, brain_mask: np.ndarray, rng: np.random.Generator) -> Any:
    """KSpaceSpikeNoise at a location drawn from ``rng``, the sample's magnitude raised by severity x N x mean brain intensity."""
    loc = spike_location(image.shape, rng)
    boost = severity * image.size * float(image[brain_mask].mean()) if brain_mask.any() else 0.0
    log_intensity = float(np.log(abs(_kspace_sample(image, loc)) + boost + 1e-10))
    return _monai("KSpaceSpikeNoise")(loc=loc, k_intensity=log_intensity)


#: The artefact shifts, registered in this order (see the module docstring for each).
ARTEFACTS: tuple[ArtefactSpec, ...] = (
    ArtefactSpec("gibbs", "Gibbs ringing: each axial slice's k-space truncated by MONAI's GibbsNoise, alpha = severity in [0, 1].",
                 lambda s, image, brain, rng: _monai("GibbsNoise")(alpha=s), calibration_stop=0.98, highest=1.0, per_slice=True),
    ArtefactSpec("kspace-spike", "k-space spike (herringbone): stripes of peak amplitude severity x the mean brain intensity.",
                 _spike, calibration_stop=1.5),
    ArtefactSpec("bias-field", "Multiplicative bias field exp(Legendre polynomial, degree 3), coefficients uniform in [-severity, severity].",
                 lambda s, image, brain, rng: _monai("RandBiasField")(degree=BIAS_DEGREE, coeff_range=(-s, s), prob=1.0),
                 calibration_stop=3.0, seeded=True),
    ArtefactSpec("rician", "Rician noise of standard deviation severity (in units of the [0, 1] intensity range).",
                 lambda s, image, brain, rng: _monai("RandRicianNoise")(prob=1.0, std=s, relative=False, sample_std=False),
                 calibration_stop=0.5, seeded=True),
    ArtefactSpec("smooth-contrast", "Smoothly varying contrast: voxels raised to a smooth exponent field in [1 / (1 + severity), 1 + severity].",
                 lambda s, image, brain, rng: _monai("RandSmoothFieldAdjustContrast")(
                     spatial_size=image.shape, rand_size=CONTRAST_GRID, mode="trilinear", align_corners=True, prob=1.0, gamma=(1 / (1 + s), 1 + s)),
                 calibration_stop=9.0, seeded=True),
    ArtefactSpec("histogram-shift", "Nonlinear histogram shift: the fraction severity of a random monotone intensity remapping.",
                 lambda s, image, brain, rng: _monai("RandHistogramShift")(num_control_points=HISTOGRAM_CONTROL_POINTS, prob=1.0),
                 calibration_stop=1.0, highest=1.0, seeded=True, blend=True),
    ArtefactSpec("low-resolution", "Lower acquisition resolution: area-averaged down by the factor severity >= 1, trilinearly back up.",
                 lambda s, image, brain, rng: _monai("RandSimulateLowResolution")(prob=1.0, downsample_mode="area", zoom_range=(1 / s, 1 / s)),
                 calibration_stop=8.0, neutral=1.0, seeded=True),
)


def _artefact_shift(spec: ArtefactSpec) -> Callable[..., np.ndarray]:
    """The registered shift of ``spec``: ``shift(image, brain_mask, severity, rng)`` with its
    neutral severity, accepted range and calibration range declared."""

    def shift(image: np.ndarray, brain_mask: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        return apply_artefact(spec, image, brain_mask, severity, rng)

    shift.__name__ = shift.__qualname__ = spec.name.replace("-", "_")  # gibbs, kspace_spike, ...: a module attribute, so it pickles
    shift.__doc__ = spec.doc
    declared = calibration_range(spec.neutral, spec.calibration_stop)(shift)
    declared = severity_range(spec.neutral, spec.highest)(declared)
    return register_shift(spec.name)(neutral_severity(spec.neutral)(declared))


for _spec in ARTEFACTS:
    _fn = _artefact_shift(_spec)
    globals()[_fn.__name__] = _fn
del _spec, _fn
