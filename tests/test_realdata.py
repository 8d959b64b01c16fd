"""End to end on the real scans in ../shared/realdata, through the CLI as a user runs it:

1. ``uadbench prepare ixi-t1``: the 40 IXI T1 heads (2 mm, native space, not stripped), masks from
   their DLMUSE parcellations, affine registration to the MNI152 brain, crop, N4;
2. ``uadbench prepare mslub-t1``: the 3 MSLUB patients, skull-stripped and N4-corrected by their
   release (those steps are skipped) and registered there to FSL's MNI152, which is not nilearn's
   ICBM 2009a brain: registered to it as the IXI scans are (the family's default; similarity to
   the template 0.21-0.26 without, 0.34-0.59 with), then cropped;
3. ``uadbench run``: thresh (inverted: T1 lesions are dark) and ae on the ``cpu`` grid, trained on
   IXI T1 (26 train / 3 val / 11 test) and evaluated on MSLUB T1 (1 val / 2 test);
4. the public API on the fitted ae: one MSLUB patient's map, on the grid and back in the native
   space of the scan it was read from (the prepared file), and threshold cross-fitting over the 3
   patients.

The tests skip, saying why, where ../shared/realdata is absent (a fresh clone). They take a few
minutes (the IXI preparation is most of it), so ``.ci/run`` runs them as a step of their own
(``pytest -m realdata``). With ``UADBENCH_REALDATA_DEMO=DIR`` the prepared data, the run and PNGs
of a patient's map (grid and native space) are kept in DIR.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from uadbench.cli import main

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
GRID = """
name = "realdata-ixi-mslub-t1"
description = "Real scans: train on the 40-subject IXI T1 sample, evaluate on the 3 MSLUB T1 patients"
image_grid = "cpu"
seeds = [0]
train_dataset = "ixi-t1"

[[methods]]
name = "thresh"
label = "thresh-inverted"
overrides = { invert = true }   # T1 lesions are dark

[[methods]]
name = "ae"
preset = "cpu"
overrides = { steps = 300 }

[[methods]]
name = "fpi"        # a synthetic-anomaly method
preset = "cpu"
overrides = { steps = 300 }

[[methods]]
name = "ddpm"
preset = "cpu"

[[methods]]
name = "anoddpm"    # a reverse chain on the ddpm fit above
preset = "cpu"

[[methods]]
name = "thor"       # a guided reverse chain on the same fit
preset = "cpu"

[[methods]]
name = "maediff"
preset = "cpu"

[[methods]]
name = "synomaly"
preset = "cpu"

