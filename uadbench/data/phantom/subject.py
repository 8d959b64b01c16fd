"""Phantom subjects: cohorts and ids, random streams, smooth fields, warps and tissue jitter.

Each subject is the template pulled through its own smooth deformation: a small random affine
(±3 degrees, ±3 % scale, ±3 mm shift), a smooth random displacement field (a few mm) and a
radial expansion or shrinkage around the lateral ventricles (ventricle size). Tissue relaxation
times and proton density are jittered per subject. Every random draw comes from a
``numpy.random.Generator`` seeded from (seed, cohort, split, subject index), so the same seed
gives the same bytes and distinct splits hold distinct subjects.

This module holds the pieces; :func:`uadbench.data.phantom.synthesis.generate_subject` puts them
together with the lesions of :mod:`uadbench.data.phantom.lesions`.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from uadbench.data.phantom.anatomy import SPACING_MM, load_anatomy
from uadbench.data.phantom.physics import TissueParams
from uadbench.errors import ConfigError


# ---------------------------------------------------------------------------------------------
# Cohorts and subject ids
# ---------------------------------------------------------------------------------------------
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


def near_template_brain(coords: np.ndarray) -> np.ndarray:
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


def jitter_tissues(rng: np.random.Generator, base: Mapping[str, TissueParams], rel: float) -> dict[str, TissueParams]:
    """``base`` with T1, T2 and PD each scaled by ``1 + rel * N(0, 1)``, clipped to ±3 ``rel`` (PD <= 1)."""
    out = {}
    for name, p in base.items():
        f = np.clip(1.0 + rel * rng.standard_normal(3), 1.0 - 3 * rel, 1.0 + 3 * rel)
        out[name] = TissueParams(p.t1 * f[0], p.t2 * f[1], min(1.0, p.pd * f[2]))
    return out

