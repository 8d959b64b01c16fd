"""Dataset cards end to end: the BraTS releases, refused cards named with their reason, derived files
in the user cache (never beside the scans), and `uadbench prepare <card>` -> `uadbench run`.

Everything runs on tiny synthetic NIfTI layouts (``nifti_layouts``) and without ANTs (cards whose
``[prepare]`` table says ``register = "none"``, ``bias = "none"``); the realdata test of a prepared
card is in ``test_realdata_cards.py``.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_layouts import AFFINE, subject_arrays, write, write_brats

from uadbench.cli import main
from uadbench.data.cards import read_card, register_cards, register_cards_from_env
from uadbench.data.dataset import create_dataset
from uadbench.data.prepare.driver import PrepareSettings, dataset_source, make_plan
from uadbench.errors import ConfigError, DataError
from uadbench.registry import DATASETS, RegistryError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Derived files go to a throwaway user cache; no card or data folder leaks in from outside."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for key in list(os.environ):
        if key == "UADBENCH_CARDS" or (key.startswith("UADBENCH_") and key.endswith("_DIR")):
            monkeypatch.delenv(key)


@pytest.fixture
def registered():
    """Register cards for one test (not strict: bad ones are refused) and forget them after."""
    seen: list[str] = []
    refused: set[str] = set()

    def register(*locations: Path) -> list[str]:
        before = set(DATASETS.refusals())
        names = register_cards(list(locations), export=False, strict=False)
        seen.extend(names)
        refused.update(set(DATASETS.refusals()) - before)
        return names

    yield register
    for name in seen:
        DATASETS.unregister(name)
    for name in refused:  # a refusal only: a built-in dataset may hold the name
        DATASETS._refused.pop(name, None)


def files_under(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


TOP18 = "MICCAI_BraTS_2018_Data_Training"


# -- the BraTS releases ---------------------------------------------------------------------------
def _case(folder: Path, case: str, index: int, *, suffix: str = ".nii.gz", seg_name: str | None = None) -> None:
    a = subject_arrays(index)
    for tag in ("t1", "t1ce", "t2", "flair"):
        write(folder / case / f"{case}_{tag}{suffix}", a["image"])
    seg = a["lesion"].copy()
    seg[5, 5, 3] = 4  # enhancing tumour: part of the whole tumour
    write(folder / case / (seg_name or f"{case}_seg{suffix}"), seg)


def write_release(top: Path, year: int, n: int = 4) -> list[str]:
    """A release's official layout (case names, HGG/LGG folders, .nii of 2020) with ``n`` cases; case
    ``i`` of the returned list holds ``subject_arrays(i)``."""
    if year == 2021:
        return write_brats(top, n)
    ids = []
    for i in range(n):
        if year == 2018:
            case = f"Brats18_2013_{i}_1" if i % 2 else f"Brats18_CBICA_A{i}B_1"
            _case(top / TOP18 / ("HGG" if i % 2 else "LGG"), case, i)
        elif year == 2019:
            case = f"BraTS19_TMC_0629{i}_1"
            _case(top / "MICCAI_BraTS_2019_Data_Training" / ("HGG" if i % 2 else "LGG"), case, i)
        else:  # 2020: uncompressed, and one case's label file named as in case 355 of the release
            case = f"BraTS20_Training_{i + 1:03d}"
            _case(top / "MICCAI_BraTS2020_TrainingData", case, i, suffix=".nii", seg_name="W39_1998.09.19_Segm.nii" if i == n - 1 else None)
        ids.append(case)
    return ids


@pytest.mark.parametrize("year", [2018, 2019, 2020, 2021])
def test_brats_adapter_reads_every_release(tmp_path, year):
    ids = write_release(tmp_path / "brats", year)
    ds = create_dataset("brats21-t1", directory=tmp_path / "brats")
    assert list(ds.scans()) == sorted(ids)
    assert sorted(ds.subjects("val") + ds.subjects("test")) == sorted(ids)
    for vol in ds.load("val") + ds.load("test"):
        expected = subject_arrays(ids.index(vol.subject_id))
        np.testing.assert_array_equal(vol.image, expected["image"])  # its own files, not another case's
        np.testing.assert_array_equal(vol.lesion_mask, expected["lesion"] > 0)
        np.testing.assert_array_equal(vol.brain_mask, expected["image"] != 0)


def test_brats_releases_are_not_mixed(tmp_path):
    write_release(tmp_path / "brats" / "a", 2018, 2)
    write_release(tmp_path / "brats" / "b", 2021, 2)
    (tmp_path / "brats" / "a" / TOP18 / "HGG").rename(tmp_path / "brats" / "a" / "HGG")
    with pytest.raises(DataError, match="BraTS 2018 and BraTS 2021; the releases share patients"):
        create_dataset("brats21-t2", directory=tmp_path / "brats").scans()


def test_brats_2021_fingerprint_is_unchanged_by_the_other_namings(tmp_path):
    """The adapter's name, version and options are those of the 2021-only adapter: same data, same key."""
    write_release(tmp_path / "brats", 2021, 3)
    ds = create_dataset("brats21-t2", directory=tmp_path / "brats")
    assert ds.adapter_version == 1 and ds.options() == {"seed": 0}


