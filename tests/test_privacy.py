"""Pseudonyms: a run names subjects by a keyed hash unless asked for real ids, and nothing it
writes for others (records, leaderboard, edition, MLflow) holds a subject id; example volumes
reach MLflow only when asked for."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import shutil
import stat

import pytest
from ixi_sites import GRID, write_ixi_sites

from uadbench.errors import UadbenchError
from uadbench.records import Pseudonyms, ResultRecord, name_subjects, pseudonym_key, read_records


def _ids_in(folder, ids) -> list[str]:
    """Every file under ``folder`` (text or binary) that holds one of ``ids`` or the bare IXI prefix of one."""
    needles = [i.encode() for i in ids] + [i.split("-")[0].encode() + b"-" for i in ids]
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(folder)}: {n.decode()}" for n in needles if n in data]
    return found


# -- the key and the pseudonyms --------------------------------------------------------------------
def test_pseudonyms_are_hmac_sha256_stable_under_one_key_and_differ_under_another():
    key, other = bytes(range(32)), bytes(range(1, 33))
    name = Pseudonyms(key)
    expected = "sub-" + hmac.new(key, b"IXI002-Guys-0828", hashlib.sha256).hexdigest()[:12]
    assert name("IXI002-Guys-0828") == expected == Pseudonyms(bytes(key))("IXI002-Guys-0828")
    assert Pseudonyms(other)("IXI002-Guys-0828") != expected
    assert name("IXI002-Guys-0828") != name("IXI012-HH-1211")
    assert name.scheme == "hmac-sha256:" + hashlib.sha256(key).hexdigest()[:8] != Pseudonyms(other).scheme
    assert "key" not in repr(name) or key.hex() not in repr(name)


def test_the_key_file_is_made_once_with_mode_0600(tmp_path):
    path = tmp_path / "run" / "pseudonym.key"
    key = pseudonym_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pseudonym_key(path) == key == pseudonym_key(path, create=False)  # read, never replaced
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]  # no temporary left
    assert pseudonym_key(tmp_path / "other.key") != key  # random per run
    with pytest.raises(UadbenchError, match="pseudonym key not found"):
        pseudonym_key(tmp_path / "none.key", create=False)
    (tmp_path / "bad.key").write_text("not hex\n")
    with pytest.raises(UadbenchError, match=r"bad.key: not a pseudonym key \(expected 64 hex digits\)"):
        pseudonym_key(tmp_path / "bad.key")


def _record(**fields) -> ResultRecord:
    base = dict(grid="g", spec_hash="s", method="m", label="m", preset="p", config_hash="c", fit_key="f", eval_key="e",
                train_dataset="ixi-t1", dataset="ixi-t1", split="test", val_split="val", shift="none", severity=None, seed=0,
                image_grid={}, metrics={"auprc": 0.5}, thresholds={}, cost={}, versions={},
                per_volume={"IXI100-HH-1000": {"fp_volume_ml@val-bisection": 1.5}, "IXI101-Guys-1001": {"auprc": 0.25}},
                subjects={"IXI100-HH-1000": {"age": 30.0, "sex": "M", "site": "HH"}},
                floor={"metrics": {"auprc": 0.1}, "per_volume": {"IXI101-Guys-1001": {"auprc": 0.1}}})
    return ResultRecord(**{**base, **fields})


def test_name_subjects_renames_every_subject_field_and_keeps_the_values():
    rec, name = _record(), Pseudonyms(b"k" * 32)
    named = name_subjects(rec, name)
    a, b = name("IXI100-HH-1000"), name("IXI101-Guys-1001")
    assert named.per_volume == {a: {"fp_volume_ml@val-bisection": 1.5}, b: {"auprc": 0.25}}
    assert named.subjects == {a: {"age": 30.0, "sex": "M", "site": "HH"}}
    assert named.floor == {"metrics": {"auprc": 0.1}, "per_volume": {b: {"auprc": 0.1}}}
    assert named.subject_ids == name.scheme and named.metrics == rec.metrics
    assert name_subjects(named, name) is named  # never renamed twice
    assert "IXI1" not in named.to_json()
    assert ResultRecord.from_json(named.to_json()) == named  # the field round-trips
    real = name_subjects(rec, None)
    assert real.per_volume == rec.per_volume and real.subject_ids == "real"
    synthetic = name_subjects(rec, name, synthetic=True)
    assert synthetic.per_volume == rec.per_volume and synthetic.subject_ids == "synthetic"
    old = json.loads(rec.to_json())
    del old["subject_ids"]
    assert ResultRecord.from_dict(old).subject_ids == ""  # records written before the field read fine


# -- a run on real-looking data: three IXI sites ---------------------------------------------------
@pytest.fixture(scope="module")
def ixi_run(tmp_path_factory):
    from uadbench.run.runner import run_grid

    work = tmp_path_factory.mktemp("privacy")
    facts = write_ixi_sites(work / "data" / "ixi")
    (work / "sites.toml").write_text(GRID)
    saved = os.environ.get("UADBENCH_DATA")
    os.environ["UADBENCH_DATA"] = str(work / "data")
    try:
        summary = run_grid(work / "sites.toml", out_dir=work / "run", cache_dir=work / "cache", data_root=work / "data",
                           progress=lambda _: None)
    finally:
        if saved is None:
            os.environ.pop("UADBENCH_DATA", None)
        else:
            os.environ["UADBENCH_DATA"] = saved
    return work, facts, summary


def test_a_run_names_subjects_by_pseudonyms_and_mlflow_holds_no_id_nor_example(ixi_run):
    work, facts, summary = ixi_run
    rec = summary.records[0]
    name = Pseudonyms.from_file(work / "run" / "pseudonym.key", create=False)
    assert rec.subject_ids == name.scheme
    assert set(rec.per_volume) <= {name(s) for s in facts} and len(rec.per_volume) == 10  # 3 IOP tests + 7 Guys/HH healthy tests
    assert rec.subjects == {name(s): facts[s] for s in facts if name(s) in rec.per_volume}
    assert stat.S_IMODE((work / "run" / "pseudonym.key").stat().st_mode) == 0o600
    assert _ids_in(work / "run", facts) == []  # results.jsonl, leaderboard.md, mlflow.db, mlartifacts
    logged = [p.relative_to(work / "run" / "mlartifacts").as_posix() for p in (work / "run" / "mlartifacts").rglob("*") if p.is_file()]
    assert logged and not any("/example/" in p or p.endswith(".nii.gz") for p in logged)  # no example volume by default
    assert any(p.name.endswith("_anomaly_map.nii.gz") for p in (work / "cache").rglob("*"))  # it stays in the cache


def test_an_edition_built_from_the_records_contains_no_subject_id(ixi_run, tmp_path):
    from uadbench.report.publish import publish

    work, facts, summary = ixi_run
    edition = publish(summary.results_path, tmp_path / "edition", cache_dir=work / "cache", formats=("png", "pdf"))
    assert any(p.name.startswith("examples-") for p in edition.figures)  # the example panel is there, its title names nobody
    assert _ids_in(tmp_path / "edition", facts) == []
    assert "subgroups by site" in (tmp_path / "edition" / "leaderboard.md").read_text()
    assert f"Subjects are named by pseudonyms (HMAC-SHA256 of the subject id under the run's key, {summary.records[0].subject_ids})" in (
        tmp_path / "edition" / "README.md").read_text()
    assert not (tmp_path / "edition" / "pseudonym.key").exists()


def test_pseudonyms_are_stable_across_runs_with_one_key_and_real_ids_when_asked(ixi_run, tmp_path):
    from uadbench.run.runner import run_grid

    work, facts, summary = ixi_run
    first = summary.records[0]
    again, fresh, real = tmp_path / "again", tmp_path / "fresh", tmp_path / "real"
    again.mkdir()
    shutil.copy2(work / "run" / "pseudonym.key", again / "pseudonym.key")
    runs = {}
    for run_dir, real_ids in ((again, False), (fresh, False), (real, True)):
        runs[run_dir.name] = run_grid(work / "sites.toml", out_dir=run_dir, cache_dir=work / "cache", data_root=work / "data",
                                      track=False, real_ids=real_ids, progress=lambda _: None).records[0]
    assert runs["again"].per_volume == first.per_volume and runs["again"].subject_ids == first.subject_ids
    assert set(runs["fresh"].per_volume).isdisjoint(first.per_volume) and runs["fresh"].subject_ids != first.subject_ids
    assert runs["real"].subject_ids == "real" and not (real / "pseudonym.key").exists()
    assert any(f.startswith("results.jsonl: IXI") for f in _ids_in(real, facts))  # the search finds ids where they are
    name = Pseudonyms.from_file(work / "run" / "pseudonym.key", create=False)
    assert {name(s): v for s, v in runs["real"].per_volume.items()} == first.per_volume  # same numbers, other names
    assert dataclasses.replace(read_records(real / "results.jsonl")[0], created="") == dataclasses.replace(runs["real"], created="")


def test_phantom_ids_are_synthetic_and_kept(data_root, tmp_path):
    from uadbench.data.dataset import create_dataset
    from uadbench.grid import parse_grid
    from uadbench.run.runner import subject_naming

    spec = parse_grid({"name": "p", "image_grid": "cpu", "train_dataset": "phantom-healthy-t2w", "methods": [{"name": "thresh"}],
                       "datasets": [{"name": "phantom-tumour-t2w"}]})
    rec = _record(train_dataset="phantom-healthy-t2w", dataset="phantom-tumour-t2w", per_volume={"healthy-test-000": {"auprc": 0.5}},
                  subjects={}, floor={})
    named = subject_naming(spec, tmp_path / "run", real_ids=False)(rec)
    assert named.per_volume == rec.per_volume and named.subject_ids == "synthetic"
    assert not (tmp_path / "run" / "pseudonym.key").exists()  # no key where nothing is pseudonymised
    phantom = create_dataset("phantom-healthy-t2w", root=data_root)
    assert phantom.subject_info("test") == {s: {"site": "generic-3t"} for s in phantom.subjects("test")}
