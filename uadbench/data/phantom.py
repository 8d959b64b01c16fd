"""A digital brain phantom: healthy subjects and lesion cohorts rendered from MR physics.

Anatomy
    The MNI152 2009a symmetric template and its grey/white-matter probability maps, shipped
    inside nilearn (no download), at 2 mm (99x117x95 voxels). CSF is the rest of the brain
    mask, ``csf = brain - gm - wm``; the three are partial-volume tissue fractions.

Subjects
    Each subject is the template pulled through its own smooth deformation: a small random
    affine (±3 degrees, ±3 % scale, ±3 mm shift), a smooth random displacement field (a few mm)
    and a radial expansion or shrinkage around the lateral ventricles (ventricle size).
    Tissue relaxation times and proton density are jittered per subject. Every random draw
    comes from a ``numpy.random.Generator`` seeded from (seed, cohort, split, subject index),
    so the same seed gives the same bytes and distinct splits hold distinct subjects.

Contrast
    Each tissue has T1, T2 and PD; a sequence turns them into signal. Spin echo,
    ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``, gives T1w, T2w and PD-weighted images; inversion
    recovery, ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``, gives FLAIR (TI chosen to
    null CSF). A voxel's signal is the fraction-weighted sum of its tissues' signals. A
    :class:`Scanner` is a named set of sequence parameters, a field strength, a noise level and a
    bias-field strength; the image is ``gain * |bias * signal + complex Gaussian noise|``
    (Rician magnitude noise), skull-stripped (zero outside the brain mask).

Relaxation parameters (ms; PD relative to pure water), rounded from the literature:

    ============  ======  ======  =====  ======  ======  =====
    tissue        T1 1.5  T2 1.5  PD     T1 3T   T2 3T   PD
    ============  ======  ======  =====  ======  ======  =====
    white matter   790     80     0.70   1080     70     0.70
    grey matter   1200     95     0.80   1600    100     0.80
    CSF           4300   2000     1.00   4300   1800     1.00
    ============  ======  ======  =====  ======  ======  =====

    - T1 and T2 of grey and white matter: Stanisz et al., "T1, T2 relaxation and magnetization
      transfer in tissue at 3T", Magn Reson Med 54:507-512 (2005) (WM 1084/69 ms, GM 1820/99 ms
      at 3 T; 884/72 and 1124/95 ms at 1.5 T); Rooney et al., "Magnetic field and tissue
      dependencies of human brain longitudinal 1H2O relaxation in vivo", Magn Reson Med
      57:308-318 (2007) (T1 of CSF about 4.3 s, nearly field independent; cortical GM and WM
      T1 rising with field). Our GM values sit between the two studies.
    - T2 of CSF: about 2 s at 1.5 T and somewhat shorter at 3 T (e.g. Spijkerman et al.,
      "T2 mapping of cerebrospinal fluid: 3 T versus 7 T", MAGMA 31:415-424, 2018).
    - Proton density (water content): WM about 0.69-0.71, GM about 0.80-0.83 (Neeb et al.,
      "A new method for fast quantitative mapping of absolute water content in vivo",
      NeuroImage 31:1156-1168, 2006; Tofts, "Quantitative MRI of the Brain", Wiley 2003).
    - Lesion tissues (:mod:`uadbench.data.phantom_lesions`) are set from the same sources'
      qualitative descriptions (oedema and necrosis: long T1 and T2, high water content) and
      then calibrated so that the lesion-to-surrounding-brain ratio measured by
      :func:`lesion_contrast_ratio` falls in the ranges of real scans (BraTS whole tumour
      1.2-2.3x on FLAIR and 1.1-2.1x on T2; MS lesions 1.3-1.6x on FLAIR and T2 and slightly
      darker than the surrounding brain on T1: 0.79-0.88x on the three MSLUB scans of
      ``../shared/realdata`` measured with the same function, see :func:`mslub_lesion_ratios`).

On disk
    Cohorts are written once as NIfTI under
    ``<root>/phantom/v<PHANTOM_VERSION>/seed<seed>/<cohort>-<modality>[-<sizes>]/`` in the
    layout of :mod:`uadbench.data.nifti` (with a manifest of sha256 checksums); the three
    modalities of a cohort are rendered from the same subjects in one pass. Directories are
    built under a temporary name and renamed into place; a lock file serialises concurrent
    generators, and a second process reuses what the first one wrote. The suffix
    ``-<sizes>`` (e.g. ``-train4-val2-test2``) is added only when the split sizes differ from
    the defaults.

Split sizes
    Defaults: healthy train 24 / val 6 / test 6; lesion cohorts val 6 / test 10. Override them
    with the ``sizes`` argument (a mapping split -> count) or the environment variable
    ``UADBENCH_PHANTOM_SIZES``, e.g. ``"train=8,val=2,test=2"`` (applied to the splits each
    cohort has) or per cohort ``"healthy.train=8,tumour.test=4"``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from scipy import ndimage

from uadbench.data.nifti import read_manifest, sha256_file, write_manifest, write_subject
from uadbench.data.volume import Volume
from uadbench.errors import ConfigError, DataError
from uadbench.io_utils import atomic_dir

PHANTOM_VERSION = "1"  # bump whenever the generated bytes change (cache folders are versioned)
SPACING_MM = 2.0
MODALITIES: tuple[str, ...] = ("t1w", "t2w", "flair")
ALL_MODALITIES: tuple[str, ...] = ("t1w", "t2w", "pd", "flair")
SIZES_ENV = "UADBENCH_PHANTOM_SIZES"
DEFAULT_SCANNER = "generic-3t"


# ---------------------------------------------------------------------------------------------
# Tissues and sequences
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TissueParams:
    """Longitudinal and transverse relaxation times (ms) and proton density (water = 1)."""

    t1: float
    t2: float
    pd: float


# Healthy tissues per field strength (see the module docstring for sources).
HEALTHY_TISSUES: dict[float, dict[str, TissueParams]] = {
    1.5: {
        "wm": TissueParams(790.0, 80.0, 0.70),
        "gm": TissueParams(1200.0, 95.0, 0.80),
        "csf": TissueParams(4300.0, 2000.0, 1.00),
    },
    3.0: {
        "wm": TissueParams(1080.0, 70.0, 0.70),
        "gm": TissueParams(1600.0, 100.0, 0.80),
        "csf": TissueParams(4300.0, 1800.0, 1.00),
    },
}


@dataclass(frozen=True)
class PulseSequence:
    """A pulse sequence: spin echo (``kind="se"``) or inversion recovery (``kind="ir"``).

    Times in ms. Spin echo: ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``. Inversion recovery (magnitude):
    ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``.
    """

    kind: str
    tr: float
    te: float
    ti: float | None = None

    def signal(self, t1, t2, pd):
        t1 = np.asarray(t1, dtype=np.float64)
        t2 = np.asarray(t2, dtype=np.float64)
        pd = np.asarray(pd, dtype=np.float64)
        decay = np.exp(-self.te / t2)
        if self.kind == "se":
            return pd * (1.0 - np.exp(-self.tr / t1)) * decay
        if self.kind == "ir":
            assert self.ti is not None
            return pd * np.abs(1.0 - 2.0 * np.exp(-self.ti / t1) + np.exp(-self.tr / t1)) * decay
        raise ConfigError(f"unknown sequence kind {self.kind!r}; valid: 'se', 'ir'")



@dataclass(frozen=True)
class Scanner:
    """A named acquisition protocol: sequences per modality, field strength and imperfections.

    ``noise`` is the standard deviation of each quadrature channel of the complex noise, as a
    fraction of the mean noise-free brain signal of the sequence; ``bias`` is the standard
    deviation of the log of the multiplicative bias field; ``gain`` scales the output.
    """

    name: str
    field_strength: float
    sequences: Mapping[str, PulseSequence]
    noise: float = 0.03
    bias: float = 0.10
    gain: float = 1000.0

    def sequence(self, modality: str) -> PulseSequence:
        if modality not in self.sequences:
            raise ConfigError(
                f"scanner {self.name!r} has no sequence for modality {modality!r}; "
                f"available: {', '.join(self.sequences)}"
            )
        return self.sequences[modality]


SCANNERS: dict[str, Scanner] = {
    "generic-3t": Scanner(
        "generic-3t",
        3.0,
        {
            "t1w": PulseSequence("se", tr=500.0, te=10.0),
            "t2w": PulseSequence("se", tr=4000.0, te=100.0),
            "pd": PulseSequence("se", tr=4000.0, te=12.0),
            "flair": PulseSequence("ir", tr=9000.0, te=120.0, ti=2480.0),
        },
        noise=0.03,
        bias=0.10,
    ),
    "generic-1.5t": Scanner(
        "generic-1.5t",
        1.5,
        {
            "t1w": PulseSequence("se", tr=450.0, te=12.0),
            "t2w": PulseSequence("se", tr=3500.0, te=90.0),
            "pd": PulseSequence("se", tr=3500.0, te=12.0),
            "flair": PulseSequence("ir", tr=8000.0, te=110.0, ti=2360.0),
        },
        noise=0.04,
        bias=0.15,
    ),
}


def get_scanner(scanner: str | Scanner) -> Scanner:
    if isinstance(scanner, Scanner):
        return scanner
    if scanner not in SCANNERS:
        raise ConfigError(f"unknown phantom scanner {scanner!r}; available: {', '.join(SCANNERS)}")
    return SCANNERS[scanner]


# ---------------------------------------------------------------------------------------------
# Anatomy
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anatomy:
    """Tissue fractions of the template on its 2 mm grid, plus landmarks in voxel coordinates."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray  # float 0/1
    affine: np.ndarray
    ventricle_centre: np.ndarray  # voxel coordinates
    ventricle_distance: np.ndarray  # mm from the lateral ventricles (template space)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.gm.shape)  # type: ignore[return-value]


