"""Leaderboard tables from records: the tidy frame, statistics, markup, snapshots, LaTeX, CSV, the edition."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from uadbench import report
from uadbench.errors import UadbenchError
from uadbench.evaluation.stats import (
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    bootstrap_resamples,
    compare_seeds,
    hierarchical_bootstrap_ci,
    paired_permutation_test,
)
from uadbench.records import ResultRecord, records_text

SNAPSHOTS = Path(__file__).resolve().parent / "data" / "report"
UPDATE = os.environ.get("UADBENCH_UPDATE_SNAPSHOTS") == "1"

# per-subject AUPRC of six lesioned subjects: b is close to a with mixed signs (a paired test cannot
# separate them), c is below a on every subject (2 of 64 sign patterns as extreme: p = 0.03125)
AUPRC = {
    "a": [0.60, 0.55, 0.70, 0.65, 0.50, 0.62],
    "b_x": [0.58, 0.57, 0.66, 0.67, 0.49, 0.60],
    "c": [0.20, 0.25, 0.30, 0.22, 0.18, 0.21],
}
# a starts 30 points down and gains them all under the shift; b_x and c lose 10 points
OFFSETS = {"a": {"none": 0.3, "gamma": 0.0}, "b_x": {"none": 0.0, "gamma": 0.1}, "c": {"none": 0.0, "gamma": 0.1}}
FLOOR_AUPRC = [0.05, 0.04, 0.06, 0.05, 0.05, 0.04]
SUBJECTS = [f"tumour-{i}" for i in range(6)]
HEALTHY = ["healthy-0", "healthy-1"]


def _per_volume(auprc: list[float], shift: float, seed: int) -> dict[str, dict[str, float]]:
    out = {}
    for i, (s, v) in enumerate(zip(SUBJECTS, auprc)):
        v = v - shift + 0.01 * seed
        out[s] = {"auprc": v, "auroc": 0.5 + v / 2, "dice@val-bisection": v * 0.8, "dice@oracle": min(1.0, v * 0.8 + 0.1),
                  "l1_lesion": 0.3 + 0.01 * i, "l1_healthy": 0.1, "l1_ratio": (0.3 + 0.01 * i) / 0.1}
    for i, s in enumerate(HEALTHY):
        out[s] = {"fp_volume_ml@val-bisection": 2.0 + i + seed, "l1_healthy": 0.1}
    return out


def _aggregates(per_volume: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = {k for v in per_volume.values() for k in v}
    out = {k: float(np.mean([v[k] for v in per_volume.values() if k in v])) for k in sorted(keys)}
    lesion = [v for v in per_volume.values() if "l1_lesion" in v]
    out["l1_ratio"] = sum(v["l1_lesion"] for v in lesion) / sum(v["l1_healthy"] for v in lesion)
    return out


def _floor() -> dict:
    per_volume = {s: {"auprc": v, "auroc": 0.81, "dice@val-bisection": 0.1, "dice@oracle": 0.12, "l1_lesion": 1.0, "l1_healthy": 0.4,
                      "l1_ratio": 2.5} for s, v in zip(SUBJECTS, FLOOR_AUPRC)}
    per_volume.update({s: {"fp_volume_ml@val-bisection": 1300.0, "l1_healthy": 0.4} for s in HEALTHY})
    return {"map": "1 on the brain mask, 0 elsewhere", "metrics": _aggregates(per_volume), "per_volume": per_volume,
            "confidence_intervals": {}, "brain_prevalence": 0.0482}


def make_records(spec_hash: str = "0123abcd4567", seeds=(0, 1), floor: bool = True) -> list[ResultRecord]:
    out = []
    for label, auprc in AUPRC.items():
        for shift, severity in (("none", None), ("gamma", 1.5)):
            for seed in seeds:
                per_volume = _per_volume(auprc, OFFSETS[label][shift], seed)
                out.append(ResultRecord(
                    grid="g", spec_hash=spec_hash, method=label, label=label, preset="cpu", config_hash="c", fit_key=f"f{label}{seed}",
                    eval_key=f"e{label}{seed}{shift}", train_dataset="t", dataset="d", split="test", val_split="val", shift=shift,
                    severity=severity, seed=seed, image_grid={}, thresholds={}, per_volume=per_volume, versions={"uadbench": "0.1.0"},
                    metrics=_aggregates(per_volume), device="cpu", precision="fp32", threads=1,
                    cost={"num_parameters": 1_500_000 if label == "a" else 2402, "train_seconds": 10.0, "seconds_per_volume": 0.5},
                    dataset_stats={"lesion_prevalence": 0.02}, floor=_floor() if floor else {}))
    return out


# -- the tidy frame and the summary -----------------------------------------------------------------
def test_tidy_frame_has_a_row_per_cell_metric_and_per_subject_metric_and_one_floor_per_cell():
    records = make_records()
    frame = report.tidy_frame(records)
    cells = frame[frame["level"] == "cell"]
    subjects = frame[frame["level"] == "subject"]
    floors = {(r.dataset, r.shift_label, r.seed) for r in records}
    n_cell = sum(len(r.metrics) + 3 for r in records) + len(floors) * (len(_floor()["metrics"]) + 1)  # + costs; + prevalence
    n_subject = sum(sum(len(v) for v in r.per_volume.values()) for r in records) + len(floors) * sum(
        len(v) for v in _floor()["per_volume"].values())
    assert len(cells) == n_cell and len(subjects) == n_subject
    floor_rows = cells[cells["kind"] == "floor"]
    assert set(floor_rows["label"]) == {"floor"} and floor_rows.groupby(["shift", "seed"], observed=True).ngroups == len(floors)
    one = subjects[(subjects["label"] == "b_x") & (subjects["shift"] == "gamma@1.5") & (subjects["seed"] == 1)
                   & (subjects["subject"] == "tumour-2") & (subjects["metric"] == "auprc")]
    assert one["value"].tolist() == pytest.approx([0.66 - 0.1 + 0.01])
    assert set(cells["metric"]) >= {"cost.num_parameters", "cost.train_seconds", "cost.seconds_per_volume", "brain_prevalence"}


def test_summary_means_stds_and_subject_intervals_match_the_stats_functions():
    records = make_records()
    summary = report.summarise_frame(report.tidy_frame(records))
    key = ("0123abcd4567", "d", "none", "method", "a")
    seed_values = [r.metrics["auprc"] for r in records if r.label == "a" and r.shift == "none"]
    assert summary.value(key, "auprc") == pytest.approx(np.mean(seed_values))
    assert summary.value(key, "auprc", "std") == pytest.approx(np.std(seed_values, ddof=1))
    assert summary.value(key, "auprc", "n") == 2
    # the interval resamples seeds and the subjects every seed was evaluated on
    values = np.array([[v - 0.3 + 0.01 * s for v in AUPRC["a"]] for s in (0, 1)])
    assert summary.matrix(key, "auprc").to_numpy() == pytest.approx(values)
    lo, hi = hierarchical_bootstrap_ci(values)
    assert (summary.value(key, "auprc", "ci_low"), summary.value(key, "auprc", "ci_high")) == pytest.approx((lo, hi))
    # l1-ratio: a ratio of sums over seeds and subjects, resampled together
    num = np.array([[0.3 + 0.01 * i for i in range(6)]] * 2)
    expected = hierarchical_bootstrap_ci(num, denominators=np.full((2, 6), 0.1))
    assert (summary.value(key, "l1_ratio", "ci_low"), summary.value(key, "l1_ratio", "ci_high")) == pytest.approx(expected)
    assert summary.facts.loc[key, "n_seeds"] == 2 and summary.facts.loc[key, "num_parameters"] == 1_500_000
    floor_key = ("0123abcd4567", "d", "none", "floor", "floor")
    assert summary.facts.loc[floor_key, "brain_prevalence"] == pytest.approx(0.0482)
    # one seed: the subject bootstrap, exactly
    one = report.summarise_frame(report.tidy_frame(make_records(seeds=(0,))))
    expected = bootstrap_mean_ci([v - 0.3 for v in AUPRC["a"]])
    assert (one.value(key, "auprc", "ci_low"), one.value(key, "auprc", "ci_high")) == expected
    num = np.array([0.3 + 0.01 * i for i in range(6)])
    expected = bootstrap_ratio_ci(num, np.full(6, 0.1), resamples=bootstrap_resamples(6))
    assert (one.value(key, "l1_ratio", "ci_low"), one.value(key, "l1_ratio", "ci_high")) == pytest.approx(expected)


# -- the leaderboard table -----------------------------------------------------------------------------
def _board(records=None) -> report.Table:
    (board, *_) = report.tables_for(records or make_records())
    return board


def test_best_in_bold_not_different_from_the_best_marked_and_the_oracle_never_bold():
    records = make_records(seeds=(0, 1, 2))
    board = _board(records)
    auprc = ("", "AUPRC ↑")
    assert board.bold.loc["b_x", auprc] and not board.bold.loc["a", auprc]  # b_x has the best unshifted mean AUPRC
    # c is below b_x on all six subjects in every seed: the seed-aware test separates them
    values = {k: np.array([[v + 0.01 * s for v in vals] for s in (0, 1, 2)]) for k, vals in AUPRC.items()}
    assert compare_seeds(values["b_x"], values["c"], n_bootstrap=10_000).p_value < 0.05
    assert not board.marked.loc["c", auprc] and not board.marked.loc["a", auprc]
    oracle = ("", "Dice@oracle (upper bound) ↑")
    assert not board.bold[oracle].any() and not board.marked[oracle].any()
    md = report.table_markdown(board)
    line_c = next(line for line in md.splitlines() if line.startswith("| c "))
    assert "†" not in line_c.split("|")[2]
    text = board.cells.loc["b_x", auprc]
    assert text.startswith("60.50 ± 1.00 [")  # mean ± sd over 3 seeds, then the two-level bootstrap interval


def _close_to_b_x(records: list[ResultRecord], spread: dict[int, float] | None = None) -> list[ResultRecord]:
    """``records`` without a, with c close to b_x on every subject, with mixed signs (no test over
    subjects separates them); ``spread`` moves each of c's seeds by a constant."""
    records = [r for r in records if r.label != "a"]
    for r in records:
        if r.label == "c":
            for i, s in enumerate(SUBJECTS):
                r.per_volume[s]["auprc"] = (AUPRC["b_x"][i] + (0.01 if i % 2 else -0.012) - (0.1 if r.shift != "none" else 0.0)
                                            + 0.01 * r.seed + (spread or {}).get(r.seed, 0.0))
            r.metrics["auprc"] = float(np.mean([r.per_volume[s]["auprc"] for s in SUBJECTS]))
    return records


