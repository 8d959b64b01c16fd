"""Tests of the digital brain phantom (uadbench.data.phantom) and its registered datasets."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from uadbench.data import phantom as ph
from uadbench.data.dataset import create_dataset
from uadbench.data.nifti import read_manifest, sha256_file
from uadbench.data.pipeline import IMAGE_GRIDS, preprocess
from uadbench.errors import ConfigError, DataError, UadbenchError
from uadbench.registry import DATASETS, list_datasets

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
SMALL = {"healthy.train": 2, "healthy.val": 1, "healthy.test": 1, "tumour.val": 1, "tumour.test": 2}
CORE_NAMES = [f"phantom-{c}-{m}" for c in ("healthy", "tumour") for m in ("t1w", "t2w", "flair")]
LESION_COHORTS = ("tumour", "ms", "stroke")


@pytest.fixture(autouse=True)
def _no_size_env(monkeypatch):
    monkeypatch.delenv(ph.SIZES_ENV, raising=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A data root holding the small healthy and tumour cohorts (generated once per module)."""
    path = tmp_path_factory.mktemp("phantom-data")
    ph.write_cohorts(path, seed=0, sizes=SMALL, cohorts=("healthy", "tumour"))
    return path


@pytest.fixture(scope="module")
def ratios(subjects) -> dict[str, dict[str, list[float]]]:
    """Lesion-to-surrounding-brain ratios of two phantom subjects per lesion cohort."""
    out = {}
    for cohort in LESION_COHORTS:
        pair = [subjects[cohort], ph.generate_subject(0, cohort, "test", 1)]
        out[cohort] = {
            m: [ph.lesion_contrast_ratio(ph.render(s, m), s.lesion_mask, s.brain_mask) for s in pair]
            for m in ph.MODALITIES
        }
    return out


@pytest.fixture(scope="module")
def subjects() -> dict[str, ph.PhantomSubject]:
    return {c: ph.generate_subject(0, c, "test", 0) for c in ("healthy", *LESION_COHORTS)}


def _pure_mean(image, subject, tissue) -> float:
    frac = getattr(subject, tissue)
    sel = (frac > 0.9) & subject.brain_mask
    if subject.lesion_mask is not None:
        sel &= ~ndimage.binary_dilation(subject.lesion_mask, iterations=2)
    return float(image[sel].mean())


# -- registry ---------------------------------------------------------------------------------
def test_core_datasets_are_registered_with_descriptions():
    names = list_datasets("phantom-*")
    for name in CORE_NAMES + [f"phantom-{c}-{m}" for c in ("ms", "stroke") for m in ("t1w", "t2w", "flair")]:
        assert name in names
        assert DATASETS.describe(name).startswith("Digital brain phantom")
    healthy = DATASETS.get("phantom-healthy-t2w")
    assert healthy.splits == ("train", "val", "test") and healthy.lesion_splits == ()
    tumour = DATASETS.get("phantom-tumour-flair")
    assert tumour.splits == ("val", "test") and tumour.lesion_splits == ("val", "test")
    assert tumour.modality == "flair"


def test_default_sizes_and_distinct_subjects():
    healthy = create_dataset("phantom-healthy-t1w", root="/nonexistent")
    assert {s: len(healthy.subjects(s)) for s in healthy.splits} == {"train": 24, "val": 6, "test": 6}
    tumour = create_dataset("phantom-tumour-t1w", root="/nonexistent")
    assert {s: len(tumour.subjects(s)) for s in tumour.splits} == {"val": 6, "test": 10}
    ids = [sid for s in healthy.splits for sid in healthy.subjects(s)]
    ids += [sid for s in tumour.splits for sid in tumour.subjects(s)]
    assert len(ids) == len(set(ids))
    with pytest.raises(DataError, match="no split 'train'"):
        tumour.subjects("train")


