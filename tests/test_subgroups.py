"""Subgroup tables (age band, sex, site) against a pandas reference, and sites as a real shift:
``<dataset>@<site>`` selections train on some sites and evaluate on a held-out one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ixi_sites import SITES, write_ixi_sites

from uadbench.data.dataset import SiteSubset, create_dataset
from uadbench.errors import ConfigError, DataError
from uadbench.records import ResultRecord
from uadbench.report.subgroups import SUBGROUP_METRICS, age_band, subgroup_frame, subgroup_tables


def _records(seed: int = 0) -> list[ResultRecord]:
    """Two methods x two seeds x (unshifted, gamma) on 30 subjects with random values and facts."""
    rng = np.random.default_rng(seed)
    facts = {f"s{i:02d}": {"age": float(rng.uniform(20, 85)), "sex": "F" if rng.random() < 0.5 else "M", "site": str(rng.choice(SITES))}
             for i in range(30)}
    facts["s00"]["age"] = None  # a subject without an age is in no age band
    out = []
    for label in ("ae", "vae"):
        for s in (0, 1):
            for shift, severity in (("none", None), ("gamma", 1.5)):
                per_volume = {sid: {"fp_volume_ml@val-bisection": float(rng.gamma(2.0, 5.0)), "auprc": float(rng.random()),
                                    "dice@val-bisection": float(rng.random())} for sid in facts}
                per_volume["s01"].pop("auprc")  # a healthy subject has no lesion metrics
                out.append(ResultRecord(grid="g", spec_hash="abc", method=label, label=label, preset="p", config_hash=label,
                                        fit_key=label, eval_key=f"{label}{s}{shift}", train_dataset="ixi-t1", dataset="ixi-t1@IOP",
                                        split="test", val_split="val", shift=shift, severity=severity, seed=s, image_grid={},
                                        metrics={}, thresholds={}, per_volume=per_volume, cost={}, versions={}, subjects=facts))
    return out


def test_age_bands():
    assert [age_band(a) for a in (20, 39.99, 40, 59.5, 60, 86)] == ["<40", "<40", "40-59", "40-59", ">=60", ">=60"]
    assert age_band(None) is None and age_band("n/a") is None and age_band(float("nan")) is None


def test_subgroup_frame_matches_a_pandas_groupby_reference():
    records = _records()
    rows = [(r.label, r.seed, sid, m, v, f["age"], f["sex"], f["site"]) for r in records if r.shift == "none"
            for sid, vals in r.per_volume.items() for m, v in vals.items() for f in [r.subjects[sid]]]
    ref = pd.DataFrame(rows, columns=["label", "seed", "subject", "metric", "value", "age", "sex", "site"])
    ref["age"] = pd.cut(ref["age"], [-np.inf, 40, 60, np.inf], right=False, labels=["<40", "40-59", ">=60"]).astype(object)
    got = subgroup_frame(records)
    assert set(got["dimension"]) == {"age", "sex", "site"} and set(got["metric"]) <= set(SUBGROUP_METRICS)
    for dimension in ("age", "sex", "site"):
        expected = (ref.dropna(subset=[dimension]).groupby([dimension, "label", "metric"])
                    .agg(mean=("value", "mean"), n=("subject", "nunique")).reset_index())
        part = got[got["dimension"] == dimension].rename(columns={"group": dimension})
        merged = expected.merge(part, on=[dimension, "label", "metric"], suffixes=("_ref", ""), validate="one_to_one")
        assert len(merged) == len(expected) == len(part)
        np.testing.assert_allclose(merged["mean"], merged["mean_ref"], rtol=1e-12)
        assert (merged["n"] == merged["n_ref"]).all()
    assert got[(got["dimension"] == "age")]["n"].groupby(got["label"]).sum().eq(29 * 3 - 1).all()  # 29 aged subjects x 3 metrics, s01 without auprc


def test_subgroup_tables_show_the_frame_and_only_dimensions_with_two_groups():
    records = _records()
    frame = subgroup_frame(records)
    tables = {t.name: t for t in subgroup_tables(records)}
    assert set(tables) == {"subgroups-age", "subgroups-sex", "subgroups-site"}
    site = tables["subgroups-site"]
    row = frame[(frame["dimension"] == "site") & (frame["label"] == "vae") & (frame["metric"] == "auprc") & (frame["group"] == "IOP")]
    col = next(c for c in site.cells.columns if " site IOP " in c[0] and c[1] == "AUPRC")
    assert site.cells.loc["vae", col] == f"{100 * float(row['mean'].iloc[0]):.2f}"
    assert f"(n={int(frame[(frame['dimension'] == 'site') & (frame['group'] == 'IOP')]['n'].max())})" in col[0]
    one_site = [r.__class__(**{**r.to_dict(), "subjects": {s: {**f, "site": "HH"} for s, f in r.subjects.items()}}) for r in records]
    assert "subgroups-site" not in {t.name for t in subgroup_tables(one_site)}
    assert subgroup_tables([r.__class__(**{**r.to_dict(), "subjects": {}}) for r in records]) == []  # older records: no table


# -- sites as a shift --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ixi(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    facts = write_ixi_sites(root / "ixi")
    return root, facts


def test_a_site_selection_holds_no_held_out_subject_in_training(ixi):
    root, facts = ixi
    base = create_dataset("ixi-t1", root=root)
    seen, held_out = create_dataset("ixi-t1@Guys+HH", root=root), create_dataset("ixi-t1@IOP", root=root)
    assert isinstance(seen, SiteSubset) and seen.name == "ixi-t1@Guys+HH" and seen.splits == base.splits
    for split in base.splits:
        assert {facts[s]["site"] for s in seen.subjects(split)} <= {"Guys", "HH"}
        assert {facts[s]["site"] for s in held_out.subjects(split)} <= {"IOP"}
        assert sorted(seen.subjects(split) + held_out.subjects(split)) == sorted(base.subjects(split))  # the dataset's own splits
    train = seen.load("train")
    assert [v.subject_id for v in train] == seen.subjects("train") and not {facts[v.subject_id]["site"] for v in train} & {"IOP"}
    assert seen.subject_info("test") == {s: facts[s] for s in seen.subjects("test")}
    assert seen.fingerprint() != base.fingerprint() != held_out.fingerprint()


def test_the_prepared_training_split_of_a_site_selection(ixi, tmp_path):
    from uadbench.data.pipeline import get_image_grid
    from uadbench.run.splits import prepare_split

    root, facts = ixi
    volumes = prepare_split("ixi-t1@Guys+HH", "train", grid=get_image_grid("cpu"), data_seed=0, cache_dir=tmp_path, data_root=root)
    assert volumes and {facts[v.subject_id]["site"] for v in volumes} <= {"Guys", "HH"}


def test_bad_site_selections_say_what_is_valid(ixi):
    from uadbench.grid import parse_grid

    root, _ = ixi
    with pytest.raises(DataError, match=r"no subject of 'ixi-t1' is at site 'Kings'; its sites: Guys, HH, IOP"):
        create_dataset("ixi-t1@Kings", root=root).subjects("train")
    with pytest.raises(DataError, match="a site selector is <dataset>@<site>"):
        create_dataset("ixi-t1@HH+HH", root=root)
    grid = {"name": "s", "image_grid": "cpu", "train_dataset": "ixi-t1@Guys+", "methods": [{"name": "thresh"}],
            "datasets": [{"name": "ixi-t1@IOP"}]}
    with pytest.raises(ConfigError, match=r"train_dataset: dataset 'ixi-t1@Guys\+': a site selector"):
        parse_grid(grid)
    spec = parse_grid({**grid, "train_dataset": "ixi-t1@Guys+HH"})
    assert spec.train_dataset == "ixi-t1@Guys+HH" and spec.datasets[0].name == "ixi-t1@IOP"
    site = {**grid, "train_dataset": "ixi-t1@Guys+HH", "shifts": [{"name": "site", "sites": ["HH"]}]}
    with pytest.raises(ConfigError, match=r"shifts\[0\]: site 'HH' is in the training selection 'ixi-t1@Guys\+HH'"):
        parse_grid(site)
    with pytest.raises(ConfigError, match=r"shifts\[0\]: shift 'site' evaluates on sites the fits never saw; train on a site selection"):
        parse_grid({**site, "train_dataset": "ixi-t1", "shifts": [{"name": "site", "sites": ["IOP"]}]})
    with pytest.raises(ConfigError, match=r"shifts\[0\]: shift 'site' needs sites = \[...\]"):
        parse_grid({**site, "shifts": [{"name": "site", "sites": "IOP"}]})
    with pytest.raises(ConfigError, match=r"unknown key 'severities'; valid keys: name, sites"):
        parse_grid({**site, "shifts": [{"name": "site", "sites": ["IOP"], "severities": [1.0]}]})
    with pytest.raises(ConfigError, match="shift 'field' re-acquires subjects"):
        parse_grid({**grid, "train_dataset": "phantom-healthy-t2w@generic-3t", "datasets": [{"name": "phantom-tumour-t2w"}],
                    "shifts": [{"name": "field", "severities": [1.5]}]})


SITE_GRID = """
name = "site-shift"
image_grid = "cpu"
seeds = [0]
train_dataset = "ixi-t1@Guys+HH"

