from uadbench import report
from uadbench.records import ResultRecord


def _rec(label, seed, auprc, dice, oracle, shift="none", severity=None):
    return ResultRecord(
        grid="g", spec_hash="h", method=label, label=label, preset="cpu", config_hash="c", fit_key=f"f{label}{seed}",
        eval_key=f"e{label}{seed}{shift}", train_dataset="t", dataset="d", split="test", val_split="val",
        shift=shift, severity=severity, seed=seed, image_grid={}, thresholds={}, per_volume={}, versions={},
        metrics={"auprc": auprc, "dice@val-bisection": dice, "dice@oracle": oracle, "fp_volume_ml@val-bisection": 2.0},
        cost={"num_parameters": 1_500_000, "train_seconds": 10.0, "seconds_per_volume": 0.5},
        dataset_stats={"lesion_prevalence": 0.02},
    )


def test_mean_std_over_seeds_bold_best_and_oracle_apart():
    records = [
        _rec("a", 0, 0.50, 0.40, 0.90), _rec("a", 1, 0.70, 0.60, 0.95),
        _rec("b", 0, 0.20, 0.80, 0.99), _rec("b", 1, 0.20, 0.80, 0.99),
        _rec("a", 0, 0.10, 0.10, 0.2, shift="gamma", severity=1.5),
    ]
    rows = {(r["label"], r["shift"]): r for r in report.summarise(records)}
    mean, std = rows[("a", "none")]["auprc"]
    assert abs(mean - 0.6) < 1e-12 and abs(std - 0.1414213562) < 1e-9  # sample std over seeds
    md = report.leaderboard_markdown(records)
    line_a = next(line for line in md.splitlines() if line.startswith("| a |"))
    line_b = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert "**60.00 ± 14.14**" in line_a  # a has the best AUPRC
    assert "**80.00 ± 0.00**" in line_b and "**" not in line_b.split("|")[3]  # b the best Dice, not AUPRC
    # the oracle is the last column, never bold, and sits apart from the fair Dice
    assert line_b.rstrip(" |").endswith("99.00 ± 0.00") and "**99.00" not in md
    assert md.index("Dice@val-bisection ↑") < md.index("Dice@oracle (upper bound)")
    assert "## d, shift: gamma@1.5" in md and "lesion prevalence 2.00 %" in md
    assert "FP ml on healthy@val-bisection ↓" in md and "1.50 M" in line_a
    text = report.leaderboard_terminal(records)
    assert "upper bound" in text and len(text.splitlines()) == 2 + 3 + 1


def test_csv_and_latex_exports():
    import csv
    import io

    records = [_rec("a", 0, 0.50, 0.40, 0.90), _rec("a", 1, 0.70, 0.60, 0.95), _rec("b_x", 0, 0.20, 0.80, 0.99)]
    rows = list(csv.DictReader(io.StringIO(report.leaderboard_csv(records))))
    assert [r["method"] for r in rows] == ["a", "b_x"]
    assert float(rows[0]["auprc"]) == 0.6 and abs(float(rows[0]["auprc_std"]) - 0.1414213562) < 1e-9
    assert rows[1]["n_seeds"] == "1" and rows[1]["auroc"] == ""
    tex = report.leaderboard_latex(records)
    assert tex.count(r"\toprule") == 1 and r"\bottomrule" in tex and "b\\_x" in tex
    assert r"\textbf{60.00 $\pm$ 14.14}" in tex and r"\textbf{99" not in tex  # oracle is never bold