[[datasets]]
name = "mslub-t1"
"""

pytestmark = pytest.mark.realdata


def _require(sub: str) -> Path:
    path = REALDATA / sub
    if not path.is_dir():
        print(f"skipping: {path} is absent (the real samples live in ../shared/realdata beside the repository)")
        pytest.skip(f"{path} is absent (real samples live in ../shared/realdata beside the repository)")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    demo = os.environ.get("UADBENCH_REALDATA_DEMO")
    if demo:
        Path(demo).mkdir(parents=True, exist_ok=True)
        return Path(demo)
    return tmp_path_factory.mktemp("realdata")


@pytest.fixture(scope="module")
def prepared(workdir) -> dict:
    ixi, mslub = _require("ixi_t1"), _require("mslub")
    out = workdir / "data"
    seconds = {}
    for dataset, raw, extra in (("ixi-t1", ixi, ["--workers", "2"]), ("mslub-t1", mslub, [])):
        start = time.perf_counter()
        assert main(["prepare", dataset, "--raw", str(raw), "--out", str(out), *extra]) == 0
        seconds[dataset] = time.perf_counter() - start
    return {"out": out, "seconds": seconds}


def _entries(out: Path, family: str) -> dict:
    return json.loads((out / family / "prepare-manifest.json").read_text())["entries"]


def test_prepare_ixi_and_mslub(prepared, capsys):
    out = prepared["out"]
    ixi, mslub = _entries(out, "ixi"), _entries(out, "mslub")
    assert len(ixi) == 40 and len(mslub) == 3
    for key, entry in {**ixi, **mslub}.items():
        fp = entry["fingerprint"]
        assert 900 < fp["brain_volume_ml"] < 2600, key  # MNI-sized brains (the template is ~10 % larger than most)
        assert fp["spacing_mm"] == [1.0, 1.0, 1.0]
        p = fp["intensity_percentiles"]
        assert p["p1"] <= p["p50"] <= p["p99"]
        for info in entry["files"].values():
            assert (out / ("ixi" if key.startswith("ixi") else "mslub") / info["path"]).is_file()
    ncc_ixi = [e["fingerprint"]["registration"]["ncc"] for e in ixi.values()]
    ncc_ms = [e["fingerprint"]["registration"]["ncc"] for e in mslub.values()]
    assert all(e["fingerprint"]["registration"]["registered"] for e in ixi.values())
    assert all(e["fingerprint"]["registration"]["registered"] for e in mslub.values())
    assert min(ncc_ixi) > 0.4 and min(ncc_ms) > 0.25
    assert all(e["fingerprint"]["lesion_volume_ml"] > 1 for e in mslub.values())
    # the adapters read what prepare wrote, with the sample's split sizes
    from uadbench.data.dataset import create_dataset

    ixi_ds = create_dataset("ixi-t1", directory=out / "ixi")
    assert [len(ixi_ds.subjects(s)) for s in ("train", "val", "test")] == [26, 3, 11]
    assert ixi_ds.subject_info("test")  # participants.csv came along
    ms_ds = create_dataset("mslub-t1", directory=out / "mslub")
    assert [len(ms_ds.subjects(s)) for s in ("val", "test")] == [1, 2]
    # a rerun skips everything
    start = time.perf_counter()
    assert main(["prepare", "mslub-t1", "--raw", str(REALDATA / "mslub"), "--out", str(out)]) == 0
    assert "prepared 0, already prepared 3" in capsys.readouterr().out
    rerun = time.perf_counter() - start
    per_subject = [e["seconds"] for e in ixi.values()]
    with capsys.disabled():
        print(f"\nprepare ixi-t1: {prepared['seconds']['ixi-t1']:.0f} s for 40 subjects with 2 workers "
              f"({np.mean(per_subject):.1f} s per subject in a worker, {min(per_subject):.1f}-{max(per_subject):.1f}); "
              f"mslub-t1: {prepared['seconds']['mslub-t1']:.1f} s for 3; rerun {rerun:.1f} s")
        print(f"similarity to the MNI152 brain (ncc): IXI {min(ncc_ixi):.3f}-{max(ncc_ixi):.3f} (median {np.median(ncc_ixi):.3f}), "
              f"MSLUB {min(ncc_ms):.3f}-{max(ncc_ms):.3f}")


@pytest.fixture(scope="module")
def grid_run(prepared, workdir) -> Path:
    grid = workdir / "realdata.toml"
    grid.write_text(GRID)
    run_dir = workdir / "run"
    assert main(["run", str(grid), "--out", str(run_dir), "--data-root", str(prepared["out"]), "--no-tracking", "--workers", "2"]) == 0
    return run_dir


def test_grid_trains_on_ixi_and_evaluates_on_mslub(grid_run, capsys):
    from uadbench.records import read_records

    records = read_records(grid_run / "results.jsonl")
    assert sorted(r.label for r in records) == ["ae", "anoddpm", "ddpm", "fpi", "maediff", "synomaly", "thor", "thresh-inverted"]
    assert {(r.dataset, r.shift) for r in records} == {("mslub-t1", "none")}
    for r in records:
        assert r.train_dataset == "ixi-t1" and len(r.per_volume) == 2 + 11  # 2 MSLUB test patients, 11 healthy IXI test scans
        for name in ("auprc", "auroc", "dice@val-bisection", "dice@oracle", "dice@healthy-fpr@5%"):
            assert math.isfinite(r.metrics[name]), (r.label, name)
        assert r.thresholds["val-bisection"]["source"] == "mslub-t1/val (1 volumes)"
        assert r.subject_ids.startswith("hmac-sha256:") and all(s.startswith("sub-") for s in r.per_volume)  # pseudonyms by default
    written = (grid_run / "results.jsonl").read_text() + (grid_run / "leaderboard.md").read_text()
    assert "IXI" not in written and "patient" not in written  # no subject id leaves the run
    passes = {r.label: r.cost.get("network_passes") for r in records}
    assert passes["anoddpm"] == passes["thor"] == 8 and passes["fpi"] is None  # the chain's cost: passes per slice
    with capsys.disabled():
        print("\n" + (grid_run / "leaderboard.md").read_text())
        print("seconds per volume: " + ", ".join(f"{r.label} {r.cost['seconds_per_volume']:.2f}" for r in records))


def test_the_edition_has_subgroup_tables_and_no_subject_id(grid_run, workdir, capsys):
    edition = workdir / "edition"
    assert main(["leaderboard", str(grid_run / "results.jsonl"), "--publish", str(edition)]) == 0
    readme = (edition / "README.md").read_text()
    assert "Subgroups" in readme or "subgroups" in readme
    tables = (edition / "leaderboard.md").read_text()
    assert "sex" in tables and ("<40" in tables or "40-59" in tables or ">=60" in tables)  # IXI's participants: sex and age
    for path in edition.rglob("*"):
        if path.is_file() and path.suffix in {".md", ".html", ".csv", ".tex", ".json", ".jsonl", ".gz"}:
            text = path.read_bytes()
            assert b"IXI" not in text and b"patient" not in text, path  # pseudonyms only
    with capsys.disabled():
        print("\n" + tables[tables.find("sex"):][:1500])


def test_public_api_maps_a_patient_on_the_grid_and_in_native_space(prepared, grid_run, workdir):
    import nibabel as nib

    import uadbench
    from uadbench.data.geometry import to_native
    from uadbench.records import Pseudonyms

    fitted = uadbench.load_fitted_method(grid_run, "ae", seed=0)
    out = prepared["out"] / "mslub"
    patients = sorted(p.name.split("_")[0] for p in out.glob("patient*_MNI_T1.nii.gz"))
    scans = [uadbench.load_volume(out / f"{p}_MNI_T1.nii.gz", lesion_mask=out / f"{p}_MNI_GOLD_STANDARD.nii.gz", subject_id=p)
             for p in patients]
    result = uadbench.evaluate_volumes(fitted, scans, crossfit=3, n_bootstrap=0)
    assert sorted(result.evaluation.per_volume) == patients  # every patient tested once
    assert math.isfinite(result.evaluation.aggregates["dice@crossfit-bisection@3"])
    # the same maps as the grid run's: the API prepares and seeds as the runner does
    record = next(r for r in uadbench.read_records(grid_run / "results.jsonl") if r.label == "ae")
    name = Pseudonyms.from_file(grid_run / "pseudonym.key", create=False)  # the run names subjects by pseudonyms
    for sid in patients:
        if name(sid) in record.per_volume:
            assert result.evaluation.per_volume[sid]["auprc"] == pytest.approx(record.per_volume[name(sid)]["auprc"], abs=1e-6)
    assert sum(name(sid) in record.per_volume for sid in patients) == 2  # the 2 test patients
    # back to the scan's own voxels (the prepared 1 mm file it was read from): the map lands where the lesions are
    sid = max(patients, key=lambda p: int(result.prepared[p].lesion_mask.sum()))  # the largest lesion load
    scan = nib.load(out / f"{sid}_MNI_T1.nii.gz")
    native = to_native(result.maps[sid], result.prepared[sid])  # the geometry the pipeline recorded
    gold = np.asarray(nib.load(out / f"{sid}_MNI_GOLD_STANDARD.nii.gz").dataobj) > 0
    assert native.shape == scan.shape and native[gold].mean() > 0
    lesion_native = to_native(result.prepared[sid].lesion_mask, result.prepared[sid])
    overlap = 2 * (lesion_native & gold).sum() / (lesion_native.sum() + gold.sum())
    print(f"lesion mask on the grid and back in native space: Dice {overlap:.2f} with the original")
    assert overlap > 0.3  # 3 mm voxels back on 1 mm ones: small lesions blur
    if os.environ.get("UADBENCH_REALDATA_DEMO"):
        write_overlay(workdir / f"{sid}_ae_map.png", result, sid, np.asarray(scan.dataobj, dtype=np.float32), scan.affine, native, gold)


def write_overlay(path: Path, result, sid: str, native_image: np.ndarray, native_affine: np.ndarray, native_map: np.ndarray,
                  gold: np.ndarray) -> None:
    """A PNG of one patient: the map over the image on the grid, and in the scan's native space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol, amap = result.prepared[sid], result.maps[sid]
    z = int(np.argmax(vol.lesion_mask.sum(axis=(0, 1))))  # the axial slice with most lesion
    world = vol.affine @ np.array([0, 0, z, 1.0])
    k = int(round((np.linalg.inv(native_affine) @ world)[2]))  # the native axial slice through the same point
    top = float(np.percentile(amap[vol.brain_mask], 99.5))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    panels = [(vol.image[:, :, z], amap[:, :, z], vol.lesion_mask[:, :, z], f"grid: 64x64x32 at 3 mm, slice {z}"),
              (native_image[:, :, k], native_map[:, :, k], gold[:, :, k],
               f"native: the prepared scan, {'x'.join(map(str, native_image.shape))} at 1 mm, slice {k}")]
    for ax, (img, m, les, title) in zip(axes, panels):
        ax.imshow(np.rot90(img), cmap="gray")
        shown = ax.imshow(np.rot90(np.ma.masked_less_equal(m, 0.25 * top)), cmap="hot", alpha=0.6, vmin=0, vmax=top)
        ax.contour(np.rot90(les), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(title)
        ax.axis("off")
    fig.colorbar(shown, ax=axes, fraction=0.025, label="ae anomaly map")
    fig.suptitle(f"MSLUB {sid} T1: ae (trained on IXI T1) anomaly map, lesions in cyan")
    fig.savefig(path, dpi=90)
    plt.close(fig)