def test_a_method_the_test_cannot_separate_from_the_best_is_marked():
    board = _board(_close_to_b_x(make_records(seeds=(0, 1, 2))))
    assert board.marked.loc["c", ("", "AUPRC ↑")] and "†" in report.table_markdown(board)
    assert "two-level bootstrap test of the difference of means" in board.caption and "α = 0.05" in board.caption
    assert "mean ± sd over 3 seeds [95 % interval from a two-level bootstrap" in board.caption


def test_a_method_whose_seeds_disagree_is_not_separated_though_each_seed_is():
    """c is 3 points below b_x on every subject of every seed, but its seeds move by 12 points."""
    records = [r for r in make_records(seeds=(0, 1, 2)) if r.label != "a"]
    for r in records:
        if r.label == "c":
            for i, s in enumerate(SUBJECTS):
                r.per_volume[s]["auprc"] = AUPRC["b_x"][i] - 0.03 + 0.01 * r.seed + (-0.12, 0.12, 0.0)[r.seed]
            r.metrics["auprc"] = float(np.mean([r.per_volume[s]["auprc"] for s in SUBJECTS]))
    c = {r.seed: [r.per_volume[s]["auprc"] for s in SUBJECTS] for r in records if r.label == "c" and r.shift == "none"}
    b = {r.seed: [r.per_volume[s]["auprc"] for s in SUBJECTS] for r in records if r.label == "b_x" and r.shift == "none"}
    assert paired_permutation_test(b[2], c[2]) < 0.05  # over the subjects of one pair of fits: apart
    assert _board(records).marked.loc["c", ("", "AUPRC ↑")]  # over seeds: cannot be separated


