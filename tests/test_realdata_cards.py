"""Folder cards over the real scans in ../shared/realdata, through the CLI as a user runs them:

1. two cards, written as a user would for a download the harness has no adapter for: 9 of the 40
   IXI T1 heads (healthy; chosen by a glob in the image pattern, masks from their DLMUSE
   parcellations; 9 keep the test to minutes on a shared machine) and the 3 MSLUB patients' T1
   (lesions; skull-stripped by their release), each with a ``[prepare]`` table and a ``prepared``
   folder;
2. ``uadbench prepare <card>`` for both (affine registration to the MNI152 brain, N4 for IXI), the
   shared folders, read-only, left as they were;
3. ``uadbench run``: thresh (inverted: T1 lesions are dark) and ae on the ``cpu`` grid, trained on
   the prepared IXI card and evaluated on the prepared MSLUB card, the cards' names in the records.

Skips, saying why, where ../shared/realdata is absent. It takes several minutes (the IXI
registration is most of it): ``pytest -m realdata tests/test_realdata_cards.py``. It prints the
preparation time per subject.
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
from uadbench.data.cards import register_cards
from uadbench.data.dataset import create_dataset
from uadbench.registry import DATASETS

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
pytestmark = pytest.mark.realdata
IXI_SUBJECTS = 9

IXI_CARD = """
name = "realdata-card-ixi-t1"
description = "The IXI T1 sample through a folder card"
root = "{root}"
prepared = "prepared/ixi-t1"
modality = "t1w"
cohort = "healthy"
image = "{{subject}}-HH-1[4-6]*_T1.nii.gz"        # IXI132-HH-1415_T1.nii.gz: subject IXI132; 9 of the 40 scans
brain_mask = "{{subject}}-HH-*_T1_DLMUSE.nii.gz"

[prepare]
skull_strip = "mask"
register = "affine"
bias = "n4"
"""

MSLUB_CARD = """
name = "realdata-card-mslub-t1"
description = "The MSLUB T1 sample through a folder card"
root = "{root}"
prepared = "prepared/mslub-t1"
modality = "t1w"
cohort = "lesion"
image = "{{subject}}_MNI_T1.nii.gz"
brain_mask = "nonzero"
lesion_mask = "{{subject}}_MNI_GOLD_STANDARD.nii.gz"

[prepare]
skull_strip = "none"    # skull-stripped and N4-corrected by the release
register = "affine"     # FSL's MNI152 is not nilearn's: registered as the IXI scans are
bias = "none"
"""

GRID = """
name = "realdata-cards-t1"
description = "Real scans through folder cards: train on the IXI T1 card, evaluate on the MSLUB T1 card"
image_grid = "cpu"
seeds = [0]
train_dataset = "realdata-card-ixi-t1"

[[methods]]
name = "thresh"
label = "thresh-inverted"
overrides = { invert = true }   # T1 lesions are dark

[[methods]]
name = "ae"
preset = "cpu"
overrides = { steps = 200 }

