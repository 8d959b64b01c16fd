"""A phantom subject from its seed to its images.

:func:`generate_subject` builds one subject: the template (:mod:`.anatomy`) pulled through the
subject's warp (:mod:`.subject`), with the lesions of its cohort planned before the warp and
inserted after it (:mod:`.lesions`). :func:`render` turns a subject into the image of one
modality on one scanner (:mod:`.physics`): noise-free tissue signals, a smooth bias field and
Rician noise, skull-stripped. :func:`to_volume` wraps an image as a :class:`Volume`.
"""

from __future__ import annotations

import numpy as np

from uadbench.data.phantom.anatomy import SPACING_MM, load_anatomy
from uadbench.data.phantom.lesions import insert_lesions, plan_lesions
from uadbench.data.phantom.physics import DEFAULT_SCANNER, HEALTHY_TISSUES, PulseSequence, Scanner, get_scanner
from uadbench.data.phantom.subject import (
    LESION_LABELS,
    Expansion,
    PhantomSubject,
    get_cohort,
    jitter_tissues,
    near_template_brain,
    sample_warp,
    smooth_field,
    subject_id,
    subject_rng,
    warp,
)
from uadbench.data.volume import Volume
from uadbench.errors import ConfigError


def generate_subject(
    seed: int,
    cohort: str,
    split: str,
    index: int,
    *,
    field_strength: float = 3.0,
) -> PhantomSubject:
    """Build one subject of ``cohort`` (deterministic in its arguments)."""
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
        plan = plan_lesions(spec.lesion, lesion_rng, anatomy)
        expansions.extend(plan.expansions)
    coords = sample_warp(rng, shape, expansions=expansions)
    brain_frac = warp(anatomy.brain, coords, where=near_template_brain(coords))
    brain = brain_frac >= 0.5
    gm = warp(anatomy.gm, coords, where=brain)
    wm = warp(anatomy.wm, coords, where=brain)
    csf = warp(anatomy.csf, coords, where=brain)
    if field_strength not in HEALTHY_TISSUES:
        raise ConfigError(
            f"no tissue parameters at {field_strength} T; available: {sorted(HEALTHY_TISSUES)}"
        )
    tissues = jitter_tissues(rng, HEALTHY_TISSUES[field_strength], 0.03)
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
        insert_lesions(
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