def test_tables_with_fewer_than_three_seeds_per_method_print_no_mark_and_say_why():
    one = _close_to_b_x(make_records(seeds=(0,)))
    b = [next(r for r in one if r.label == "b_x" and r.shift == "none").per_volume[s]["auprc"] for s in SUBJECTS]
    c = [next(r for r in one if r.label == "c" and r.shift == "none").per_volume[s]["auprc"] for s in SUBJECTS]
    assert paired_permutation_test(b, c) >= 0.05  # a test over subjects alone would mark c
    for records, note in ((one, "1 seed: training variance not measured, so no significance mark (a seed-aware test needs ≥ 3 seeds per method)"),
                          (_close_to_b_x(make_records(seeds=(0, 1))), "2 seeds: too few to test training variance"),
                          ([r for r in _close_to_b_x(make_records(seeds=(0, 1, 2))) if r.label != "c" or r.seed == 0],
                           "1–3 seeds per method (c 1): too few to test training variance for every method")):
        board, shift = report.tables_for(records)
        md = report.table_markdown(board)
        assert not board.marked.to_numpy().any() and "†" not in md, note
        assert note in board.caption and "† cannot be separated" not in board.caption
        assert note.split(",")[0] in shift.caption
    board, _ = report.tables_for(_close_to_b_x(make_records(seeds=(0, 1))))
    assert board.cells.loc["c", ("", "AUPRC ↑")].split(" [")[0].endswith("± 0.71")  # the seeds' spread (sd) where there are 2


