"""Lesions of the digital brain phantom: tumours, multiple-sclerosis lesions and strokes.

Each lesion type is planned before the subject's anatomy is warped (a tumour's centre and its
mass effect enter the deformation) and inserted afterwards in the subject's own space. A lesion
replaces the healthy tissue of a voxel by a fraction ``f`` of lesion tissue; ``f`` is 0 outside
the lesion and at least 0.5 inside (partial volume only at the lesion border), so the lesion
mask, ``f > 0``, is exactly where lesion tissue is. Lesions are confined to the brain mask and
kept out of CSF-filled voxels (ventricles, large sulci).

Lesion tissues have their own T1, T2 and PD, so their contrast follows each sequence:

- tumour (glioma-like): a necrotic core (fluid-like: long T1 and T2), an enhancing rim
  (cellular tumour; the phantom images are pre-contrast, so it is only moderately T1- and
  T2-prolonged) and vasogenic oedema (raised water content: long T1 and T2), which spreads
  preferentially along white matter. The tumour pushes the surrounding anatomy away (a radial
  expansion in the deformation).
- MS: several small ovoid lesions, periventricular (elongated along the direction away from the
  ventricles, as Dawson's fingers) and in deep white matter; mildly prolonged T1 and T2 with a
  raised water content, so that they are bright on T2w/FLAIR and nearly isointense on T1w.
- stroke (chronic): a wedge from the cortex inwards (a territorial infarct) with a fluid-like
  core (encephalomalacia: T1-hypo, T2-hyper, dark on FLAIR) and a gliotic rim (bright on FLAIR).

Values are set from qualitative descriptions of these lesions (longer T1/T2 and higher water
content than normal-appearing tissue) and calibrated with
:func:`uadbench.data.phantom.calibration.lesion_contrast_ratio` against published or measured
lesion-to-brain ratios (see :mod:`uadbench.data.phantom.physics` and
:data:`uadbench.data.phantom.calibration.CALIBRATION_TARGETS`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from uadbench.data.phantom.anatomy import SPACING_MM, Anatomy, load_anatomy
from uadbench.data.phantom.physics import TissueParams
from uadbench.data.phantom.subject import Expansion, PhantomSubject, jitter_tissues, smooth_field
from uadbench.errors import ConfigError

#: Lesion tissue parameters per field strength (ms, ms, water fraction).
LESION_TISSUES: dict[float, dict[str, TissueParams]] = {
    1.5: {
        "tumour_necrosis": TissueParams(1900.0, 500.0, 0.92),
        "tumour_enhancing": TissueParams(1325.0, 155.0, 0.82),
        "tumour_oedema": TissueParams(1675.0, 255.0, 0.86),
        "ms_lesion": TissueParams(1500.0, 150.0, 0.80),
        "stroke_core": TissueParams(3600.0, 1100.0, 0.97),
        "stroke_gliosis": TissueParams(1600.0, 250.0, 0.84),
    },
    3.0: {
        "tumour_necrosis": TissueParams(2400.0, 400.0, 0.92),
        "tumour_enhancing": TissueParams(1700.0, 120.0, 0.82),
        "tumour_oedema": TissueParams(2000.0, 185.0, 0.80),
        "ms_lesion": TissueParams(1800.0, 125.0, 0.81),
        "stroke_core": TissueParams(3600.0, 1000.0, 0.97),
        "stroke_gliosis": TissueParams(2000.0, 170.0, 0.84),
    },
}
# The 3 T values were calibrated first (measured ratios against CALIBRATION_TARGETS in
# uadbench.data.phantom.calibration); the 1.5 T values were fitted so that each lesion tissue's signal
# relative to white matter on the 1.5 T protocol matches its 3 T ratio, then the MS values were
# adjusted once more against the measured ratios.

LESION_TYPES: tuple[str, ...] = ("tumour", "ms", "stroke")

# Lesion centres stay within this many voxels of the volume's axial centre, so they fall inside
# the evaluation field of view after the pipeline's centre crop (96 mm at the cpu grid).
Z_HALF_RANGE = 8


@dataclass
class LesionPlan:
    """What is decided before warping: the lesion type, centres and the deformation it causes."""

    kind: str
    centres: list[np.ndarray] = field(default_factory=list)
    radius_mm: float = 0.0
    expansions: list[Expansion] = field(default_factory=list)
    needs_ventricle_distance: bool = False


@functools.lru_cache(maxsize=1)
def _brain_depth() -> np.ndarray:
    """Distance (mm) from each template voxel to the outside of the brain."""
    anatomy = load_anatomy()
    return ndimage.distance_transform_edt(anatomy.brain > 0, sampling=SPACING_MM).astype(np.float32)


def _slab(shape) -> np.ndarray:
    z = np.arange(shape[2])
    return np.abs(z - (shape[2] - 1) / 2.0) <= Z_HALF_RANGE


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(candidates)
    if idx.size == 0:  # pragma: no cover - the template always has candidates
        raise RuntimeError("phantom: no voxel qualifies as a lesion centre")
    return np.array(np.unravel_index(idx[rng.integers(idx.size)], candidates.shape), dtype=np.float64)


def plan_lesions(kind: str, rng: np.random.Generator, anatomy: Anatomy) -> LesionPlan:
    if kind not in LESION_TYPES:
        raise ConfigError(f"unknown lesion type {kind!r}; available: {', '.join(LESION_TYPES)}")
    shape = anatomy.shape
    slab = _slab(shape)[None, None, :]
    if kind == "tumour":
        radius = float(rng.uniform(18.0, 32.0))
        depth = _brain_depth()
        candidates = (anatomy.wm >= 0.6) & (depth >= 0.7 * radius) & slab
        centre = _pick(rng, candidates)
        sigma = np.full(3, 0.9 * radius / SPACING_MM)
        mass = Expansion(centre=centre, sigma=sigma, strength=float(rng.uniform(0.10, 0.25)))
        return LesionPlan("tumour", [centre], radius, [mass])
    if kind == "stroke":
        depth = _brain_depth()
        x = np.arange(shape[0])[:, None, None]
        lateral = np.abs(x - anatomy.ventricle_centre[0]) * SPACING_MM >= 25.0
        candidates = (anatomy.gm >= 0.4) & (depth <= 8.0) & (depth >= 2.0) & lateral & slab
        centre = _pick(rng, candidates)
        return LesionPlan("stroke", [centre], float(rng.uniform(10.0, 18.0)))
    return LesionPlan("ms", needs_ventricle_distance=True)


def _box(centre: np.ndarray, half_mm: float, shape) -> tuple[slice, ...]:
    half = int(np.ceil(half_mm / SPACING_MM)) + 2
    c = np.round(centre).astype(int)
    return tuple(slice(max(0, int(ci) - half), min(n, int(ci) + half + 1)) for ci, n in zip(c, shape))


def _offsets_mm(box: tuple[slice, ...], centre: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float64) for s in box], indexing="ij")
    return np.stack([(g - c) * SPACING_MM for g, c in zip(grids, centre)])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid_radius(d: np.ndarray, rotation: np.ndarray, axes: np.ndarray) -> np.ndarray:
    local = np.einsum("ji,j...->i...", rotation, d)  # coordinates in the ellipsoid's frame
    return np.sqrt(sum((local[i] / axes[i]) ** 2 for i in range(3)))


def _local_field(rng: np.random.Generator, shape, scale_mm: float) -> np.ndarray:
    control = [max(3, int(round(n * SPACING_MM / scale_mm))) for n in shape]
    return smooth_field(rng, shape, control)


def _edge_fraction(inside: np.ndarray, width: float) -> np.ndarray:
    """Lesion fraction from a signed 'insideness' (>0 inside, in voxels of partial volume)."""
    f = np.clip(0.5 + inside / width, 0.0, 1.0)
    f[f < 0.5] = 0.0
    return f


def insert_lesions(
    subject: PhantomSubject,
    plan: LesionPlan,
    rng: np.random.Generator,
    *,
    field_strength: float,
    ventricle_distance: np.ndarray | None = None,
) -> None:
    """Add the planned lesions to ``subject`` (in place): fractions, labels, tissue parameters."""
    shape = subject.gm.shape
    fraction = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    allowed = subject.brain_mask & (subject.csf < 0.6)
    if plan.kind == "tumour":
        _tumour(subject, plan, rng, fraction, labels, allowed)
    elif plan.kind == "ms":
        assert ventricle_distance is not None
        _ms(subject, rng, fraction, labels, allowed, ventricle_distance)
    else:
        _stroke(subject, plan, rng, fraction, labels, allowed)
    fraction[~allowed] = 0.0
    labels[fraction == 0] = 0
    subject.lesion_fraction = fraction
    subject.lesion_labels = labels
    subject.lesion_type = plan.kind
    # lesion tissue is not uniform: a smooth +-8 % heterogeneity (features of about 6 mm)
    control = [max(3, int(round(n * SPACING_MM / 6.0))) for n in shape]
    subject.lesion_texture = np.clip(1.0 + 0.08 * smooth_field(rng, shape, control), 0.7, 1.3).astype(np.float32)
    if field_strength not in LESION_TISSUES:
        raise ConfigError(f"no lesion tissue parameters at {field_strength} T; available: {sorted(LESION_TISSUES)}")
    subject.tissues.update(jitter_tissues(rng, LESION_TISSUES[field_strength], 0.03))
    subject.meta["lesion_voxels"] = int((fraction > 0).sum())


def _tumour(subject, plan, rng, fraction, labels, allowed) -> None:
    centre = plan.centres[0]
    radius = plan.radius_mm
    box = _box(centre, 1.6 * radius, fraction.shape)
    d = _offsets_mm(box, centre)
    rotation = _random_rotation(rng)
    axes_outer = radius * rng.uniform(0.8, 1.2, size=3)
    core_scale = rng.uniform(0.45, 0.65)  # tumour core radius relative to the oedema
    axes_core = axes_outer * core_scale * rng.uniform(0.85, 1.15, size=3)
    rho_core = _ellipsoid_radius(d, rotation, axes_core)
    rho_core = rho_core * (1.0 + 0.18 * _local_field(rng, rho_core.shape, 10.0))
    rho_oed = _ellipsoid_radius(d, rotation, axes_outer)
    wm = subject.wm[box]
    rho_oed = rho_oed * (1.0 + 0.22 * _local_field(rng, rho_oed.shape, 8.0)) - 0.25 * (wm - 0.5)
    necrosis = rng.uniform(0.35, 0.65)  # necrotic core radius relative to the tumour core
    # partial-volume width in units of the normalised radius: one voxel
    width_core = SPACING_MM / float(axes_core.mean())
    width_oed = SPACING_MM / float(axes_outer.mean())
    inside = np.maximum((1.0 - rho_core) / width_core, (1.0 - rho_oed) / width_oed)
    f = _edge_fraction(inside, 1.0)
    lab = np.where(rho_core < necrosis, 1, np.where(rho_core < 1.0, 2, 3)).astype(np.uint8)
    f *= allowed[box]
    # one connected tumour: drop islands the irregular oedema border may leave behind
    components, n = ndimage.label(f > 0)
    if n > 1:
        sizes = ndimage.sum(f > 0, components, index=np.arange(1, n + 1))
        f[components != 1 + int(np.argmax(sizes))] = 0.0
    fraction[box] = f
    labels[box] = np.where(f > 0, lab, 0)


def _ms(subject, rng, fraction, labels, allowed, ventricle_distance) -> None:
    shape = fraction.shape
    slab = _slab(shape)[None, None, :]
    peri = (subject.wm >= 0.5) & (ventricle_distance >= 3.0) & (ventricle_distance <= 10.0) & slab & allowed
    deep = (subject.wm >= 0.8) & (ventricle_distance > 12.0) & slab & allowed
    count = int(rng.integers(5, 15))
    vent_c = load_anatomy().ventricle_centre
    for _ in range(count):
        periventricular = rng.random() < 0.6
        centre = _pick(rng, peri if periventricular else deep)
        a = rng.uniform(2.5, 5.5)
        axes = np.array([a * rng.uniform(1.2, 1.8), a, a * rng.uniform(0.8, 1.0)])
        if periventricular:
            radial = (centre - vent_c) * SPACING_MM
            radial /= np.linalg.norm(radial) + 1e-9
            helper = np.array([0.0, 0.0, 1.0]) if abs(radial[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
            second = np.cross(radial, helper)
            second /= np.linalg.norm(second)
            rotation = np.stack([radial, second, np.cross(radial, second)], axis=1)
        else:
            rotation = _random_rotation(rng)
        box = _box(centre, 1.3 * float(axes.max()), shape)
        d = _offsets_mm(box, centre)
        rho = _ellipsoid_radius(d, rotation, axes)
        rho = rho * (1.0 + 0.08 * _local_field(rng, rho.shape, 6.0))
        f = _edge_fraction((1.0 - rho) / (SPACING_MM / float(axes.mean())), 1.0)
        fraction[box] = np.maximum(fraction[box], f)
        labels[box] = np.where(fraction[box] > 0, 4, labels[box])


def _stroke(subject, plan, rng, fraction, labels, allowed) -> None:
    shape = fraction.shape
    surface = plan.centres[0]
    r0 = plan.radius_mm
    depth = float(rng.uniform(20.0, 35.0))
    brain_c = np.array(ndimage.center_of_mass(subject.brain_mask))
    outward = (surface - brain_c) * SPACING_MM
    outward /= np.linalg.norm(outward)
    box = _box(surface, depth + r0 + 6.0, shape)
    d = _offsets_mm(box, surface)
    t = -np.einsum("i,i...->...", outward, d)  # depth below the cortical point, mm
    perp = np.sqrt(np.maximum((d**2).sum(axis=0) - t**2, 0.0))
    allow_r = r0 * (1.0 - 0.6 * np.clip(t / depth, 0.0, 1.0)) * (1.0 + 0.2 * _local_field(rng, t.shape, 10.0))
    region = (t >= -8.0) & (t <= depth * (1.0 + 0.1 * _local_field(rng, t.shape, 12.0))) & (perp <= allow_r)
    region &= allowed[box]
    # keep the component connected to the cortical point's neighbourhood
    lab, n = ndimage.label(region)
    if n > 1:
        sizes = ndimage.sum(region, lab, index=np.arange(1, n + 1))
        region = lab == (1 + int(np.argmax(sizes)))
    inner = ndimage.distance_transform_edt(region, sampling=SPACING_MM)
    rim_mm = float(rng.uniform(3.0, 5.0))
    f = np.where(region, np.where(inner <= SPACING_MM, 0.75, 1.0), 0.0).astype(np.float32)
    lab_box = np.where(inner > rim_mm, 5, 6).astype(np.uint8)
    fraction[box] = f
    labels[box] = np.where(f > 0, lab_box, 0)