# -- refused cards ---------------------------------------------------------------------------------
GOOD = """
name = "{name}"
root = "{root}"
modality = "t1w"
cohort = "lesion"
image = "*/{{subject}}/{{subject}}_t1.nii.gz"
brain_mask = "nonzero"
lesion_mask = "*/{{subject}}/{{subject}}_seg.nii.gz"
"""


def _card(folder: Path, name: str, text: str, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text.format(name=name, **fields))
    return path


def test_a_refused_card_is_named_with_its_reason_by_list_run_and_prepare(tmp_path, registered, capsys):
    cards = tmp_path / "cards"
    _card(cards, "good-card", GOOD, root=tmp_path / "data")
    _card(cards, "no-subject", GOOD.replace("*/{{subject}}/{{subject}}_t1", "scan"), root=tmp_path / "data")
    _card(cards, "climbs", GOOD.replace("image = \"*/", "image = \"../"), root=tmp_path / "data")
    (cards / "broken.toml").write_text("name = \n")
    assert registered(cards) == ["good-card"]  # the others are refused, not fatal

    with pytest.raises(RegistryError) as exc:
        DATASETS.get("no-subject")
    assert str(exc.value).startswith(f"card 'no-subject' ({cards / 'no-subject.toml'}) refused: image = 'scan.nii.gz' must contain")
    assert "escapes the card's root with '..'" in str(pytest.raises(RegistryError, DATASETS.get, "climbs").value)
    assert "not valid TOML" in str(pytest.raises(RegistryError, DATASETS.get, "broken").value)  # named by its file
    assert "refused: broken, climbs, no-subject" in str(pytest.raises(RegistryError, DATASETS.get, "nonesuch").value)

    assert main(["list", "datasets", "*-*"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "good-card" in lines and "REFUSED" not in lines["good-card"]
    assert "REFUSED: card 'no-subject'" in lines["no-subject"] and "must contain {subject}" in lines["no-subject"]

    grid = tmp_path / "grid.toml"
    grid.write_text('name = "g"\nimage_grid = "smoke"\ntrain_dataset = "phantom-healthy-t2w"\n'
                    '[[methods]]\nname = "thresh"\npreset = "smoke"\n[[datasets]]\nname = "climbs"\n')
    assert main(["run", str(grid), "--out", str(tmp_path / "run"), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "card 'climbs' (" in err and "refused: image = '../" in err
    assert not (tmp_path / "run").exists()
    assert main(["prepare", "no-subject"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "card 'no-subject' (" in err and "must contain {subject}" in err


def test_cards_from_the_environment_refuse_the_bad_and_keep_the_good(tmp_path, monkeypatch, registered):
    cards = tmp_path / "cards"
    _card(cards, "env-good", GOOD, root=tmp_path / "data")
    _card(cards, "env-bad", GOOD.replace('cohort = "lesion"', 'cohort = "sick"'), root=tmp_path / "data")
    monkeypatch.setenv("UADBENCH_CARDS", os.pathsep.join([str(cards), str(tmp_path / "nowhere")]))
    try:
        assert register_cards_from_env() == ["env-good"]
        refusals = DATASETS.refusals()
        assert "cohort must be one of" in refusals["env-bad"]
        assert "does not exist" in refusals[str(tmp_path / "nowhere")]
    finally:
        for name in ("env-good", "env-bad", str(tmp_path / "nowhere")):
            DATASETS.unregister(name)
    with pytest.raises(ConfigError, match=r"card 'env-bad' \(.*\) refused: cohort must be one of"):
        register_cards([cards], export=False)  # strict: the Python API raises


def test_a_card_may_not_take_a_registered_name(tmp_path, registered):
    _card(tmp_path / "cards", "ixi-t1", GOOD, root=tmp_path / "data")
    assert registered(tmp_path / "cards") == []
    assert "already registered by" in DATASETS.refusals()["ixi-t1"]
    assert DATASETS.get("ixi-t1").family == "ixi"  # the built-in keeps its name


# -- derived files go to the user cache -------------------------------------------------------------
def test_a_read_only_data_folder_gets_no_new_files(tmp_path, registered):
    data = tmp_path / "data"
    ids = write_release(data, 2018)
    card = _card(tmp_path / "cards", "ro-card", GOOD, root=data / TOP18)
    before = files_under(data)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        registered(tmp_path / "cards")
        ds = create_dataset("ro-card")
        assert sorted(ds.subjects("val") + ds.subjects("test")) == sorted(ids)
        ds.load("test")
        first = ds.fingerprint()
        assert files_under(data) == before  # nothing new, nothing touched
        key = read_card(card).key
        assert ds.sidecar.parent == tmp_path / "xdg-cache" / "uadbench" / "cards" and ds.sidecar.name.startswith("ro-card-")
        assert ds.split_csv_path().is_file() and (ds.sidecar / "checksums.json").is_file()
    finally:
        for path in [data, *data.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    # a writable folder is not written either; a changed card has its own derived files
    registered(tmp_path / "cards")
    assert create_dataset("ro-card").fingerprint() == first and files_under(data) == before
    card.write_text(card.read_text() + '[splits]\nval = 2\n')
    DATASETS.unregister("ro-card")
    registered(tmp_path / "cards")
    changed = create_dataset("ro-card")
    assert read_card(card).key != key and changed.sidecar != ds.sidecar
    assert len(changed.subjects("val")) == 2 and changed.fingerprint() != first


# -- prepare a card ---------------------------------------------------------------------------------
BRATS18_CARD = GOOD + """prepared = "{prepared}"
[prepare]
register = "none"     # the synthetic scans are in template space already
bias = "none"
resolution = 2.0
"""


def _brats18(tmp_path: Path, n: int = 4, *, prepared: str = "prepared/brats18") -> tuple[Path, list[str]]:
    ids = write_release(tmp_path / "raw", 2018, n)
    return _card(tmp_path / "cards", "brats18-t1", BRATS18_CARD, root=tmp_path / "raw" / TOP18, prepared=prepared), ids


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "prepare-manifest.json").read_text())["entries"]


def test_prepare_a_card_then_read_the_prepared_copy(tmp_path, registered, capsys):
    card, ids = _brats18(tmp_path)
    registered(card)
    with pytest.raises(DataError, match=r"run `uadbench prepare brats18-t1`"):
        create_dataset("brats18-t1").scans()  # not prepared yet: said, not read raw behind the user's back
    raw_before = files_under(tmp_path / "raw")
    assert main(["prepare", "brats18-t1"]) == 0
    out = capsys.readouterr().out
    assert "skull-strip none, register none, bias none, 2 mm (the [prepare] table of brats18-t1.toml)" in out
    assert f"prepared {len(ids)}, already prepared 0, failed 0" in out and "reads" in out
    assert files_under(tmp_path / "raw") == raw_before
    prepared = tmp_path / "cards" / "prepared" / "brats18"
    entries = _manifest(prepared)
    assert sorted(entries) == sorted(f"brats18-t1/{i}" for i in ids)

    ds = create_dataset("brats18-t1")
    assert ds.reads_prepared and list(ds.scans()) == sorted(ids)
    for vol in ds.load("test"):
        scan = ds.scans()[vol.subject_id]
        assert scan.image.is_relative_to(prepared) and scan.brain_mask.name.endswith("_t1_brainmask.nii.gz")
        written = nib.load(str(scan.image))
        np.testing.assert_array_equal(vol.image, np.asarray(written.dataobj, dtype=np.float32))
        expected = subject_arrays(ids.index(vol.subject_id))
        assert vol.brain_mask.sum() == (expected["image"] != 0).sum()  # cropped to the brain, nothing lost
        assert vol.lesion_mask.sum() == (expected["lesion"] > 0).sum()
    assert ds.fingerprint() != create_dataset("brats18-t1", directory=tmp_path / "raw" / TOP18).fingerprint()

    assert main(["prepare", "brats18-t1"]) == 0  # a rerun finds everything done
    assert f"prepared 0, already prepared {len(ids)}" in capsys.readouterr().out


def test_a_card_prepares_as_the_builtin_adapter_does(tmp_path, registered):
    """The same BraTS 2018 download through a card and through brats21-t1 gives the same voxels."""
    card, ids = _brats18(tmp_path)
    registered(card)
    assert main(["prepare", "brats18-t1"]) == 0
    assert main(["prepare", "brats21-t1", "--raw", str(tmp_path / "raw" / TOP18), "--out", str(tmp_path / "builtin"),
                 "--register", "none", "--bias", "none", "--resolution", "2"]) == 0
    by_card = _manifest(tmp_path / "cards" / "prepared" / "brats18")
    builtin = _manifest(tmp_path / "builtin" / "brats21")
    for sid in ids:
        a, b = by_card[f"brats18-t1/{sid}"], builtin[f"brats21-t1/{sid}"]
        assert {k: v["data_sha256"] for k, v in a["files"].items()} == {k: v["data_sha256"] for k, v in b["files"].items()}
        assert {k: v["path"] for k, v in a["files"].items()} == {k: v["path"] for k, v in b["files"].items()}


def test_flags_override_the_prepare_table(tmp_path, registered):
    template = write(tmp_path / "cards" / "templates" / "brain.nii.gz", subject_arrays(0)["image"])
    card, _ = _brats18(tmp_path)
    card.write_text(card.read_text() + 'template = "templates/brain.nii.gz"\nmargin = 3\nskull_strip = "hd-bet"\nhd_bet_mode = "accurate"\n')
    registered(card)
    source = dataset_source("brats18-t1", None)
    assert source.directory == tmp_path / "raw" / TOP18 and not source.reads_prepared  # prepare reads the raw scans
    table = make_plan("brats18-t1", source, PrepareSettings(skull_strip="none"))
    assert (table.resolution, table.margin, table.template, table.register) == (2.0, 3, str(template), "none")
    flags = make_plan("brats18-t1", source, PrepareSettings(skull_strip="none", resolution=1.0, margin=0, template=str(tmp_path / "t.nii")))
    assert (flags.resolution, flags.margin, flags.template) == (1.0, 0, str(tmp_path / "t.nii"))
    assert "hd_bet_mode" not in table.recipe_settings()  # only with hd-bet
    builtin = create_dataset("brats21-t1", directory=tmp_path / "raw")
    assert make_plan("brats21-t1", builtin, PrepareSettings(register="none", bias="none")).resolution == 1.0  # the harness default


def test_prepare_a_card_without_a_prepared_folder(tmp_path, registered, capsys):
    ids = write_release(tmp_path / "raw", 2018, 3)
    text = BRATS18_CARD.replace('prepared = "{prepared}"\n', "")
    card = _card(tmp_path / "cards", "loose", text, root=tmp_path / "raw" / TOP18)
    registered(card)
    assert main(["prepare", "loose"]) == 2
    assert "names no prepared folder: add prepared" in capsys.readouterr().err
    assert main(["prepare", "loose", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f'add prepared = "{tmp_path / "out" / "loose"}" to {card}' in out
    assert sorted(k.split("/")[1] for k in _manifest(tmp_path / "out" / "loose")) == sorted(ids)
    assert not create_dataset("loose").reads_prepared  # until the card names the copy


@pytest.mark.parametrize("argv, message", [
    (["prepare", "brats18-t1", "--out", "{tmp}/elsewhere"], "reads its prepared copy from"),
    (["prepare", "ixi-t1", "--out", "{tmp}/out"], "--raw is required for dataset 'ixi-t1'"),
    (["prepare", "ixi-t1", "--raw", "{tmp}/raw"], "--out is required for dataset 'ixi-t1'"),
])
def test_prepare_errors_are_one_line(tmp_path, registered, capsys, argv, message):
    card, _ = _brats18(tmp_path)
    registered(card)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uadbench: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "out").exists()


def test_prepared_copy_inside_the_raw_folder_is_refused(tmp_path, registered, capsys):
    card, _ = _brats18(tmp_path, prepared=str(tmp_path / "raw" / TOP18 / "prep"))
    registered(card)
    assert main(["prepare", "brats18-t1"]) == 2
    assert "would write into the raw folder" in capsys.readouterr().err
    assert not (tmp_path / "raw" / TOP18 / "prep").exists()


PREPARE_TABLE_ERRORS = {
    "unknown key": ('skull-strip = "none"', "[prepare] unknown key(s) 'skull-strip'; valid keys: skull_strip"),
    "bad choice": ('register = "rigid"', "[prepare] register must be one of affine, none"),
    "mask without masks": ('skull_strip = "mask"', 'needs brain mask files, but brain_mask = "nonzero"'),
    "resolution": ("resolution = 20", "resolution must be a number of mm in [0.25, 8]"),
    "template climbs": ('template = "../t.nii"', "escapes the card's folder"),
    "not a table": (None, "[prepare] must be a table"),
}


@pytest.mark.parametrize("problem", sorted(PREPARE_TABLE_ERRORS))
def test_bad_prepare_tables_are_one_line_errors(tmp_path, problem):
    line, needle = PREPARE_TABLE_ERRORS[problem]
    text = GOOD.format(name="c", root="data") + ("prepare = 3\n" if line is None else f"[prepare]\n{line}\n")
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        read_card(tmp_path / "c.toml")
    assert needle in str(exc.value) and "\n" not in str(exc.value) and str(tmp_path / "c.toml") in str(exc.value)


def test_a_prepared_card_needs_relative_patterns(tmp_path):
    text = GOOD.format(name="c", root="data").replace('image = "*/', f'image = "{tmp_path}/') + 'prepared = "p"\n'
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match="needs image relative to root"):
        read_card(tmp_path / "c.toml")


# -- prepare -> run ---------------------------------------------------------------------------------
def _big_case(folder: Path, case: str, index: int) -> None:
    """A 48x48x32 volume at 2 mm (a brain box and a 12 mm tumour) that survives the smoke grid."""
    rng = np.random.default_rng(index)
    shape = (48, 48, 32)
    brain = np.zeros(shape, bool)
    brain[6:42, 6:42, 4:28] = True
    image = np.where(brain, 100 + 5 * rng.standard_normal(shape), 0).astype(np.float32)
    seg = np.zeros(shape, np.uint8)
    seg[18:24, 20:26, 12:18] = 2
    image[seg > 0] = 180
    for tag in ("t1", "t2"):
        write(folder / case / f"{case}_{tag}.nii.gz", image, AFFINE)
    write(folder / case / f"{case}_seg.nii.gz", seg, AFFINE)


def test_a_prepared_brats2018_card_trains_and_evaluates_like_a_builtin(tmp_path, registered, data_root, capsys):
    raw = tmp_path / "raw" / TOP18
    for i in range(4):
        _big_case(raw / ("HGG" if i % 2 else "LGG"), f"Brats18_2013_{i}_1", i)
    card = _card(tmp_path / "cards", "brats18-t2", BRATS18_CARD.replace("_t1.", "_t2."), root=raw, prepared="prepared")
    registered(card)
    assert main(["prepare", "brats18-t2"]) == 0
    grid = tmp_path / "grid.toml"
    grid.write_text(textwrap.dedent("""
        name = "card-smoke"
        image_grid = "smoke"
        train_dataset = "phantom-healthy-t2w"
        [[methods]]
        name = "thresh"
        preset = "smoke"
        [[datasets]]
        name = "brats18-t2"
    """))
    assert main(["run", str(grid), "--out", str(tmp_path / "run"), "--no-tracking"]) == 0, capsys.readouterr().err
    from uadbench.records import read_records

    (record,) = read_records(tmp_path / "run" / "results.jsonl")
    assert record.dataset == "brats18-t2" and record.shift == "none"
    assert record.thresholds["val-bisection"]["source"].startswith("brats18-t2/val")
    assert 0 < record.metrics["auprc"] <= 1 and record.metrics["auroc"] > 0.5  # a bright tumour: found above chance