def test_a_subject_missing_from_one_seed_weighs_nothing_in_that_seed():
    records = make_records(seeds=(0, 1, 2))
    gone = next(r for r in records if r.label == "a" and r.shift == "none" and r.seed == 1)
    del gone.per_volume["tumour-3"]
    summary = report.summarise_frame(report.tidy_frame(records))
    key = ("0123abcd4567", "d", "none", "method", "a")
    values = np.array([[v - 0.3 + 0.01 * s for v in AUPRC["a"]] for s in (0, 1, 2)])
    values[1, 3] = np.nan
    assert np.array_equal(summary.matrix(key, "auprc").to_numpy(), values, equal_nan=True)
    assert (summary.value(key, "auprc", "ci_low"), summary.value(key, "auprc", "ci_high")) == pytest.approx(hierarchical_bootstrap_ci(values))


def test_a_method_whose_seeds_vary_widely_gets_a_wider_interval():
    """The same subject values: identical seeds for one method, seeds 12 points apart for the other."""
    records = [r for r in make_records(seeds=(0, 1, 2)) if r.label in ("b_x", "c")]
    for r in records:
        offset = {"b_x": 0.0, "c": (-0.12, 0.0, 0.12)[r.seed]}[r.label]
        for i, s in enumerate(SUBJECTS):
            r.per_volume[s]["auprc"] = AUPRC["b_x"][i] + offset
        r.metrics["auprc"] = float(np.mean([r.per_volume[s]["auprc"] for s in SUBJECTS]))
    summary = report.summarise_frame(report.tidy_frame(records))
    width = {label: summary.value(("0123abcd4567", "d", "none", "method", label), "auprc", "ci_high")
             - summary.value(("0123abcd4567", "d", "none", "method", label), "auprc", "ci_low") for label in ("b_x", "c")}
    assert summary.value(("0123abcd4567", "d", "none", "method", "c"), "auprc") == pytest.approx(np.mean(AUPRC["b_x"]))
    assert width["c"] > 1.5 * width["b_x"]
    assert width["b_x"] == pytest.approx(np.diff(bootstrap_mean_ci(AUPRC["b_x"]))[0])  # identical seeds: subjects only