def test_sizes_from_environment_and_errors(monkeypatch):
    monkeypatch.setenv(ph.SIZES_ENV, "train=3,tumour.test=4")
    assert ph.resolve_sizes("healthy") == {"train": 3, "val": 6, "test": 6}
    assert ph.resolve_sizes("tumour") == {"val": 6, "test": 4}
    ds = create_dataset("phantom-tumour-t2w", root="/nonexistent")
    assert len(ds.subjects("test")) == 4
    assert ph.resolve_sizes("tumour", {"test": 2}) == {"val": 6, "test": 2}
    for bad in ("train", "train=0", "train=x", "banana=3", "mars.test=2"):
        monkeypatch.setenv(ph.SIZES_ENV, bad)
        with pytest.raises(ConfigError):
            ph.resolve_sizes("healthy")
    monkeypatch.delenv(ph.SIZES_ENV)
    with pytest.raises(UadbenchError, match="available"):
        ph.get_scanner("mri-9000")
    with pytest.raises(UadbenchError, match="available"):
        ph.write_cohorts("/nonexistent", modalities=("dwi",))


# -- determinism ------------------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_different_images(subjects):
    again = ph.generate_subject(0, "tumour", "test", 0)
    first = subjects["tumour"]
    for m in ("t1w", "flair"):
        a, b = ph.render(first, m), ph.render(again, m)
        assert a.tobytes() == b.tobytes()
    assert np.array_equal(first.lesion_mask, again.lesion_mask)
    other = ph.generate_subject(1, "tumour", "test", 0)
    assert not np.array_equal(ph.render(other, "t1w"), ph.render(first, "t1w"))
    assert not np.array_equal(other.lesion_mask, first.lesion_mask)


def test_files_are_the_generated_subjects(root, subjects):
    ds = create_dataset("phantom-tumour-t2w", root=root, seed=0)
    ds = type(ds)(root=root, seed=0, sizes=SMALL)
    vol = ds.load("test")[0]
    subject = subjects["tumour"]  # test subject 0, generated in memory
    assert vol.image.tobytes() == ph.render(subject, "t2w").tobytes()
    assert np.array_equal(vol.lesion_mask, subject.lesion_mask)
    assert np.array_equal(vol.brain_mask, subject.brain_mask)


def test_val_and_test_are_different_subjects(root):
    ds = DATASETS.get("phantom-tumour-t1w")(root=root, sizes=SMALL)
    val, test = ds.load("val"), ds.load("test")
    assert not {v.subject_id for v in val} & {v.subject_id for v in test}
    for t in test:
        assert not np.array_equal(val[0].lesion_mask, t.lesion_mask)
        assert not np.array_equal(val[0].image, t.image)


# -- masks and contrast -----------------------------------------------------------------------
@pytest.mark.parametrize("cohort", LESION_COHORTS)
def test_lesion_mask_is_exactly_the_lesion_tissue(subjects, cohort):
    subject = subjects[cohort]
    mask = subject.lesion_mask
    assert mask.sum() > 20
    assert not (mask & ~subject.brain_mask).any(), "lesion outside the brain"
    assert np.array_equal(mask, subject.lesion_labels > 0)
    assert subject.lesion_fraction[mask].min() >= 0.5
    # where the signal differs from the same subject without lesion tissue is exactly the mask
    healthy = replace(subject, lesion_fraction=None, lesion_labels=None)
    for m in ("t1w", "t2w", "flair"):
        seq = ph.SCANNERS[ph.DEFAULT_SCANNER].sequence(m)
        changed = ph.tissue_signals(subject, seq) != ph.tissue_signals(healthy, seq)
        assert not (changed & ~mask).any()
        assert changed[mask].mean() > 0.99


def test_tumour_has_its_compartments(subjects):
    labels = subjects["tumour"].lesion_labels
    counts = np.bincount(labels.ravel(), minlength=4)
    assert counts[1] > 0 and counts[2] > 0 and counts[3] > counts[1]


@pytest.mark.parametrize("scanner", sorted(ph.SCANNERS))
def test_contrast_ordering_per_sequence(subjects, scanner):
    field = ph.SCANNERS[scanner].field_strength
    s = subjects["healthy"] if field == 3.0 else ph.generate_subject(0, "healthy", "test", 0, field_strength=field)
    mean = {m: {t: _pure_mean(ph.render(s, m, scanner), s, t) for t in ("wm", "gm", "csf")} for m in ph.ALL_MODALITIES}
    t1, t2, pd, fl = mean["t1w"], mean["t2w"], mean["pd"], mean["flair"]
    assert t1["wm"] > t1["gm"] > t1["csf"]
    assert t2["csf"] > t2["gm"] > t2["wm"]
    assert pd["gm"] > pd["wm"] and pd["csf"] > 0.8 * pd["wm"]
    assert fl["csf"] < 0.5 * min(fl["wm"], fl["gm"])
    if field == 3.0:
        for cohort in LESION_COHORTS:
            subject = subjects[cohort]
            image = ph.render(subject, "flair", scanner)
            assert image[subject.lesion_mask].mean() > _pure_mean(image, subject, "wm")