[[methods]]
name = "thresh"

[[datasets]]
name = "ixi-t1@Guys+HH"

[[shifts]]
name = "site"
sites = ["IOP"]
"""


def test_a_held_out_site_is_a_shift_in_the_shift_tables(ixi, tmp_path, monkeypatch):
    from uadbench.grid import load_grid
    from uadbench.report import tables_for
    from uadbench.run.runner import run_grid

    root, facts = ixi
    monkeypatch.setenv("UADBENCH_IXI_DIR", str(root / "ixi"))
    (tmp_path / "grid.toml").write_text(SITE_GRID)
    spec = load_grid(tmp_path / "grid.toml")
    assert [s.label for s in spec.shifts] == ["none", "site@IOP"]
    fit = spec.fit_jobs()[0]
    assert fit.train_dataset == "ixi-t1@Guys+HH"
    held = next(j for j in spec.eval_jobs([fit]) if j.shift.site == "IOP")
    assert {m.dataset for m in held.maps} == {"ixi-t1@IOP", "ixi-t1@Guys+HH"} and held.map("healthy_test").dataset == "ixi-t1@IOP"
    summary = run_grid(spec, out_dir=tmp_path / "run", data_root=root, track=False, real_ids=True, progress=lambda _: None)
    by_shift = {r.shift_label: r for r in summary.records}
    assert set(by_shift) == {"none", "site@IOP"} and not summary.failures
    seen, out = by_shift["none"], by_shift["site@IOP"]
    base = create_dataset("ixi-t1", root=root)
    assert sorted(seen.per_volume) == sorted(s for s in base.subjects("test") if facts[s]["site"] != "IOP")  # each test scan once
    assert sorted(out.per_volume) == sorted(s for s in base.subjects("test") if facts[s]["site"] == "IOP")
    assert {f["site"] for f in out.subjects.values()} == {"IOP"} and out.healthy_test.startswith(f"ixi-t1@IOP/test ({len(out.per_volume)} volumes")
    metric = "fp_volume_ml@healthy-fpr@5%"
    assert out.metrics[metric] == pytest.approx(np.mean([v[metric] for v in out.per_volume.values()]))
    table = next(t for t in tables_for(summary.records) if t.name == "shift-ixi-t1@Guys+HH-site")
    col = ("site@IOP", "FP ml on healthy@healthy-fpr@5% ↓")
    delta = out.metrics[metric] - seen.metrics[metric]
    assert out.metrics[metric] > 0 and abs(delta) > 5e-3, (out.metrics[metric], seen.metrics[metric])
    assert table.cells.loc["thresh", col] == f"{out.metrics[metric]:.2f} ({delta:+.2f})"
    assert "held-out site" in table.caption