def test_every_lesion_table_has_the_floor_and_the_caption_gives_the_brain_voxel_prevalence():
    all_tables = report.tables_for(make_records())
    assert [t.name for t in all_tables] == ["leaderboard", "shift-d-gamma"]
    for table in all_tables:
        assert list(table.cells.index)[-1] == "floor"
        assert "brain-voxel lesion prevalence 4.82 %" in table.caption and "0123abcd4567" in table.caption
    board = all_tables[0]
    assert board.cells.loc["floor", ("", "AUPRC ↑")].startswith("4.83 ± 0.00 [")
    assert not board.bold.loc["floor"].any()  # the floor is a reference, not a contestant
    md = report.leaderboard_markdown(make_records())
    assert "random score" not in md and "lesion prevalence 2.00" not in md
    assert md.count("| *floor* ") == 2 and md.count("Benchmark version (spec hash) `0123abcd4567`") == 2


def test_records_written_before_floors_render_without_a_floor_row():
    md = report.leaderboard_markdown(make_records(floor=False))
    assert "*floor*" not in md and "brain-voxel" not in md and "| a " in md
    assert md.count("No floor row: these records were written before uadbench recorded the floor") == 2


def test_cost_columns_and_mean_rank():
    board = _board()
    assert board.cells.loc["a", ("", "Params")] == "1.50 M" and board.cells.loc["c", ("", "Params")] == "2.4 k"
    assert board.cells.loc["a", ("", "Device")] == "cpu" and board.cells.loc["a", ("", "Precision")] == "fp32"
    ranks = {label: float(board.cells.loc[label, ("", "Mean rank")]) for label in ("a", "b_x", "c")}
    assert ranks["c"] == max(ranks.values()) and board.cells.loc["floor", ("", "Mean rank")] == "–"


def test_the_shift_table_gives_each_change_and_each_change_of_place():
    (_, shift) = report.tables_for(make_records())
    col = ("gamma@1.5", "AUPRC ↑")
    assert shift.cells.loc["b_x", col].endswith("(-10.00)") and shift.cells.loc["a", col].endswith("(+30.00)")
    assert shift.cells.loc["b_x", ("gamma@1.5", "Place")] == "1 → 2" and shift.cells.loc["a", ("gamma@1.5", "Place")] == "2 → 1"
    assert shift.cells.loc["floor", col] == "4.83 (+0.00)"


def test_records_of_two_spec_hashes_are_never_mixed():
    records = make_records("aaaaaaaaaaaa") + make_records("bbbbbbbbbbbb")
    with pytest.raises(UadbenchError, match=r"2 benchmark versions \(spec hashes aaaaaaaaaaaa \(12 records\), bbbbbbbbbbbb \(12 records\)\)"):
        report.leaderboard_markdown(records)
    with pytest.raises(UadbenchError, match="--per-spec"):
        report.leaderboard_latex(records)
    md = report.leaderboard_markdown(records, per_spec=True)
    assert md.count("## g: d, no shift") == 2 and "`aaaaaaaaaaaa`" in md and "`bbbbbbbbbbbb`" in md
    rows = list(csv.DictReader(io.StringIO(report.leaderboard_csv(records))))
    assert {r["spec_hash"] for r in rows} == {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}  # a CSV row names its spec hash