[[datasets]]
name = "realdata-card-mslub-t1"
"""


def _require(sub: str) -> Path:
    path = REALDATA / sub
    if not path.is_dir():
        print(f"skipping: {path} is absent (the real samples live in ../shared/realdata beside the repository)")
        pytest.skip(f"{path} is absent (real samples live in ../shared/realdata beside the repository)")
    return path


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    ixi, mslub = _require("ixi_t1"), _require("mslub")
    work = tmp_path_factory.mktemp("realdata-cards")
    folder = work / "cards"
    folder.mkdir()
    (folder / "ixi.toml").write_text(IXI_CARD.format(root=ixi))
    (folder / "mslub.toml").write_text(MSLUB_CARD.format(root=mslub))
    before = {"ixi": _listing(ixi), "mslub": _listing(mslub)}
    saved = os.environ.get("UADBENCH_CARDS")
    names = register_cards([folder])  # exported: the run's workers register them too
    assert names == ["realdata-card-ixi-t1", "realdata-card-mslub-t1"]
    seconds = {}
    for name, extra in (("realdata-card-ixi-t1", ["--workers", "2"]), ("realdata-card-mslub-t1", [])):
        start = time.perf_counter()
        assert main(["prepare", name, *extra]) == 0
        seconds[name] = time.perf_counter() - start
    yield {"work": work, "folder": folder, "seconds": seconds, "before": before, "raw": {"ixi": ixi, "mslub": mslub}}
    for name in names:
        DATASETS.unregister(name)
    if saved is None:
        os.environ.pop("UADBENCH_CARDS", None)
    else:
        os.environ["UADBENCH_CARDS"] = saved


def _entries(folder: Path) -> dict:
    return json.loads((folder / "prepare-manifest.json").read_text())["entries"]


def test_cards_prepare_the_real_scans(cards, capsys):
    prepared = cards["folder"] / "prepared"
    ixi, mslub = _entries(prepared / "ixi-t1"), _entries(prepared / "mslub-t1")
    assert len(ixi) == IXI_SUBJECTS and len(mslub) == 3 and all(k.startswith("realdata-card-ixi-t1/IXI") for k in ixi)
    for key, entry in {**ixi, **mslub}.items():
        fp = entry["fingerprint"]
        assert fp["spacing_mm"] == [1.0, 1.0, 1.0] and 900 < fp["brain_volume_ml"] < 2600, key
        assert fp["registration"]["registered"], key
    assert all(e["steps"]["bias"].startswith("n4") for e in ixi.values()) and all(e["steps"]["bias"] == "none" for e in mslub.values())
    ncc_ixi = [e["fingerprint"]["registration"]["ncc"] for e in ixi.values()]
    ncc_ms = [e["fingerprint"]["registration"]["ncc"] for e in mslub.values()]
    assert min(ncc_ixi) > 0.4 and min(ncc_ms) > 0.25
    # the cards read their prepared copies, with the sample's split sizes; the shared folders got nothing
    ixi_ds, ms_ds = create_dataset("realdata-card-ixi-t1"), create_dataset("realdata-card-mslub-t1")
    assert ixi_ds.reads_prepared and ms_ds.reads_prepared
    assert [len(ixi_ds.subjects(s)) for s in ("train", "val", "test")] == [6, 1, 2]  # 358 / 44 / 158 scaled to 9
    assert [len(ms_ds.subjects(s)) for s in ("val", "test")] == [1, 2]
    vol = ms_ds.load("test")[0]
    assert vol.lesion_mask.sum() > 1000 and np.allclose(np.linalg.norm(vol.affine[:3, :3], axis=0), 1.0)
    ixi_ds.fingerprint()
    for key in ("ixi", "mslub"):
        assert _listing(cards["raw"][key]) == cards["before"][key]
    per_subject = [e["seconds"] for e in ixi.values()]
    with capsys.disabled():
        print(f"\nprepare realdata-card-ixi-t1: {cards['seconds']['realdata-card-ixi-t1']:.0f} s for {IXI_SUBJECTS} subjects with 2 workers "
              f"({cards['seconds']['realdata-card-ixi-t1'] / IXI_SUBJECTS:.1f} s per subject wall; {np.mean(per_subject):.1f} s per subject "
              f"in a worker, {min(per_subject):.1f}-{max(per_subject):.1f}); realdata-card-mslub-t1: "
              f"{cards['seconds']['realdata-card-mslub-t1']:.1f} s for 3 ({np.mean([e['seconds'] for e in mslub.values()]):.1f} s each)")
        print(f"similarity to the MNI152 brain (ncc): IXI {min(ncc_ixi):.3f}-{max(ncc_ixi):.3f}, MSLUB {min(ncc_ms):.3f}-{max(ncc_ms):.3f}")


def test_a_grid_trains_and_evaluates_on_prepared_cards(cards, capsys):
    from uadbench.records import read_records

    grid = cards["work"] / "grid.toml"
    grid.write_text(GRID)
    run_dir = cards["work"] / "run"
    assert main(["run", str(grid), "--out", str(run_dir), "--no-tracking"]) == 0
    records = read_records(run_dir / "results.jsonl")
    assert sorted((r.label, r.dataset) for r in records) == [("ae", "realdata-card-mslub-t1"), ("thresh-inverted", "realdata-card-mslub-t1")]
    for r in records:
        assert r.train_dataset == "realdata-card-ixi-t1" and len(r.per_volume) == 2 + 2  # 2 MSLUB test patients, 2 healthy IXI
        for name in ("auprc", "auroc", "dice@val-bisection", "dice@healthy-fpr@5%"):
            assert math.isfinite(r.metrics[name]), (r.label, name)
        assert r.thresholds["val-bisection"]["source"] == "realdata-card-mslub-t1/val (1 volumes)"
    with capsys.disabled():
        print("\n" + (run_dir / "leaderboard.md").read_text())