def test_signal_equations_match_closed_form():
    se = ph.PulseSequence("se", tr=500.0, te=10.0)
    assert se.signal(1000.0, 80.0, 0.7) == pytest.approx(0.7 * (1 - np.exp(-0.5)) * np.exp(-0.125))
    ir = ph.PulseSequence("ir", tr=9000.0, te=120.0, ti=2500.0)
    assert ir.signal(800.0, 100.0, 0.9) == pytest.approx(
        0.9 * abs(1 - 2 * np.exp(-2500 / 800) + np.exp(-9000 / 800)) * np.exp(-1.2)
    )
    # FLAIR's inversion time nulls CSF: its signal is a few percent of white matter's at most
    for scanner in ph.SCANNERS.values():
        tissues = ph.HEALTHY_TISSUES[scanner.field_strength]
        flair = scanner.sequence("flair")
        csf, wm = (flair.signal(tissues[t].t1, tissues[t].t2, tissues[t].pd) for t in ("csf", "wm"))
        assert csf < 0.05 * wm


# -- calibration ------------------------------------------------------------------------------
def test_lesion_contrast_ratio_against_brute_force():
    rng = np.random.default_rng(0)
    image = rng.uniform(1.0, 2.0, size=(20, 18, 16))
    brain = np.zeros(image.shape, bool)
    brain[2:18, 2:16, 2:14] = True
    lesion = np.zeros(image.shape, bool)
    lesion[8:11, 7:10, 6:9] = True
    spacing = (1.0, 1.5, 2.0)
    pts = np.argwhere(lesion) * spacing
    grid = np.argwhere(np.ones(image.shape, bool))
    dist = np.min(np.linalg.norm((grid * spacing)[:, None, :] - pts[None], axis=2), axis=1).reshape(image.shape)
    shell = (dist > 0) & (dist <= 3.0) & brain
    expected = image[lesion].mean() / image[shell].mean()
    assert ph.lesion_contrast_ratio(image, lesion, brain, spacing, 3.0) == pytest.approx(expected)
    assert np.isnan(ph.lesion_contrast_ratio(image, np.zeros_like(lesion), brain))


@pytest.mark.parametrize("cohort", LESION_COHORTS)
def test_lesion_ratios_within_calibrated_ranges(ratios, cohort):
    ratios = ratios[cohort]
    for modality, values in ratios.items():
        lo, hi = ph.CALIBRATION_TARGETS[cohort][modality]
        mean = float(np.mean(values))
        assert lo <= mean <= hi, f"{cohort} {modality}: mean ratio {mean:.2f} outside [{lo}, {hi}]"
    if cohort == "tumour":  # the public helper measures the same thing
        assert ph.phantom_lesion_ratios("tumour", count=1, modalities=("flair",))["flair"][0] == ratios["flair"][0]
        with pytest.raises(ConfigError, match="no lesions"):
            ph.phantom_lesion_ratios("healthy")
    if cohort != "stroke":  # stroke cores are fluid-like and dark on FLAIR; the rim is bright
        assert min(ratios["flair"]) > 1.2 and min(ratios["t2w"]) > 1.1


@pytest.mark.realdata
def test_ms_calibration_against_mslub(ratios):
    folder = REALDATA / "mslub"
    if not folder.is_dir():
        pytest.skip(f"real MSLUB scans not found at {folder} (they live beside the project in ../shared/realdata)")
    real = ph.mslub_lesion_ratios(folder)
    assert len(real) >= 1
    phantom = ratios["ms"]
    for modality in ("flair", "t2w", "t1w"):
        real_mean = float(np.mean([r[modality] for r in real.values()]))
        ph_mean = float(np.mean(phantom[modality]))
        # real lesions are brighter on FLAIR/T2 and not brighter on T1; the phantom agrees within 15 %
        assert abs(ph_mean / real_mean - 1.0) < 0.15, f"{modality}: phantom {ph_mean:.2f} vs MSLUB {real_mean:.2f}"


