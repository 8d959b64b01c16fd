"""Real-dataset adapters, folder cards, splits and fingerprints, on synthetic official layouts.

Each adapter reads tiny NIfTI files laid out as its official download (``nifti_layouts``): it
must find its subjects, pair each image with its own masks, and turn every broken file into a
one-line DataError naming the file. Tests marked ``realdata`` read ../shared/realdata and skip
with the reason where it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nifti_layouts import AFFINE, SHAPE, ixi_id, subject_arrays, write, write_family, write_ixi, write_mslub

from uadbench.data import scans as scans_module
from uadbench.data.cards import read_card, register_cards
from uadbench.data.dataset import create_dataset
from uadbench.data.scans import IGNORE_MASK, FileDataset
from uadbench.data.splits import (
    PAPER_SPLITS,
    SplitPlan,
    assign_splits,
    check_splits,
    fold_blocks,
    read_splits_csv,
    scaled_sizes,
    seeded_order,
)
from uadbench.errors import ConfigError, DataError
from uadbench.registry import DATASETS

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

# one registered name per layout, with the subject count the synthetic writer makes
ADAPTERS = {
    "ixi-t1": 12,
    "ixi-pd": 12,
    "brats21-t2": 3,
    "brats21-t1ce": 3,
    "mslub-flair": 3,
    "atlas-t1": 3,
    "wmh-t1": 3,
    "wmh-flair": 3,
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Sidecars of read-only folders go to a throwaway cache; no card or directory leaks in."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for key in list(os.environ):
        if key == "UADBENCH_CARDS" or (key.startswith("UADBENCH_") and key.endswith("_DIR")) or key == "UADBENCH_IXI_FOLD":
            monkeypatch.delenv(key)


def layout(name: str, root: Path) -> tuple[FileDataset, list[str]]:
    family = DATASETS.get(name).family
    ids = write_family(family, root / family)
    assert ids is not None
    ds = create_dataset(name, root=root)
    assert isinstance(ds, FileDataset)
    return ds, ids


def one_line_error(exc_info, *needles: str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# -- adapters find and pair -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_finds_subjects_and_pairs_masks(name, tmp_path):
    ds, ids = layout(name, tmp_path)
    assert ds.available()
    assert sorted(ds.scans()) == sorted(ids)
    found = [sid for split in ds.splits for sid in ds.subjects(split)]
    assert sorted(found) == sorted(ids)
    for split in ds.splits:
        for vol in ds.load(split):
            index = ids.index(vol.subject_id)
            expected = subject_arrays(index, ignore_label=name.startswith("wmh"))
            np.testing.assert_allclose(vol.image, expected["image"])  # the subject's own file
            np.testing.assert_array_equal(vol.brain_mask, expected["brain"] > 0)
            np.testing.assert_allclose(vol.affine, AFFINE)
            assert vol.meta["split"] == split and vol.meta["dataset"] == name
            if ds.lesion_splits:
                assert vol.lesion_mask is not None
                truth = expected["lesion"] == 1
                if name.startswith("brats21"):
                    truth = truth.copy()
                    truth[5, 5, 3] = True  # label 4 is tumour too
                np.testing.assert_array_equal(vol.lesion_mask, truth)
            else:
                assert vol.lesion_mask is None


def test_ixi_prepared_nichart_layout_and_participants(tmp_path):
    ids = write_ixi(tmp_path / "ixi", n=12, tags=("T1",), scheme="prepared")
    ds = create_dataset("ixi-t1", root=tmp_path)
    assert sorted(ds.scans()) == ids
    vol = ds.load("test")[0]
    assert vol.meta["brain_mask_source"].endswith("_T1_DLMUSE.nii.gz")
    np.testing.assert_array_equal(vol.brain_mask, subject_arrays(ids.index(vol.subject_id))["brain"] > 0)
    info = ds.subject_info("train")
    assert set(info) == set(ds.subjects("train"))
    first = ids.index(ds.subjects("train")[0])
    assert info[ds.subjects("train")[0]] == {"age": 20 + first + 0.5, "sex": "F" if first % 2 else "M", "site": "Guys"}
    assert vol.meta["subject_info"] == ds.subject_info("test")[vol.subject_id]
    with pytest.raises(DataError):
        create_dataset("ixi-t2", root=tmp_path).subjects("train")  # only T1 here


def test_ixi_official_demographics_by_number(tmp_path):
    ids = write_ixi(tmp_path / "ixi", n=12, tags=("T2",))
    (tmp_path / "ixi" / "participants.csv").unlink()
    (tmp_path / "ixi" / "IXI.csv").write_text("IXI_ID,SEX_ID,AGE\n100,2,31.5\n101,1,\n999,1,40\n")
    ds = create_dataset("ixi-t2", root=tmp_path)
    info = ds.participants()
    assert info == {ids[0]: {"age": 31.5, "sex": "F", "site": "Guys"}, ids[1]: {"age": None, "sex": "M", "site": "Guys"},
                    **{sid: {"site": "Guys"} for sid in ids[2:]}}  # the site from the id, also without a row


def test_phantom_knows_only_its_scanner_as_site_and_is_available(tmp_path):
    ds = create_dataset("phantom-healthy-t1w", root=tmp_path)
    assert ds.available()
    assert ds.subject_info("train") == {sid: {"site": "generic-3t"} for sid in ds.subjects("train")}


def test_wmh_label_two_is_ignored_not_lesion(tmp_path):
    ds, _ = layout("wmh-t1", tmp_path)
    vol = ds.load("test")[0]
    assert vol.lesion_mask is not None
    ignore = vol.meta[IGNORE_MASK]
    assert ignore.dtype == bool and ignore.shape == vol.shape and ignore.sum() == 1
    assert not (ignore & vol.lesion_mask).any()
    assert vol.lesion_mask.sum() == 8


def test_data_folder_from_directory_argument_and_environment(tmp_path, monkeypatch):
    ids = write_mslub(tmp_path / "elsewhere")
    ds = create_dataset("mslub-t2", root=tmp_path / "empty-root", directory=tmp_path / "elsewhere")
    assert sorted(ds.scans()) == ids
    monkeypatch.setenv("UADBENCH_MSLUB_DIR", str(tmp_path / "elsewhere"))
    assert sorted(create_dataset("mslub-t2", root=tmp_path / "empty-root").scans()) == ids


def test_missing_folder_is_unavailable_and_says_where(tmp_path):
    ds = create_dataset("brats21-t2", root=tmp_path)
    assert not ds.available()
    with pytest.raises(DataError) as exc:
        ds.load("test")
    one_line_error(exc, str(tmp_path / "brats21"), "BraTS2021_<NNNNN>", "$UADBENCH_BRATS21_DIR")


# -- adapters reject broken data ------------------------------------------------------------------
def _first_subject(ds: FileDataset):
    sid = ds.subjects("test")[0]
    return ds.scans()[sid]


def _mask_of(scan):
    return scan.brain_mask if scan.brain_mask is not None else scan.lesion_mask


CORRUPTIONS = {
    "shape mismatch": (lambda scan: write(_mask_of(scan), np.zeros((4, 4, 4), np.uint8)), "differs from its image"),
    "affine mismatch": (lambda scan: write(_mask_of(scan), np.ones(SHAPE, np.uint8), AFFINE + _shift()), "affine differs"),
    "empty file": (lambda scan: scan.image.write_bytes(b""), "empty file"),
    "NaN voxels": (lambda scan: write(scan.image, _with_nan()), "NaN"),
    "4D file": (lambda scan: write(scan.image, np.ones((*SHAPE, 2), np.float32)), "4D"),
    "not NIfTI": (lambda scan: scan.image.write_bytes(b"this is not a NIfTI file"), "not a readable NIfTI"),
}


def _shift() -> np.ndarray:
    shift = np.zeros((4, 4))
    shift[0, 3] = 2.0  # one voxel off
    return shift


def _with_nan() -> np.ndarray:
    image = subject_arrays(0)["image"].copy()
    image[5, 5, 4] = np.nan
    return image


@pytest.mark.parametrize("problem", sorted(CORRUPTIONS))
@pytest.mark.parametrize("name", ["ixi-t1", "brats21-t2", "mslub-t2", "atlas-t1", "wmh-flair"])
def test_broken_file_is_a_one_line_error_naming_it(name, problem, tmp_path):
    ds, _ = layout(name, tmp_path)
    scan = _first_subject(ds)
    corrupt, needle = CORRUPTIONS[problem]
    corrupt(scan)
    broken = scan.image if problem in ("empty file", "NaN voxels", "4D file", "not NIfTI") else _mask_of(scan)
    fresh = create_dataset(name, root=tmp_path)
    with pytest.raises(DataError) as exc:
        fresh.load("test")
    one_line_error(exc, str(broken), needle)


def test_trailing_singleton_axis_is_accepted(tmp_path):
    ds, _ = layout("mslub-t2", tmp_path)
    scan = _first_subject(ds)
    write(scan.image, subject_arrays(0)["image"][..., None])
    assert create_dataset("mslub-t2", root=tmp_path).load("test")[0].image.shape == SHAPE


def test_empty_brain_mask_is_refused(tmp_path):
    ds, _ = layout("atlas-t1", tmp_path)
    scan = _first_subject(ds)
    write(scan.brain_mask, np.zeros(SHAPE, np.uint8))
    with pytest.raises(DataError) as exc:
        create_dataset("atlas-t1", root=tmp_path).load("test")
    one_line_error(exc, str(scan.brain_mask), "empty brain mask")


def _rename(path: Path, new_name: str) -> Path:
    target = path.with_name(new_name)
    path.rename(target)
    return target


MISNAMED = {
    # name: (file to misname -> new name, text the error must hold)
    "ixi-t1": (lambda d: _rename(next((d / "IXI-T1").glob("*-T1.nii.gz")), "IXI100-Guys-1000-T1w.nii.gz"), "mask without its scan"),
    "brats21-t2": (lambda d: _rename(next(d.rglob("*_t2.nii.gz")), "BraTS2021_00000_T2w.nii.gz"), "_t2.nii.gz: file not found"),
    "mslub-t2": (lambda d: _rename(next(d.glob("*_MNI_T2.nii.gz")), "patient01_T2.nii.gz"), "lesion mask without its scan"),
    "atlas-t1": (lambda d: _rename(next(d.rglob("*_label-L_desc-T1lesion_mask.nii.gz")), "lesion.nii.gz"), "lesion mask"),
    "wmh-t1": (lambda d: _rename(next(d.rglob("pre/T1.nii.gz")), "t1.nii.gz"), "T1.nii.gz: file not found"),
    "ixi-pd": (lambda d: _rename(next((d / "IXI-PD").glob("*-PD_mask.nii.gz")), "mask.nii.gz"), "no brain mask beside it"),
}


@pytest.mark.parametrize("name", sorted(MISNAMED))
def test_misnamed_file_is_a_one_line_error_with_the_layout(name, tmp_path):
    ds, _ = layout(name, tmp_path)
    misname, needle = MISNAMED[name]
    misname(ds.directory)
    with pytest.raises(DataError) as exc:
        create_dataset(name, root=tmp_path).load("test")
    one_line_error(exc, needle, str(ds.directory))


def test_wrong_layout_names_the_expected_one(tmp_path):
    folder = tmp_path / "mslub"
    write(folder / "scan_a.nii.gz", subject_arrays(0)["image"])
    with pytest.raises(DataError) as exc:
        create_dataset("mslub-t1", root=tmp_path).subjects("test")
    one_line_error(exc, "no MSLUB T1 scans found", "scan_a.nii.gz", "patientNN_MNI_GOLD_STANDARD")


def test_two_scans_of_one_subject_are_refused(tmp_path):
    write_ixi(tmp_path / "ixi", n=12, tags=("T1",))
    shutil.copy(tmp_path / "ixi" / "IXI-T1" / f"{ixi_id(0)}-T1.nii.gz", tmp_path / "ixi" / f"{ixi_id(0)}-T1.nii.gz")
    shutil.copy(tmp_path / "ixi" / "IXI-T1" / f"{ixi_id(0)}-T1_mask.nii.gz", tmp_path / "ixi" / f"{ixi_id(0)}-T1_mask.nii.gz")
    with pytest.raises(DataError) as exc:
        create_dataset("ixi-t1", root=tmp_path).subjects("train")
    one_line_error(exc, "one scan per subject")


# -- splits ---------------------------------------------------------------------------------------
def test_paper_sizes_when_enough_subjects():
    assert scaled_sizes(PAPER_SPLITS["brats21"], 1251) == {"val": 100, "test": 1151}
    assert scaled_sizes(PAPER_SPLITS["mslub"], 30) == {"val": 10, "test": 20}
    assert scaled_sizes(PAPER_SPLITS["wmh"], 60) == {"val": 15, "test": 45}
    assert scaled_sizes(PAPER_SPLITS["atlas"], 655) == {"val": 175, "test": 480}
    assert scaled_sizes(PAPER_SPLITS["ixi"], 560) == {"train": 358, "val": 44, "test": 158}
    assert scaled_sizes(PAPER_SPLITS["ixi"], 578) == {"train": 376, "val": 44, "test": 158}  # extra go to train


def test_sizes_scale_down_with_largest_remainders():
    assert scaled_sizes(PAPER_SPLITS["ixi"], 40) == {"train": 26, "val": 3, "test": 11}
    assert scaled_sizes(PAPER_SPLITS["mslub"], 3) == {"val": 1, "test": 2}
    assert scaled_sizes(PAPER_SPLITS["brats21"], 20) == {"val": 2, "test": 18}
    assert scaled_sizes(PAPER_SPLITS["brats21"], 2) == {"val": 1, "test": 1}  # every split keeps one
    for n in range(3, 200):
        sizes = scaled_sizes(PAPER_SPLITS["ixi"], n)
        assert sum(sizes.values()) == n and min(sizes.values()) >= 1
    with pytest.raises(DataError):
        scaled_sizes(PAPER_SPLITS["mslub"], 1)


def test_ixi_folds_are_disjoint_and_test_is_fixed():
    ids = [ixi_id(i) for i in range(40)]
    plan = PAPER_SPLITS["ixi"]
    blocks = fold_blocks(ids, plan, seed=0)
    assert len(blocks) == 5 and all(len(b) == 3 for b in blocks)
    assert len({s for b in blocks for s in b}) == 15
    folds = [assign_splits(ids, plan, seed=0, fold=k) for k in range(5)]
    assert all(f["test"] == folds[0]["test"] for f in folds)
    for f in folds:
        assert len(f["train"]) == 26 and not set(f["train"]) & set(f["test"])
    with pytest.raises(DataError):
        assign_splits(ids, plan, fold=5)
    with pytest.raises(DataError, match="too few"):
        assign_splits(ids[:7], plan)


def test_splits_are_deterministic_seeded_and_stable_under_additions():
    ids = [f"s{i:03d}" for i in range(50)]
    plan = PAPER_SPLITS["wmh"]
    assert assign_splits(ids, plan, seed=0) == assign_splits(list(reversed(ids)), plan, seed=0)
    assert assign_splits(ids, plan, seed=0) != assign_splits(ids, plan, seed=1)
    order = seeded_order(ids, 3)
    assert [s for s in seeded_order(ids + ["s999"], 3) if s != "s999"] == order


def test_check_splits_refuses_overlap_duplicates_and_empties():
    with pytest.raises(DataError, match="both split 'val' and split 'test'"):
        check_splits({"val": ["a"], "test": ["a", "b"]})
    with pytest.raises(DataError, match="twice"):
        check_splits({"val": ["a", "a"]})
    with pytest.raises(DataError, match="empty"):
        check_splits({"val": []})
    with pytest.raises(DataError, match="found twice"):
        assign_splits(["a", "a", "b"], PAPER_SPLITS["mslub"])
    with pytest.raises(ValueError):
        SplitPlan((("val", 1),), rest="test")


def test_split_csv_is_written_beside_the_data_and_reads_back(tmp_path):
    ds, _ = layout("ixi-t1", tmp_path)
    splits = ds.split_lists()
    path = ds.split_csv_path()
    assert path == tmp_path / "ixi" / "uadbench" / "splits-ixi-t1-seed0-fold0.csv"
    assert read_splits_csv(path) == splits
    mtime = path.stat().st_mtime_ns
    create_dataset("ixi-t1", root=tmp_path).split_lists()
    assert path.stat().st_mtime_ns == mtime  # identical content is not rewritten
    other = create_dataset("ixi-t1", root=tmp_path, fold=2)
    assert other.subjects("test") == ds.subjects("test") and other.subjects("val") != ds.subjects("val")
    assert other.split_csv_path().is_file()
    with pytest.raises(ConfigError):
        create_dataset("ixi-t1", root=tmp_path, fold=7)


def test_read_only_data_leave_sidecars_in_the_user_cache(tmp_path):
    ids = write_mslub(tmp_path / "mslub")
    folder = tmp_path / "mslub"
    folder.chmod(0o555)
    try:
        ds = create_dataset("mslub-t2", root=tmp_path)
        assert sorted(ds.scans()) == ids
        ds.fingerprint()
        assert not (folder / "uadbench").exists()
        assert ds.sidecar.is_relative_to(tmp_path / "xdg-cache")
        assert ds.split_csv_path().is_file() and (ds.sidecar / "checksums.json").is_file()
    finally:
        folder.chmod(0o755)


# -- fingerprints ---------------------------------------------------------------------------------
def test_fingerprint_hashes_content_and_splits_and_caches_checksums(tmp_path, monkeypatch):
    ds, _ = layout("mslub-t2", tmp_path)
    first = ds.fingerprint()
    assert first.startswith("mslub-t2:") and first == create_dataset("mslub-t2", root=tmp_path).fingerprint()
    assert (ds.sidecar / "checksums.json").is_file()

    hashed = []
    real = scans_module.sha256_file
    monkeypatch.setattr(scans_module, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert create_dataset("mslub-t2", root=tmp_path).fingerprint() == first
    assert hashed == []  # the checksums come from checksums.json: no file was read again
    os.utime(ds.scans()["patient01"].image)  # touched: hashed again, same content, same fingerprint
    assert create_dataset("mslub-t2", root=tmp_path).fingerprint() == first
    assert hashed == [ds.scans()["patient01"].image]
    monkeypatch.undo()

    assert create_dataset("mslub-t2", root=tmp_path, seed=1).fingerprint() != first  # other splits
    assert create_dataset("mslub-t1", root=tmp_path).fingerprint() != first
    scan = _first_subject(ds)
    write(scan.lesion_mask, np.zeros(SHAPE, np.uint8))  # same names, new content
    assert create_dataset("mslub-t2", root=tmp_path).fingerprint() != first


def test_fingerprint_does_not_depend_on_where_the_data_sit(tmp_path):
    write_mslub(tmp_path / "a" / "mslub")
    shutil.copytree(tmp_path / "a" / "mslub", tmp_path / "b" / "mslub")
    shutil.rmtree(tmp_path / "b" / "mslub" / "uadbench", ignore_errors=True)
    assert create_dataset("mslub-t2", root=tmp_path / "a").fingerprint() == create_dataset("mslub-t2", root=tmp_path / "b").fingerprint()


def test_phantom_fingerprint_is_unchanged(tmp_path):
    ds = create_dataset("phantom-healthy-t1w", root=tmp_path, seed=3)
    assert ds.fingerprint().startswith("phantom-healthy-t1w:phantom-v") and ":seed=3:" in ds.fingerprint()


# -- folder cards ---------------------------------------------------------------------------------
MSLUB_CARD = """
name = "{name}"
description = "MSLUB through a folder card"
root = "{root}"
modality = "t2w"
cohort = "lesion"
image = "{{subject}}_MNI_T2.nii.gz"
brain_mask = "nonzero"
lesion_mask = "{{subject}}_MNI_GOLD_STANDARD.nii.gz"
"""


def _card(folder: Path, name: str, root: Path | str, text: str = MSLUB_CARD) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text.format(name=name, root=root))
    return path


def _same_volumes(a, b) -> None:
    assert a.splits == b.splits
    for split in a.splits:
        assert a.subjects(split) == b.subjects(split)
        for v, w in zip(a.load(split), b.load(split)):
            assert v.subject_id == w.subject_id
            assert v.image.tobytes() == w.image.tobytes()
            np.testing.assert_array_equal(v.affine, w.affine)
            np.testing.assert_array_equal(v.brain_mask, w.brain_mask)
            np.testing.assert_array_equal(v.lesion_mask, w.lesion_mask)


def test_folder_card_gives_the_same_volumes_as_the_adapter(tmp_path):
    write_mslub(tmp_path / "data" / "mslub")
    names = register_cards([_card(tmp_path / "cards", "test-card-mslub-t2", tmp_path / "data" / "mslub")], export=False)
    try:
        assert names == ["test-card-mslub-t2"]
        card_ds = create_dataset("test-card-mslub-t2")
        assert "MSLUB through a folder card" in DATASETS.describe("test-card-mslub-t2")
        _same_volumes(card_ds, create_dataset("mslub-t2", root=tmp_path / "data"))
        assert card_ds.fingerprint() != create_dataset("mslub-t2", root=tmp_path / "data").fingerprint()  # another adapter
    finally:
        DATASETS.unregister("test-card-mslub-t2")


def test_card_relative_root_nested_subjects_and_healthy_cohort(tmp_path):
    for i in range(6):
        a = subject_arrays(i)
        write(tmp_path / "scans" / f"sub{i}" / f"sub{i}_t1.nii.gz", a["image"])
        write(tmp_path / "scans" / f"sub{i}" / "brain.nii.gz", a["brain"])
    card = tmp_path / "healthy.toml"
    card.write_text('name = "h"\nroot = "scans"\nmodality = "t1w"\ncohort = "healthy"\nimage = "{subject}/{subject}_t1.nii.gz"\n'
                    'brain_mask = "{subject}/brain.nii.gz"\n[splits]\nval = 1\ntest = 2\n')
    from uadbench.data.cards import card_dataset

    ds = card_dataset(read_card(card))()
    assert {s: len(ds.subjects(s)) for s in ds.splits} == {"train": 3, "val": 1, "test": 2}
    vol = ds.load("val")[0]
    assert vol.lesion_mask is None and vol.brain_mask.sum() == (subject_arrays(0)["brain"] > 0).sum()


CARD_ERRORS = {
    "escape": ({"image": "../other/{subject}.nii.gz"}, "escapes the card's root"),
    "escape root": ({"root": "../elsewhere"}, "escapes the card's folder"),
    "no subject": ({"image": "scan.nii.gz"}, "must contain {subject}"),
    "unknown key": ({"colour": "blue"}, "unknown key(s) 'colour'; valid keys"),
    "bad cohort": ({"cohort": "sick"}, "cohort must be one of"),
    "missing key": ({"modality": None}, "missing key(s) 'modality'"),
    "healthy with lesions": ({"cohort": "healthy"}, "a healthy cohort has no lesion_mask"),
}


def _card_text(changes: dict) -> str:
    keys = {"name": "c", "root": "data", "modality": "t2w", "cohort": "lesion", "image": "{subject}_MNI_T2.nii.gz",
            "brain_mask": "nonzero", "lesion_mask": "{subject}_MNI_GOLD_STANDARD.nii.gz"} | changes
    return "".join(f'{k} = "{v}"\n' for k, v in keys.items() if v is not None)


@pytest.mark.parametrize("problem", sorted(CARD_ERRORS))
def test_bad_card_is_a_one_line_config_error(problem, tmp_path):
    changes, needle = CARD_ERRORS[problem]
    path = tmp_path / "c.toml"
    path.write_text(_card_text(changes))
    with pytest.raises(ConfigError) as exc:
        read_card(path)
    one_line_error(exc, str(path), needle)


@pytest.mark.parametrize("tail, needle", [("[splits]\ntrain = 3\n", "not a split of a lesion cohort"), ("image = \n", "not valid TOML")])
def test_bad_card_tables_and_syntax(tail, needle, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(_card_text({}) + tail)
    with pytest.raises(ConfigError) as exc:
        read_card(path)
    one_line_error(exc, str(path), needle)


def test_card_errors_while_reading_name_the_file(tmp_path):
    folder = tmp_path / "data"
    write_mslub(folder)
    (folder / "patient02_MNI_T2.nii.gz").rename(folder / "patient02_T2.nii.gz")
    card = _card(tmp_path / "cards", "c2", folder)
    from uadbench.data.cards import card_dataset

    with pytest.raises(DataError) as exc:
        card_dataset(read_card(card))().subjects("test")
    one_line_error(exc, "patient02_MNI_GOLD_STANDARD.nii.gz", "lesion mask without its image")


def test_absolute_card_paths_are_allowed(tmp_path):
    write_mslub(tmp_path / "data")
    shared = write(tmp_path / "templates" / "brain.nii.gz", (subject_arrays(0)["brain"] > 0).astype(np.uint8))
    text = MSLUB_CARD.replace('brain_mask = "nonzero"', f'brain_mask = "{shared}"')
    card = _card(tmp_path / "cards", "c3", tmp_path / "data", text)
    from uadbench.data.cards import card_dataset

    ds = card_dataset(read_card(card))()
    assert all(v.meta["brain_mask_source"] == str(shared) for v in ds.load("test"))
    assert str(shared) in [row[0] for row in ds.manifest()]


# -- command line ---------------------------------------------------------------------------------
def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "uadbench.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_lists_cards_and_refuses_a_bad_one(tmp_path):
    _card(tmp_path / "cards", "my-scans-t2", tmp_path / "data")
    proc = run_cli("list", "datasets", "--cards", str(tmp_path / "cards"))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("my-scans-t2"))
    assert "MSLUB through a folder card" in line
    assert "ixi-t1" in proc.stdout
    proc = run_cli("list", "datasets", "my-*", env_extra={"UADBENCH_CARDS": str(tmp_path / "cards")})
    assert proc.returncode == 0 and proc.stdout.split()[0] == "my-scans-t2", proc.stderr

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "escape.toml").write_text(MSLUB_CARD.format(name="x", root="data").replace("{subject}_MNI_T2", "../{subject}_MNI_T2"))
    proc = run_cli("list", "datasets", "--cards", str(tmp_path / "bad"))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("x "))  # refused, with the reason
    assert "REFUSED: card 'x' (" in line and "escape.toml" in line and "escapes" in line
    proc = run_cli("list", "datasets", "--cards", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "cards location not found" in proc.stderr


# -- the real samples in ../shared/realdata -------------------------------------------------------
def _realdata(sub: str) -> Path:
    path = REALDATA / sub
    if not path.is_dir():
        print(f"skipping: {path} is absent (the real samples live in ../shared/realdata beside the repository)")
        pytest.skip(f"{path} is absent (real samples live in ../shared/realdata beside the repository)")
    return path


@pytest.mark.realdata
def test_realdata_ixi_sample(tmp_path):
    folder = _realdata("ixi_t1")
    ds = create_dataset("ixi-t1", directory=folder)
    assert {s: len(ds.subjects(s)) for s in ds.splits} == {"train": 26, "val": 3, "test": 11}
    assert len(ds.subject_info("train")) == 26
    info = ds.subject_info("test")
    assert all(set(v) == {"age", "sex", "site"} for v in info.values())
    assert {v["site"] for v in info.values()} == {"HH"}  # the sample's ids name one site
    vol = ds.load("val")[0]
    assert vol.shape == (120, 120, 90) and 1e5 < vol.brain_mask.sum() < 3e5
    assert not (folder / "uadbench").exists()  # read-only data stay untouched
    assert ds.fingerprint() == create_dataset("ixi-t1", directory=folder).fingerprint()


@pytest.mark.realdata
def test_realdata_mslub_card_equals_adapter(tmp_path):
    folder = _realdata("mslub")
    adapter = create_dataset("mslub-t2", directory=folder)
    assert adapter.subjects("val") + adapter.subjects("test") and len(adapter.scans()) == 3
    names = register_cards([_card(tmp_path / "cards", "test-real-mslub-t2", folder)], export=False)
    try:
        _same_volumes(create_dataset(names[0]), adapter)
    finally:
        DATASETS.unregister(names[0])
    assert not (folder / "uadbench").exists()
