"""Parameter sweeps: a list in a method's overrides expands to one fit per value."""

from __future__ import annotations

import pytest

from uadbench.errors import ConfigError
from uadbench.grid import parse_grid

BASE = {"name": "sweep", "image_grid": "smoke", "seeds": [0], "train_dataset": "phantom-healthy-t2w",
        "datasets": [{"name": "phantom-tumour-t2w"}]}


def _grid(*methods, **extra):
    return parse_grid({**BASE, "methods": list(methods), **extra})


def test_a_list_override_expands_to_one_entry_per_value_in_order():
    spec = _grid({"name": "ae", "preset": "smoke", "overrides": {"steps": [3, 1, 2], "lr": 0.01}})
    assert [m.display for m in spec.methods] == ["ae[steps=3]", "ae[steps=1]", "ae[steps=2]"]
    assert [m.sweep for m in spec.methods] == [(("steps", 3),), (("steps", 1),), (("steps", 2),)]
    assert all(m.overrides_dict["lr"] == 0.01 for m in spec.methods)
    fits = spec.fit_jobs()
    assert [f.config.steps for f in fits] == [3, 1, 2]
    assert len({f.key for f in fits}) == 3


def test_two_swept_fields_give_their_product_first_field_slowest():
    spec = _grid({"name": "ae", "preset": "smoke", "label": "AE", "overrides": {"steps": [1, 2], "lr": [0.1, 0.01]}})
    assert [m.display for m in spec.methods] == ["AE[steps=1,lr=0.1]", "AE[steps=1,lr=0.01]", "AE[steps=2,lr=0.1]", "AE[steps=2,lr=0.01]"]


def test_a_sequence_field_sweeps_only_with_a_list_of_lists():
    one = _grid({"name": "ae", "preset": "smoke", "overrides": {"channels": [8, 8, 8, 8]}})
    assert [m.display for m in one.methods] == ["ae"] and one.methods[0].sweep == ()
    two = _grid({"name": "ae", "preset": "smoke", "overrides": {"channels": [[8, 8, 8, 8], [4, 8, 8, 8]]}})
    assert [m.display for m in two.methods] == ["ae[channels=(8,8,8,8)]", "ae[channels=(4,8,8,8)]"]
    assert two.fit_jobs()[1].config.channels == (4, 8, 8, 8)


def test_fit_key_of_a_swept_value_equals_the_plain_entry_with_that_value():
    swept = _grid({"name": "ae", "preset": "smoke", "overrides": {"steps": [2, 5]}}).fit_jobs()
    plain = _grid({"name": "ae", "preset": "smoke", "overrides": {"steps": 5}}).fit_jobs()
    assert swept[1].key == plain[0].key  # a sweep reuses what a plain grid fitted, and back