# -- renderers ---------------------------------------------------------------------------------------
def _snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"wrote a new snapshot {path}; check it and run again")
    expected = path.read_text()
    if text != expected:
        import difflib

        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "snapshot", "now", n=1))
        pytest.fail(f"{name} differs from its snapshot (UADBENCH_UPDATE_SNAPSHOTS=1 rewrites it):\n{diff[:4000]}")


def test_markdown_snapshot():
    _snapshot("leaderboard.md", report.leaderboard_markdown(make_records(), title="snapshot"))


def test_latex_snapshot():
    _snapshot("leaderboard.tex", report.leaderboard_latex(make_records()))


def test_latex_escapes_headers_cells_and_captions():
    records = make_records()
    for r in records:
        object.__setattr__(r, "label", r.label.replace("b_x", "b_x & 50%"))
        object.__setattr__(r, "dataset", "d_#1")
    tex = report.leaderboard_latex(records)
    assert r"b\_x \& 50\%" in tex and r"d\_\#1" in tex and "b_x" not in tex
    assert r"healthy-fpr@5\%" in tex  # in the caption
    assert r"FP ml on healthy@val-bisection $\downarrow$" in tex and r"AUPRC $\uparrow$" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and "±" not in tex and "†" not in tex and "≥" not in tex