# -- files, manifest, concurrency -------------------------------------------------------------
def test_manifest_checksums_match_files(root, tmp_path):
    base = ph.phantom_root(root, 0)
    dirs = sorted(p for p in base.iterdir() if p.is_dir())
    assert {d.name for d in dirs} == {f"{c}-{m}-" + "-".join(f"{s}{n}" for s, n in ph.resolve_sizes(c, SMALL).items())
                                      for c in ("healthy", "tumour") for m in ph.MODALITIES}
    for d in dirs:
        manifest = read_manifest(d)
        files = sorted(str(p.relative_to(d)) for p in d.rglob("*.nii.gz"))
        assert sorted(manifest["files"]) == files
        for rel, digest in manifest["files"].items():
            assert sha256_file(d / rel) == digest
        assert manifest["phantom"]["version"] == ph.PHANTOM_VERSION
    broken = tmp_path / "broken"
    shutil.copytree(dirs[0], broken)
    victim = next(broken.rglob("*_image.nii.gz"))
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(DataError, match="checksum"):
        ph.verify_manifest(broken)


def test_concurrent_generation_is_safe(tmp_path):
    sizes = {"val": 1, "test": 1}

    def make(_):
        return ph.ensure_cohort(tmp_path, "tumour", seed=3, sizes=sizes, modalities=("t2w",))

    with ThreadPoolExecutor(2) as pool:
        a, b = list(pool.map(make, range(2)))
    assert a == b
    parent = a["t2w"].parent
    leftovers = [p.name for p in parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    ph.verify_manifest(a["t2w"])
    assert json.loads((a["t2w"] / "manifest.json").read_text())["splits"] == {
        "val": ["tumour-val-000"], "test": ["tumour-test-000"]
    }


# -- datasets and the pipeline ----------------------------------------------------------------
@pytest.mark.parametrize("name", CORE_NAMES)
def test_registered_datasets_load_and_preprocess(root, name):
    ds = DATASETS.get(name)(root=root, seed=0, sizes=SMALL)
    assert name in ds.fingerprint() and "seed=0" in ds.fingerprint()
    grid = IMAGE_GRIDS["cpu"]
    for split in ds.splits:
        volumes = ds.load(split)
        assert [v.subject_id for v in volumes] == ds.subjects(split)
        for vol in volumes:
            assert vol.shape == (99, 117, 95) and vol.spacing == (2.0, 2.0, 2.0)
            assert (vol.image[~vol.brain_mask] == 0).all() and vol.image[vol.brain_mask].mean() > 0
            if ds.has_lesions(split):
                assert vol.lesion_mask is not None and vol.lesion_mask.any()
                assert not (vol.lesion_mask & ~vol.brain_mask).any()
            else:
                assert vol.lesion_mask is None
        out = preprocess(volumes[0], grid)
        assert out.shape == grid.shape
        assert 0.0 <= out.image.min() and out.image.max() <= 1.0
        if ds.has_lesions(split):
            assert out.lesion_mask.any(), "the lesion must survive the centre crop of the cpu grid"


def test_modalities_of_a_cohort_share_subjects(root):
    t1 = DATASETS.get("phantom-tumour-t1w")(root=root, sizes=SMALL).load("val")[0]
    fl = DATASETS.get("phantom-tumour-flair")(root=root, sizes=SMALL).load("val")[0]
    assert t1.subject_id == fl.subject_id
    assert np.array_equal(t1.brain_mask, fl.brain_mask)
    assert np.array_equal(t1.lesion_mask, fl.lesion_mask)
    assert not np.array_equal(t1.image, fl.image)


def test_render_preview_and_write_cohorts_for_viewing(tmp_path):
    png = ph.render_preview(tmp_path / "preview.png", seed=0, cohorts=("tumour",), modalities=("t2w", "pd"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = ph.write_cohorts(tmp_path / "view", seed=2, sizes={"val": 1, "test": 1}, modalities=("pd",), cohorts=("ms",))
    folder = out / "ms-pd-val1-test1"
    ph.verify_manifest(folder)
    assert sorted(p.name for p in (folder / "val").iterdir()) == [
        "ms-val-000_brainmask.nii.gz", "ms-val-000_image.nii.gz", "ms-val-000_lesion.nii.gz"
    ]