@pytest.mark.parametrize("overrides, message", [
    ({"steps": []}, "sweeps no value"),
    ({"steps": [2, 2]}, "lists a value twice"),
    ({"steps": [2, -1]}, "steps"),
])
def test_bad_sweeps_are_refused_when_the_grid_is_read(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _grid({"name": "ae", "preset": "smoke", "overrides": overrides})


def test_two_entries_with_one_config_are_refused():
    # the cpu preset's steps are 1500: ae[steps=1500] and plain ae would be one fit under two labels
    with pytest.raises(ConfigError, match="'ae\\[steps=1500\\]' and 'ae' have the same config"):
        parse_grid({**BASE, "image_grid": "cpu", "methods": [{"name": "ae", "preset": "cpu", "overrides": {"steps": [1500, 4500]}},
                                                             {"name": "ae", "preset": "cpu"}]})
    with pytest.raises(ConfigError, match="same config"):
        _grid({"name": "ae", "preset": "smoke", "overrides": {"lr": [1, 1.0]}})


def test_sweep_figure_takes_text_and_sequence_values():
    from uadbench.records import ResultRecord
    from uadbench.report.figures import sweep_curves, sweep_frame

    def record(label, sweep, auprc):
        return ResultRecord(grid="g", spec_hash="s", method="cddpm", label=label, preset="cpu", config_hash="c", fit_key=label,
                            eval_key=label, train_dataset="h", dataset="d", split="test", val_split="val", shift="none", severity=None,
                            seed=0, image_grid={}, metrics={"auprc": auprc}, thresholds={}, per_volume={}, cost={"train_seconds": 1.0},
                            versions={}, confidence_intervals={"auprc": [auprc - 0.1, auprc + 0.1]}, sweep=sweep)

    records = [record("cddpm[noise='gaussian',steps=3]", {"noise": "gaussian", "steps": 3}, 0.4),
               record("cddpm[noise='simplex',steps=3]", {"noise": "simplex", "steps": 3}, 0.5)]
    frame = sweep_frame(records, "noise", metrics=("auprc",))
    assert list(frame["noise"]) == ["gaussian", "simplex"] and set(frame["method"]) == {"cddpm[steps=3]"}
    assert sweep_curves(records, "noise", metrics=("auprc",)) is not None


def test_a_swept_entry_clashing_with_a_plain_label_is_refused():
    with pytest.raises(ConfigError, match="listed twice"):
        _grid({"name": "ae", "preset": "smoke", "overrides": {"steps": [2, 3]}},
              {"name": "ae", "preset": "smoke", "label": "ae[steps=2]"})


@pytest.mark.slow
def test_sweep_runs_caches_each_value_and_draws_its_figure(tmp_path, data_root):
    from uadbench.report.figures import render_record_figures, sweep_frame
    from uadbench.run.runner import run_grid

    grid = {**BASE, "methods": [{"name": "ae", "preset": "smoke", "overrides": {"steps": [1, 3]}}, {"name": "thresh", "preset": "smoke"}]}
    first = run_grid(parse_grid(grid), out_dir=tmp_path / "run", track=False, progress=lambda m: None)
    assert not first.failures
    by_label = {r.label: r for r in first.records}
    assert set(by_label) == {"ae[steps=1]", "ae[steps=3]", "thresh"}
    assert by_label["ae[steps=1]"].sweep == {"steps": 1} and by_label["thresh"].sweep == {}
    assert by_label["ae[steps=1]"].fit_key != by_label["ae[steps=3]"].fit_key
    fits = sorted(p.name for p in (tmp_path / "run" / "cache" / "fits").iterdir())
    assert len(fits) == 3 and {by_label[k].fit_key for k in by_label} == set(fits)

    # one more value: the two fitted values come from the cache, only the new one trains
    grid["methods"][0]["overrides"]["steps"] = [1, 3, 2]
    again = run_grid(parse_grid(grid), out_dir=tmp_path / "run", track=False, progress=lambda m: None)
    cached = {f["label"]: f.get("cached") for f in again.fits}
    assert cached == {"ae[steps=1]": True, "ae[steps=3]": True, "ae[steps=2]": False, "thresh": True}, cached
    assert {r.label for r in again.records} == {"ae[steps=1]", "ae[steps=3]", "ae[steps=2]", "thresh"}
    assert all(r.spec_hash == again.records[0].spec_hash for r in again.records)  # cached cells belong to this grid now

    frame = sweep_frame(again.records, "steps")
    assert sorted(frame.loc[frame["metric"] == "auprc", "steps"]) == [1.0, 2.0, 3.0]
    paths = render_record_figures(again.records, tmp_path / "figures", formats=("png",), dpi=40)
    assert [p.name for p in paths] == ["sweep-steps.png"] and paths[0].stat().st_size > 5000


def _big_grid(n_steps: int, n_seeds: int, n_severities: int) -> dict:
    return {"name": "big", "image_grid": "smoke", "train_dataset": "phantom-healthy-t2w", "seeds": list(range(n_seeds)),
            "methods": [{"name": "ae", "preset": "smoke", "overrides": {"steps": list(range(10, 10 + n_steps))}}],
            "datasets": [{"name": "phantom-tumour-t2w"}],
            "shifts": [{"name": "gamma", "severities": [round(0.5 + 0.1 * i, 1) for i in range(n_severities)]}]}


def test_a_grid_past_the_cell_cap_is_refused_naming_the_count_and_the_flag(tmp_path, capsys):
    from uadbench.errors import ConfigError
    from uadbench.grid import parse_grid

    raw = _big_grid(11, 10, 9)  # 110 fits x 1 dataset x 10 shifts (none included) = 1,100 cells
    with pytest.raises(ConfigError, match=r"expands to 1,100 evaluation cells \(110 fits\), more than the cap of 1,000; .*--max-cells 1100"):
        parse_grid(dict(raw), max_cells=1000)
    assert len(parse_grid(dict(raw), max_cells=1100).eval_jobs()) == 1100
    from uadbench.cli import main

    grid = tmp_path / "big.toml"
    sev = ", ".join(str(s) for s in raw["shifts"][0]["severities"])
    grid.write_text(f'name = "big"\nimage_grid = "smoke"\ntrain_dataset = "phantom-healthy-t2w"\nseeds = {list(range(10))}\n'
                    f'[[methods]]\nname = "ae"\npreset = "smoke"\noverrides = {{ steps = {list(range(10, 21))} }}\n'
                    f'[[datasets]]\nname = "phantom-tumour-t2w"\n[[shifts]]\nname = "gamma"\nseverities = [{sev}]\n')
    assert main(["run", str(grid), "--out", str(tmp_path / "out"), "--max-cells", "1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1,100 evaluation cells" in err and "--max-cells 1100" in err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_ten_thousand_cells_expand_in_linear_time():
    import time

    from uadbench.grid import parse_grid

    timings = {}
    for steps in (25, 100):  # 2,500 and 10,000 cells
        start = time.perf_counter()
        spec = parse_grid(_big_grid(steps, 10, 9), max_cells=10_000)
        n = len(spec.eval_jobs(spec.fit_jobs()))
        timings[n] = time.perf_counter() - start
    assert sorted(timings) == [2500, 10000]
    # 4x the cells may take at most ~6x the time (linear with slack for a loaded machine), not 16x
    assert timings[10000] < 6 * timings[2500] + 0.5, timings