LATEX_DOCUMENT = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\usepackage[margin=5mm,landscape,a3paper]{geometry}
\begin{document}
%s
\end{document}
"""


def test_latex_compiles(tmp_path, capsys):
    engine = next((e for e in ("pdflatex", "lualatex", "xelatex") if shutil.which(e)), None)
    if engine is None:
        with capsys.disabled():
            print("\nskipped: no TeX installation (pdflatex, lualatex or xelatex on PATH) to compile the LaTeX tables")
        pytest.skip("no TeX installation (pdflatex, lualatex or xelatex) on PATH")
    (tmp_path / "tables.tex").write_text(LATEX_DOCUMENT % report.leaderboard_latex(make_records()))
    proc = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


def test_csv_has_means_stds_and_intervals_as_fractions():
    rows = list(csv.DictReader(io.StringIO(report.leaderboard_csv(make_records()))))
    assert [(r["method"], r["shift"]) for r in rows][:4] == [("a", "none"), ("a", "gamma@1.5"), ("b_x", "none"), ("b_x", "gamma@1.5")]
    b = next(r for r in rows if r["method"] == "b_x" and r["shift"] == "none")
    assert float(b["auprc"]) == pytest.approx(0.6, abs=1e-9) and float(b["auprc_std"]) == pytest.approx(0.00707107, abs=1e-6)
    assert float(b["auprc_ci_low"]) < float(b["auprc"]) < float(b["auprc_ci_high"]) and b["n_seeds"] == "2"
    floor = next(r for r in rows if r["method"] == "floor" and r["shift"] == "none")
    assert floor["num_parameters"] == "" and float(floor["auprc"]) == pytest.approx(np.mean(FLOOR_AUPRC))


def test_terminal_table():
    text = report.leaderboard_terminal(make_records())
    lines = text.splitlines()
    assert lines[2].split()[:3] == ["a", "d", "none"] and lines[5].split()[:3] == ["floor", "d", "none"]
    assert "upper bound" in text and "benchmark version (spec hash) 0123abcd4567" in text


def test_html_is_one_self_contained_page():
    page = report.leaderboard_html(make_records(), title="t <&>")
    assert page.startswith("<!DOCTYPE html>") and "<title>t &lt;&amp;&gt;</title>" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page and "src=" not in page
    assert page.count('class="uadbench"') == 2 and 'id="uadbench-sort-keys"' in page
    keys = json.loads(page.split('id="uadbench-sort-keys">')[1].split("</script>")[0])
    first = next(iter(keys.values()))
    assert first["pinned"] == [False, False, False, True] and len(first["keys"][0]) == len(first["better"])


def test_summarise_keeps_its_row_dicts():
    rows = {(r["label"], r["shift"]): r for r in report.summarise(make_records())}
    mean, std = rows[("b_x", "none")]["auprc"]
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.0070711, abs=1e-6)
    assert rows[("floor", "none")]["kind"] == "floor" and rows[("a", "none")]["num_parameters"] == 1_500_000


def test_importing_the_report_imports_no_plotting_library():
    import subprocess as sp
    import sys

    code = "import sys, uadbench.report; print(sorted(m for m in ('matplotlib', 'seaborn', 'torch', 'mlflow') if m in sys.modules))"
    assert sp.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# -- figures and the published edition --------------------------------------------------------------------
def _examples(cache: Path, records: list[ResultRecord]) -> list[ResultRecord]:
    """Example volumes for the unshifted seed-0 cells, and the records naming them."""
    import dataclasses

    from synthetic import brainlike_volumes
    from uadbench.data.nifti import save_nifti

    vols, brains, lesions = brainlike_volumes(1, shape=(24, 24, 10), seed=3, lesion=True)
    out = []
    for r in records:
        if r.shift == "none" and r.seed == 0:
            r = dataclasses.replace(r, example=f"evals/{r.eval_key}-example")
            folder = cache / r.example
            folder.mkdir(parents=True)
            for kind, array in (("image", vols[0]), ("anomaly_map", np.abs(vols[0] - 0.5)), ("lesion", lesions[0].astype(np.uint8)),
                                ("brain", brains[0].astype(np.uint8))):
                save_nifti(folder / f"tumour-0_{kind}.nii.gz", array, np.eye(4))
        out.append(r)
    return out


def test_figures_as_png_and_pdf_with_the_same_slice_for_every_method(tmp_path):
    from uadbench.report import figures

    records = make_records()
    records = _examples(tmp_path / "cache", records)
    examples = figures.example_dirs(records, tmp_path / "cache")
    assert list(examples["d"]) == ["a", "b_x", "c"]
    written = figures.render_figures(report.tidy_frame(records), tmp_path / "figures", examples=examples, dpi=60)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{stem}.{ext}" for stem in ("volume-boxes", "severity-gamma", "examples-d") for ext in ("png", "pdf"))
    for path in written:
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF")
    loaded = [figures.read_example(p) for p in examples["d"].values()]
    assert len({figures.example_slice(ex["lesion"], ex["brain"]) for ex in loaded}) == 1
    z = figures.example_slice(loaded[0]["lesion"], loaded[0]["brain"])
    assert loaded[0]["lesion"][:, :, z].sum() == max(loaded[0]["lesion"][:, :, k].sum() for k in range(10))


def test_leaderboard_publish_writes_the_edition(tmp_path):
    from uadbench.cli import main

    run = tmp_path / "run"
    run.mkdir()
    records = _examples(run / "cache", make_records())
    (run / "results.jsonl").write_text(records_text(records))
    grid = tmp_path / "g.toml"
    grid.write_text('name = "g"\nnotes = "One seed: the intervals are over subjects only."\n')
    out = tmp_path / "edition"
    assert main(["leaderboard", str(run / "results.jsonl"), "--publish", str(out), "--grid", str(grid), "--dpi", "60"]) == 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "leaderboard.md", "leaderboard.tex", "leaderboard.html", "leaderboard.csv", "grid.toml", "results.jsonl",
            "environment.json", "figures/volume-boxes.png", "figures/examples-d.pdf", "figures/severity-gamma.png"} <= files
    assert not any(f.endswith(".nii.gz") for f in files)
    env = json.loads((out / "environment.json").read_text())
    assert env["run"]["devices"] == ["cpu"] and env["run"]["spec_hashes"] == ["0123abcd4567"] and "pandas" in env["rendered_with"]["libraries"]
    readme = (out / "README.md").read_text()
    assert "uadbench leaderboard" in readme and "[`leaderboard.html`](leaderboard.html)" in readme and "figures/examples-d.png" in readme
    assert "## What this edition can and cannot show\n\nOne seed: the intervals are over subjects only." in readme
    for name in ("leaderboard.md", "README.md"):
        text = (out / name).read_text()
        assert text.count("Benchmark version (spec hash)") >= 2 and "0123abcd4567" in text
    assert (out / "results.jsonl").read_text() == records_text(records)


def test_large_records_are_published_gzipped_and_read_back(tmp_path, monkeypatch):
    from uadbench.report import publish as pub

    records = make_records()
    (tmp_path / "results.jsonl").write_text(records_text(records))
    out = tmp_path / "edition"
    pub.publish(tmp_path / "results.jsonl", out, formats=("png",), dpi=40)
    assert (out / "results.jsonl").is_file() and not (out / "results.jsonl.gz").exists()
    monkeypatch.setattr(pub, "RECORDS_GZIP_BYTES", 100)
    pub.publish(tmp_path / "results.jsonl", out, formats=("png",), dpi=40)
    packed = out / "results.jsonl.gz"
    assert packed.is_file() and not (out / "results.jsonl").exists()  # the stale plain form is gone
    assert report.read_records(packed) == report.read_records(tmp_path / "results.jsonl")
    first = packed.read_bytes()
    pub.publish(tmp_path / "results.jsonl", out, formats=("png",), dpi=40)
    assert packed.read_bytes() == first  # no time stamp in the gzip header: the same records, the same bytes
    assert "`results.jsonl.gz`" in (out / "README.md").read_text()


def test_leaderboard_and_report_print_each_format(tmp_path, capsys):
    from uadbench.cli import main

    path = tmp_path / "results.jsonl"
    path.write_text(records_text(make_records()))
    for fmt, marker in (("md", "| *floor* "), ("latex", r"\toprule"), ("html", "<!DOCTYPE html>"), ("csv", "spec_hash,grid"),
                        ("text", "Dice@oracle*")):
        assert main(["report", str(path), "--format", fmt]) == 0
        assert marker in capsys.readouterr().out
    assert main(["leaderboard", str(path)]) == 0 and "| *floor* " in capsys.readouterr().out
    path.write_text(records_text(make_records("aaaaaaaaaaaa") + make_records("bbbbbbbbbbbb")))
    assert main(["leaderboard", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "2 benchmark versions" in err
    assert main(["leaderboard", str(path), "--per-spec"]) == 0 and capsys.readouterr().out.count("| *floor* ") == 4


EDITION = Path(__file__).resolve().parents[1] / "leaderboard" / "quickstart"


def test_the_published_quickstart_edition_carries_its_spec_hash_in_every_table_and_matches_its_records():
    records = report.read_records(EDITION / "results.jsonl")
    (spec,) = {r.spec_hash for r in records}
    assert all(r.floor for r in records) and {r.grid for r in records} == {"quickstart"}
    md = (EDITION / "leaderboard.md").read_text()
    sections = md.split("\n## ")[1:]
    assert len(sections) >= 2 and all(f"`{spec}`" in s and spec in s.split("\n\n")[-1] for s in sections)
    tex = (EDITION / "leaderboard.tex").read_text()
    assert tex.count(r"\begin{table}") == len(sections) and all(spec in t for t in tex.split(r"\begin{table}")[1:])
    assert (EDITION / "leaderboard.html").read_text().count(f"<code>{spec}</code>") == len(sections)
    assert {row["spec_hash"] for row in csv.DictReader(io.StringIO((EDITION / "leaderboard.csv").read_text()))} == {spec}
    assert not list(EDITION.rglob("*.nii*")) and (EDITION / "grid.toml").read_text() == (EDITION.parent / "quickstart.toml").read_text()
    rendered = report.leaderboard_markdown(records, title="uadbench leaderboard: quickstart")
    assert rendered == md, ("leaderboard/quickstart/ is stale: republish it with `uadbench leaderboard RUN_DIR/results.jsonl "
                            "--publish leaderboard/quickstart --grid leaderboard/quickstart.toml` (or from its own results.jsonl)")