# The lateral ventricles' centre in MNI mm (x, y, z); used for ventricle-size variation.
VENTRICLE_CENTRE_MNI = np.array([0.0, -12.0, 14.0])


@functools.lru_cache(maxsize=1)
def load_anatomy() -> Anatomy:
    """The MNI152 template's tissue fractions at 2 mm (from nilearn's bundled files)."""
    try:
        from nilearn import datasets as nl_datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise DataError(f"the phantom needs nilearn for the MNI152 template: {exc}") from exc
    gm_img = nl_datasets.load_mni152_gm_template(resolution=2)
    gm = np.asarray(gm_img.dataobj, dtype=np.float32)
    wm = np.asarray(nl_datasets.load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
    brain = np.asarray(nl_datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    affine = np.asarray(gm_img.affine, dtype=np.float64)
    gm = np.clip(gm, 0.0, 1.0) * brain
    wm = np.clip(wm, 0.0, 1.0) * brain
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(brain - gm - wm, 0.0, 1.0).astype(np.float32)
    centre = np.linalg.solve(affine, np.r_[VENTRICLE_CENTRE_MNI, 1.0])[:3]
    # Lateral ventricles: CSF-dominated voxels within an ellipsoid around their centre.
    idx = np.indices(gm.shape, dtype=np.float32)
    radii_vox = np.array([22.0, 40.0, 20.0]) / SPACING_MM
    ell = sum(((idx[i] - centre[i]) / radii_vox[i]) ** 2 for i in range(3)) <= 1.0
    ventricles = (csf > 0.5) & ell
    dist = ndimage.distance_transform_edt(~ventricles, sampling=SPACING_MM).astype(np.float32)
    arrays = [gm.astype(np.float32), wm.astype(np.float32), csf, brain.astype(np.float32), dist]
    for a in arrays:  # shared by every subject of the process: never modified
        a.setflags(write=False)
    gm, wm, csf, brain, dist = arrays
    return Anatomy(
        gm=gm,
        wm=wm,
        csf=csf,
        brain=brain,
        affine=affine,
        ventricle_centre=centre,
        ventricle_distance=dist,
    )


# ---------------------------------------------------------------------------------------------
# Random streams
# ---------------------------------------------------------------------------------------------
def _code(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def subject_rng(seed: int, cohort: str, split: str, index: int, purpose: str = "anatomy") -> np.random.Generator:
    """The random stream of one subject (and one purpose: anatomy, lesion, a modality's noise)."""
    entropy = [int(seed), _code(cohort), _code(split), int(index), _code(purpose)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


@functools.lru_cache(maxsize=128)
def _upsampling_matrix(n_out: int, n_in: int, kind: str) -> np.ndarray:
    """The (n_out, n_in) matrix of a 1D upsampling (spline zooms are separable and linear).

    ``kind="smooth"``: cubic B-spline up to about every 4th output sample, then linear;
    ``kind="linear"``: linear with the end points aligned (``grid_mode=False``).
    """

    def columns(n_from: int, n_to: int, order: int, grid_mode: bool) -> np.ndarray:
        cols = [
            ndimage.zoom(np.eye(n_from)[k], n_to / n_from, order=order, mode="nearest", grid_mode=grid_mode)[:n_to]
            for k in range(n_from)
        ]
        return np.stack(cols, axis=1)

    if kind == "linear":
        return columns(n_in, n_out, 1, False).astype(np.float32)
    mid = max(n_in, int(np.ceil(n_out / 4)))
    matrix = columns(n_in, mid, 3, True)
    if mid != n_out:
        matrix = columns(mid, n_out, 1, True) @ matrix
    return matrix.astype(np.float32)


def upsample(coarse: np.ndarray, shape: Sequence[int], kind: str) -> np.ndarray:
    """Separable upsampling of a 3D array to ``shape`` (see :func:`_upsampling_matrix`)."""
    mx, my, mz = (_upsampling_matrix(int(n), int(c), kind) for n, c in zip(shape, coarse.shape))
    out = np.tensordot(np.asarray(coarse, dtype=np.float32), mz, axes=(2, 1))  # (i, j, Z)
    out = np.tensordot(out, my, axes=(1, 1))  # (i, Z, Y)
    out = np.tensordot(out, mx, axes=(0, 1))  # (Z, Y, X)
    return np.ascontiguousarray(out.transpose(2, 1, 0))


def smooth_field(rng: np.random.Generator, shape: Sequence[int], control: Sequence[int]) -> np.ndarray:
    """A smooth zero-mean, unit-std random field: random control points, spline upsampling."""
    coarse = rng.standard_normal(tuple(int(c) for c in control))
    field_ = upsample(coarse, shape, "smooth")
    field_ = field_ - field_.mean()
    std = field_.std()
    return (field_ / std if std > 0 else field_).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Deformation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expansion:
    """A radial expansion (``strength > 0``) or shrinkage around ``centre`` (voxels).

    The pull-back displacement is ``strength * (x - c) * exp(-|(x - c) / sigma|^2 / 2)`` with
    ``sigma`` in voxels per axis; tissue near the centre is magnified by about
    ``1 / (1 - strength)``.
    """

    centre: np.ndarray
    sigma: np.ndarray
    strength: float


def _coarse_axes(shape: Sequence[int], step: int = 4) -> list[np.ndarray]:
    return [np.linspace(0.0, n - 1.0, int(np.ceil((n - 1) / step)) + 1) for n in shape]


def sample_warp(
    rng: np.random.Generator,
    shape: Sequence[int],
    *,
    rotation_deg: float = 3.0,
    scale: float = 0.03,
    shift_mm: float = 3.0,
    displacement_mm: float = 2.0,
    expansions: Sequence[Expansion] = (),
) -> np.ndarray:
    """Source coordinates (3, X, Y, Z), in voxels, for every output voxel of a subject.

    Composes a small random affine about the volume centre, a smooth random displacement and
    the given radial expansions. Computed on a coarse grid (every 4th voxel) and upsampled
    linearly, which is exact for the affine part.
    """
    shape = tuple(int(s) for s in shape)
    axes = _coarse_axes(shape)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # (3, cx, cy, cz)
    centre = (np.array(shape, dtype=np.float64) - 1.0) / 2.0
    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, size=3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    matrix = rot @ np.diag(1.0 + rng.uniform(-scale, scale, size=3))
    shift = rng.uniform(-shift_mm, shift_mm, size=3) / SPACING_MM
    rel = grid - centre[:, None, None, None]
    src = np.einsum("ij,j...->i...", matrix, rel) + (centre + shift)[:, None, None, None]
    # smooth random displacement (control points every ~20 mm)
    control = [max(3, int(round(n * SPACING_MM / 20.0))) for n in shape]
    for i in range(3):
        src[i] += smooth_field(rng, grid.shape[1:], control) * (displacement_mm / SPACING_MM)
    for exp in expansions:
        d = grid - np.asarray(exp.centre, dtype=np.float64)[:, None, None, None]
        g = np.exp(-0.5 * sum((d[i] / exp.sigma[i]) ** 2 for i in range(3)))
        src -= exp.strength * d * g
    full = np.empty((3, *shape), dtype=np.float32)
    for i in range(3):
        full[i] = upsample(src[i], shape, "linear")
    return full


@functools.lru_cache(maxsize=1)
def _dilated_template_brain() -> np.ndarray:
    return ndimage.binary_dilation(load_anatomy().brain > 0, structure=np.ones((3, 3, 3), bool))


def _near_template_brain(coords: np.ndarray) -> np.ndarray:
    """Output voxels whose source point's nearest voxel touches the template brain.

    Linear interpolation only reads the voxels within one voxel (per axis) of the nearest one,
    so the interpolated brain mask is exactly zero everywhere else.
    """
    dilated = _dilated_template_brain()
    idx = [np.clip(np.rint(coords[i]), 0, n - 1).astype(np.intp) for i, n in enumerate(dilated.shape)]
    return dilated[idx[0], idx[1], idx[2]]


def warp(volume: np.ndarray, coords: np.ndarray, order: int = 1, where: np.ndarray | None = None) -> np.ndarray:
    """``volume`` pulled through ``coords`` (linear interpolation, zero outside).

    With a boolean ``where`` only those output voxels are computed; the rest are 0.
    """
    if where is None:
        return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0).astype(np.float32)
    out = np.zeros(where.shape, dtype=np.float32)
    out[where] = ndimage.map_coordinates(volume, coords[:, where], order=order, mode="constant", cval=0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Subjects
# ---------------------------------------------------------------------------------------------
#: Lesion tissue labels (0 = no lesion) and their names.
LESION_LABELS: dict[int, str] = {
    1: "tumour_necrosis",
    2: "tumour_enhancing",
    3: "tumour_oedema",
    4: "ms_lesion",
    5: "stroke_core",
    6: "stroke_gliosis",
}


@dataclass
class PhantomSubject:
    """One subject's anatomy: tissue fractions, lesion tissue, and per-subject tissue parameters.

    ``lesion_fraction`` is the fraction of each voxel taken by lesion tissue (0 outside lesions,
    in [0.5, 1] inside); ``lesion_labels`` says which lesion tissue (see :data:`LESION_LABELS`);
    ``lesion_texture`` is a smooth multiplicative heterogeneity of the lesion tissue's signal.
    The lesion mask is exactly ``lesion_fraction > 0``.
    """

    subject_id: str
    cohort: str
    split: str
    index: int
    seed: int
    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain_mask: np.ndarray
    tissues: dict[str, TissueParams]
    lesion_fraction: np.ndarray | None = None
    lesion_labels: np.ndarray | None = None
    lesion_type: str | None = None
    lesion_texture: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def lesion_mask(self) -> np.ndarray | None:
        if self.lesion_fraction is None:
            return None
        return self.lesion_fraction > 0


@dataclass(frozen=True)
class CohortSpec:
    """A cohort: its splits with default sizes, and the lesion type it carries (None: healthy)."""

    name: str
    sizes: Mapping[str, int]
    lesion: str | None
    description: str

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.sizes)


COHORTS: dict[str, CohortSpec] = {
    "healthy": CohortSpec("healthy", {"train": 24, "val": 6, "test": 6}, None, "healthy subjects"),
    "tumour": CohortSpec("tumour", {"val": 6, "test": 10}, "tumour", "glioma-like tumours"),
    "ms": CohortSpec("ms", {"val": 6, "test": 10}, "ms", "multiple-sclerosis lesions"),
    "stroke": CohortSpec("stroke", {"val": 6, "test": 10}, "stroke", "chronic cortical strokes"),
}

#: What each lesion cohort holds (shown in the datasets' docstrings).
COHORT_DETAILS: dict[str, str] = {
    "healthy": "No lesions.",
    "tumour": "One tumour per subject: necrotic core, enhancing rim and oedema, with mass effect.",
    "ms": "5 to 14 small ovoid lesions per subject, periventricular and in deep white matter.",
    "stroke": "One wedge-shaped cortical infarct per subject: fluid-like core and a gliotic rim.",
}


def get_cohort(cohort: str) -> CohortSpec:
    if cohort not in COHORTS:
        raise ConfigError(f"unknown phantom cohort {cohort!r}; available: {', '.join(COHORTS)}")
    return COHORTS[cohort]


def subject_id(cohort: str, split: str, index: int) -> str:
    return f"{cohort}-{split}-{index:03d}"


def _jitter_tissues(rng: np.random.Generator, base: Mapping[str, TissueParams], rel: float) -> dict[str, TissueParams]:
    out = {}
    for name, p in base.items():
        f = np.clip(1.0 + rel * rng.standard_normal(3), 1.0 - 3 * rel, 1.0 + 3 * rel)
        out[name] = TissueParams(p.t1 * f[0], p.t2 * f[1], min(1.0, p.pd * f[2]))
    return out


def generate_subject(
    seed: int,
    cohort: str,
    split: str,
    index: int,
    *,
    field_strength: float = 3.0,
) -> PhantomSubject:
    """Build one subject of ``cohort`` (deterministic in its arguments)."""
    from uadbench.data import phantom_lesions

    spec = get_cohort(cohort)
    anatomy = load_anatomy()
    rng = subject_rng(seed, cohort, split, index, "anatomy")
    lesion_rng = subject_rng(seed, cohort, split, index, "lesion")
    shape = anatomy.shape
    vent = Expansion(
        centre=anatomy.ventricle_centre,
        sigma=np.array([14.0, 24.0, 14.0]) / SPACING_MM,
        strength=float(rng.uniform(-0.15, 0.30)),
    )
    expansions = [vent]
    plan = None
    if spec.lesion is not None:
        plan = phantom_lesions.plan_lesions(spec.lesion, lesion_rng, anatomy)
        expansions.extend(plan.expansions)
    coords = sample_warp(rng, shape, expansions=expansions)
    brain_frac = warp(anatomy.brain, coords, where=_near_template_brain(coords))
    brain = brain_frac >= 0.5
    gm = warp(anatomy.gm, coords, where=brain)
    wm = warp(anatomy.wm, coords, where=brain)
    csf = warp(anatomy.csf, coords, where=brain)
    if field_strength not in HEALTHY_TISSUES:
        raise ConfigError(
            f"no tissue parameters at {field_strength} T; available: {sorted(HEALTHY_TISSUES)}"
        )
    tissues = _jitter_tissues(rng, HEALTHY_TISSUES[field_strength], 0.03)
    subject = PhantomSubject(
        subject_id=subject_id(cohort, split, index),
        cohort=cohort,
        split=split,
        index=index,
        seed=int(seed),
        affine=anatomy.affine.copy(),
        gm=gm,
        wm=wm,
        csf=csf,
        brain_mask=brain,
        tissues=tissues,
        meta={"ventricle_expansion": vent.strength},
    )
    if plan is not None:
        ventricle_distance = None
        if plan.needs_ventricle_distance:
            ventricle_distance = warp(anatomy.ventricle_distance, coords, where=brain) + 1000.0 * (~brain)
        phantom_lesions.insert_lesions(
            subject, plan, lesion_rng, field_strength=field_strength, ventricle_distance=ventricle_distance
        )
    return subject


def tissue_signals(subject: PhantomSubject, sequence: PulseSequence) -> np.ndarray:
    """Noise-free, bias-free signal of every voxel (fraction-weighted tissue signals)."""
    sig = {n: np.float32(sequence.signal(p.t1, p.t2, p.pd)) for n, p in subject.tissues.items()}
    brain = subject.brain_mask  # tissue fractions are zero outside the brain
    inside = subject.gm[brain] * sig["gm"] + subject.wm[brain] * sig["wm"] + subject.csf[brain] * sig["csf"]
    if subject.lesion_fraction is not None and subject.lesion_labels is not None:
        lut = np.zeros(max(LESION_LABELS) + 1, dtype=np.float32)
        for label, name in LESION_LABELS.items():
            if name in sig:
                lut[label] = sig[name]
        f = subject.lesion_fraction[brain]
        lesion_signal = lut[subject.lesion_labels[brain]]
        if subject.lesion_texture is not None:
            lesion_signal = lesion_signal * subject.lesion_texture[brain]
        inside = inside * (1.0 - f) + f * lesion_signal
    out = np.zeros(brain.shape, dtype=np.float32)
    out[brain] = inside
    return out


def render(subject: PhantomSubject, modality: str, scanner: str | Scanner = DEFAULT_SCANNER) -> np.ndarray:
    """The image of ``subject`` for ``modality`` on ``scanner`` (bias field and Rician noise)."""
    scanner = get_scanner(scanner)
    seq = scanner.sequence(modality)
    clean = tissue_signals(subject, seq)
    brain = subject.brain_mask
    rng = subject_rng(subject.seed, subject.cohort, subject.split, subject.index, f"render-{modality}")
    control = [max(3, int(round(n * SPACING_MM / 60.0))) for n in clean.shape]
    bias = np.exp(scanner.bias * smooth_field(rng, clean.shape, control)[brain])
    sigma = scanner.noise * float(clean[brain].mean())
    values = clean[brain] * bias
    real = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(values.shape, dtype=np.float32)
    image = np.zeros(clean.shape, dtype=np.float32)
    # scanners store integer magnitudes; the rounding is far below the noise (sigma ~ 5 units)
    image[brain] = np.rint(scanner.gain * np.sqrt(real * real + imag * imag))
    return image


def to_volume(subject: PhantomSubject, image: np.ndarray, *, modality: str, scanner: str, lesion: bool) -> Volume:
    return Volume(
        image=image,
        affine=subject.affine,
        brain_mask=subject.brain_mask,
        lesion_mask=(subject.lesion_mask if lesion else None),
        subject_id=subject.subject_id,
        meta={"cohort": subject.cohort, "modality": modality, "scanner": scanner, "lesion_type": subject.lesion_type},
    )


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------
def lesion_contrast_ratio(
    image: np.ndarray,
    lesion_mask: np.ndarray,
    brain_mask: np.ndarray,
    spacing: Sequence[float] = (SPACING_MM,) * 3,
    shell_mm: float = 5.0,
) -> float:
    """Mean lesion intensity over mean intensity of the surrounding brain.

    The surrounding brain is the shell of voxels within ``shell_mm`` of the lesion (Euclidean
    distance in mm), outside the lesion and inside the brain mask. Used identically on the
    phantom and on real scans so the two can be compared. NaN when the mask or the shell is
    empty.
    """
    lesion = np.asarray(lesion_mask, dtype=bool)
    brain = np.asarray(brain_mask, dtype=bool)
    if not lesion.any():
        return float("nan")
    # distance only in the lesion's bounding box (plus the shell) to stay fast on 1 mm volumes
    pad = [int(np.ceil(shell_mm / s)) + 1 for s in spacing]
    nz = np.nonzero(lesion)
    box = tuple(
        slice(max(0, int(a.min()) - p), min(n, int(a.max()) + p + 1))
        for a, p, n in zip(nz, pad, lesion.shape)
    )
    dist = ndimage.distance_transform_edt(~lesion[box], sampling=spacing)
    shell = (dist > 0) & (dist <= shell_mm) & brain[box]
    if not shell.any():
        return float("nan")
    img = np.asarray(image, dtype=np.float64)[box]
    return float(img[lesion[box]].mean() / img[shell].mean())


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------
def parse_sizes(text: str) -> dict[str, int]:
    """Parse ``"train=8,val=2"`` or ``"healthy.train=8,tumour.test=4"`` into a mapping."""
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            count = int(value)
        except ValueError:
            count = -1
        if not sep or not key or count < 1:
            raise ConfigError(
                f"{SIZES_ENV}: cannot read {item!r}; write split=count pairs with positive counts, "
                "e.g. 'train=8,val=2,test=2' or 'healthy.train=8,tumour.test=4'"
            )
        out[key] = count
    return out


def resolve_sizes(cohort: str, sizes: Mapping[str, int] | None = None) -> dict[str, int]:
    """Split sizes of ``cohort``: defaults, then $UADBENCH_PHANTOM_SIZES, then ``sizes``."""
    spec = get_cohort(cohort)
    out = dict(spec.sizes)
    layers: list[Mapping[str, int]] = []
    env = os.environ.get(SIZES_ENV, "").strip()
    if env:
        layers.append(parse_sizes(env))
    if sizes:
        layers.append(dict(sizes))
    for layer in layers:
        for key, value in layer.items():
            name, _, split = key.rpartition(".")
            if name and name not in COHORTS:
                raise ConfigError(f"phantom sizes: unknown cohort {name!r} in {key!r}; available: {', '.join(COHORTS)}")
            if split not in ("train", "val", "test"):
                raise ConfigError(f"phantom sizes: unknown split {split!r} in {key!r}; valid: train, val, test")
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"phantom sizes: {key!r} must be a positive integer, got {value!r}")
            if (not name or name == cohort) and split in out:
                out[split] = int(value)
    return out


# ---------------------------------------------------------------------------------------------
# Writing cohorts
# ---------------------------------------------------------------------------------------------
def phantom_root(root: str | os.PathLike, seed: int) -> Path:
    return Path(root) / "phantom" / f"v{PHANTOM_VERSION}" / f"seed{int(seed)}"


def cohort_dir_name(cohort: str, modality: str, sizes: Mapping[str, int], scanner: str = DEFAULT_SCANNER) -> str:
    spec = get_cohort(cohort)
    name = f"{cohort}-{modality}"
    if dict(sizes) != dict(spec.sizes):
        name += "-" + "-".join(f"{s}{sizes[s]}" for s in spec.splits)
    if scanner != DEFAULT_SCANNER:
        name += f"-{scanner}"
    return name


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock); a no-op where fcntl is unavailable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_cohort(
    root: str | os.PathLike,
    cohort: str,
    *,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    modalities: Sequence[str] = MODALITIES,
    scanner: str = DEFAULT_SCANNER,
) -> dict[str, Path]:
    """Generate ``cohort`` on disk unless it is there already; returns modality -> directory.

    All requested modalities are rendered from the same subjects in one pass; each modality
    directory is built under a temporary name and renamed into place when complete.
    """
    spec = get_cohort(cohort)
    scanner_obj = get_scanner(scanner)
    for m in modalities:
        scanner_obj.sequence(m)
    sizes = resolve_sizes(cohort, sizes)
    base = phantom_root(root, seed)
    dirs = {m: base / cohort_dir_name(cohort, m, sizes, scanner) for m in modalities}
    if all((d / "manifest.json").is_file() for d in dirs.values()):
        return dirs
    lock_name = f".{cohort_dir_name(cohort, 'all', sizes, scanner)}.lock"
    with _file_lock(base / lock_name):
        missing = [m for m, d in dirs.items() if not (d / "manifest.json").is_file()]
        if not missing:
            return dirs
        with contextlib.ExitStack() as stack:
            tmp = {m: stack.enter_context(atomic_dir(dirs[m])) for m in missing}
            splits = {s: [subject_id(cohort, s, i) for i in range(n)] for s, n in sizes.items()}
            for split, count in sizes.items():
                for index in range(count):
                    subject = generate_subject(seed, cohort, split, index, field_strength=scanner_obj.field_strength)
                    for m in missing:
                        image = render(subject, m, scanner_obj)
                        vol = to_volume(subject, image, modality=m, scanner=scanner_obj.name, lesion=spec.lesion is not None)
                        write_subject(tmp[m], split, vol)
            for m in missing:
                write_manifest(
                    tmp[m],
                    splits,
                    extra={
                        "phantom": {
                            "version": PHANTOM_VERSION,
                            "seed": int(seed),
                            "cohort": cohort,
                            "modality": m,
                            "scanner": scanner_obj.name,
                            "sequence": scanner_obj.sequence(m).__dict__,
                            "lesion_type": spec.lesion,
                            "sizes": sizes,
                        }
                    },
                )
                # temporary folders and files are private (0700/0600); a data cache may be shared
                tmp[m].chmod(0o755)
                (tmp[m] / "manifest.json").chmod(0o644)
    return dirs


def verify_manifest(directory: str | os.PathLike) -> None:
    """Check every file listed in ``directory``'s manifest against its sha256 checksum."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    for rel, digest in manifest.get("files", {}).items():
        path = directory / rel
        if not path.is_file():
            raise DataError(f"{directory}: file {rel} of the manifest is missing; delete the folder to regenerate it")
        if sha256_file(path) != digest:
            raise DataError(f"{directory}: checksum of {rel} does not match the manifest; delete the folder to regenerate it")


def write_cohorts(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    modalities: Sequence[str] = MODALITIES,
    cohorts: Sequence[str] = ("healthy", "tumour"),
    scanner: str = DEFAULT_SCANNER,
) -> Path:
    """Write phantom cohorts as NIfTI for viewing; returns the folder holding them.

    The layout is ``<out_dir>/phantom/v<version>/seed<seed>/<cohort>-<modality>/...``; cohorts
    already present are reused. ``modalities`` may include ``"pd"``.
    """
    for c in cohorts:
        get_cohort(c)
    for m in modalities:
        if m not in ALL_MODALITIES:
            raise ConfigError(f"unknown phantom modality {m!r}; available: {', '.join(ALL_MODALITIES)}")
    for c in cohorts:
        ensure_cohort(out_dir, c, seed=seed, sizes=sizes, modalities=modalities, scanner=scanner)
    return phantom_root(out_dir, seed)


def render_preview(
    out_png: str | os.PathLike,
    *,
    seed: int = 0,
    scanner: str = DEFAULT_SCANNER,
    cohorts: Sequence[str] = ("healthy", "tumour", "ms", "stroke"),
    modalities: Sequence[str] = ALL_MODALITIES,
) -> Path:
    """Draw a healthy subject and one subject per lesion type, in every modality, as a PNG.

    Rows are subjects (the first subject of each cohort); columns are modalities (T1w, T2w, PD,
    FLAIR) at the axial slice with the most lesion, outlined in red. Returns ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    scanner_obj = get_scanner(scanner)
    rows = list(cohorts)
    for c in rows:
        get_cohort(c)
    for m in modalities:
        scanner_obj.sequence(m)
    fig, axes = plt.subplots(
        len(rows), len(modalities), figsize=(2.6 * len(modalities), 2.9 * len(rows)), squeeze=False
    )
    for r, cohort in enumerate(rows):
        split = "train" if cohort == "healthy" else "test"
        subject = generate_subject(seed, cohort, split, 0, field_strength=scanner_obj.field_strength)
        mask = subject.lesion_mask
        if mask is not None and mask.any():
            z = int(np.argmax(mask.sum(axis=(0, 1))))
        else:
            z = subject.gm.shape[2] // 2 + 5
        for c, modality in enumerate(modalities):
            image = render(subject, modality, scanner_obj)
            ax = axes[r, c]
            sl = image[:, :, z].T
            hi = np.percentile(image[subject.brain_mask], 99.5)
            ax.imshow(sl, cmap="gray", origin="lower", vmin=0, vmax=hi)
            if mask is not None and mask[:, :, z].any():
                ax.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(modality.upper() if modality != "flair" else "FLAIR")
            if c == 0:
                ax.set_ylabel(f"{cohort}\n{subject.subject_id}", fontsize=8)
    fig.suptitle(f"uadbench phantom v{PHANTOM_VERSION}, seed {seed}, scanner {scanner_obj.name}", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    from uadbench.io_utils import atomic_path

    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png


def time_default_generation(root: str | os.PathLike, seed: int = 0) -> float:
    """Seconds to generate the default healthy and tumour cohorts (three modalities) in ``root``."""
    start = time.perf_counter()
    write_cohorts(root, seed=seed, cohorts=("healthy", "tumour"))
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Calibration measurements
# ---------------------------------------------------------------------------------------------
#: Lesion-to-surrounding-brain ratio ranges the phantom is calibrated to, per lesion type and
#: modality: tumours from BraTS (whole tumour, 1.2-2.3x FLAIR, 1.1-2.1x T2; hypointense on
#: pre-contrast T1), MS lesions from the MSLUB scans measured with :func:`lesion_contrast_ratio`
#: (see :func:`mslub_lesion_ratios`), chronic stroke from its qualitative appearance
#: (T1-hypointense, T2-hyperintense).
CALIBRATION_TARGETS: dict[str, dict[str, tuple[float, float]]] = {
    "tumour": {"flair": (1.2, 2.3), "t2w": (1.1, 2.1), "t1w": (0.6, 1.0)},
    "ms": {"flair": (1.3, 1.6), "t2w": (1.3, 1.6), "t1w": (0.75, 1.05)},
    "stroke": {"flair": (0.8, 1.6), "t2w": (1.3, 3.0), "t1w": (0.4, 0.9)},
}


def phantom_lesion_ratios(
    cohort: str,
    *,
    count: int = 6,
    seed: int = 0,
    split: str = "test",
    modalities: Sequence[str] = MODALITIES,
    scanner: str | Scanner = DEFAULT_SCANNER,
    shell_mm: float = 5.0,
) -> dict[str, list[float]]:
    """Lesion-to-surrounding-brain ratios of ``count`` phantom subjects, per modality."""
    spec = get_cohort(cohort)
    if spec.lesion is None:
        raise ConfigError(f"cohort {cohort!r} has no lesions; choose one of "
                          f"{', '.join(c for c, s in COHORTS.items() if s.lesion)}")
    scanner = get_scanner(scanner)
    out: dict[str, list[float]] = {m: [] for m in modalities}
    for index in range(count):
        subject = generate_subject(seed, cohort, split, index, field_strength=scanner.field_strength)
        for m in modalities:
            image = render(subject, m, scanner)
            out[m].append(lesion_contrast_ratio(image, subject.lesion_mask, subject.brain_mask, shell_mm=shell_mm))
    return out


MSLUB_MODALITIES = {"flair": "FLAIR", "t1w": "T1", "t2w": "T2"}


def mslub_lesion_ratios(folder: str | os.PathLike, shell_mm: float = 5.0) -> dict[str, dict[str, float]]:
    """Lesion-to-surrounding-brain ratios of MNI-registered MSLUB scans, per patient and modality.

    ``folder`` holds ``patientNN_MNI_{FLAIR,T1,T2,GOLD_STANDARD}.nii.gz`` (skull-stripped;
    brain mask = nonzero voxels).
    """
    import nibabel as nib

    folder = Path(folder)
    masks = sorted(folder.glob("*_MNI_GOLD_STANDARD.nii.gz"))
    if not masks:
        raise DataError(f"no MSLUB lesion masks (*_MNI_GOLD_STANDARD.nii.gz) in {folder}")
    out: dict[str, dict[str, float]] = {}
    for mask_path in masks:
        patient = mask_path.name.split("_MNI_")[0]
        lesion = np.asarray(nib.load(str(mask_path)).dataobj) > 0
        out[patient] = {}
        for modality, tag in MSLUB_MODALITIES.items():
            img = nib.load(str(folder / f"{patient}_MNI_{tag}.nii.gz"))
            data = np.asarray(img.dataobj, dtype=np.float32)
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
            out[patient][modality] = lesion_contrast_ratio(data, lesion, data != 0, spacing, shell_mm)
    return out
