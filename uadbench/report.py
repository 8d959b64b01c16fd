"""Result records -> leaderboard tables (pure: no torch, no MLflow).

One table per (dataset, shift): mean ± std over seeds for every fair metric, best in bold, the
threshold protocol in each Dice column's name, cost columns, and the oracle Dice (an upper bound
that uses the test labels) in its own column at the right, never mixed with the fair ones.
"""

from __future__ import annotations

import csv
import io
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from uadbench.evaluation.metrics import MetricInfo, metric_info
from uadbench.records import Failure, ResultRecord, coerce_records, read_records

__all__ = ["leaderboard_csv", "leaderboard_latex", "leaderboard_markdown", "leaderboard_terminal", "read_records", "summarise"]



@dataclass(frozen=True)
class Column:
    """A leaderboard column: a metric key and its title; direction, unit and whether it is an upper
    bound come from the metric catalogue (:func:`uadbench.evaluation.metrics.metric_info`)."""

    key: str
    title: str

    @property
    def info(self) -> MetricInfo:
        return metric_info(self.key)

    @property
    def higher(self) -> bool:
        return self.info.higher_is_better

    @property
    def percent(self) -> bool:
        return self.info.percent


_TITLES = {
    "auprc": "AUPRC",
    "auroc": "AUROC",
    "dice@val-bisection": "Dice@val-bisection",
    "dice@val-exact": "Dice@val-exact",
    "dice@healthy-fpr@5%": "Dice@healthy-fpr@5%",
    "fp_volume_ml@val-bisection": "FP ml on healthy@val-bisection",
    "l1_ratio": "l1-ratio",
    "dice@oracle": "Dice@oracle (upper bound)",
}
COLUMNS = [Column(k, t) for k, t in _TITLES.items()]
FAIR_COLUMNS = [c for c in COLUMNS if not c.info.upper_bound]
UPPER_BOUND_COLUMNS = [c for c in COLUMNS if c.info.upper_bound]


def _group(records: Iterable[ResultRecord]) -> OrderedDict[tuple[str, str], OrderedDict[str, list[ResultRecord]]]:
    groups: OrderedDict = OrderedDict()
    for rec in records:
        groups.setdefault((rec.dataset, rec.shift_label), OrderedDict()).setdefault(rec.label, []).append(rec)
    return groups


def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std


def _fmt(mean: float, std: float, n: int, percent: bool = True) -> str:
    if math.isnan(mean):
        return "–"
    scale = 100.0 if percent else 1.0
    if n > 1:
        return f"{mean * scale:.2f} ± {std * scale:.2f}"
    return f"{mean * scale:.2f}"


def summarise(records: Sequence[ResultRecord | dict]) -> list[dict]:
    """One row per (dataset, shift, method): means and stds over seeds of every metric."""
    rows = []
    for (dataset, shift), methods in _group(coerce_records(records)).items():
        for label, recs in methods.items():
            row = {"dataset": dataset, "shift": shift, "label": label, "method": recs[0].method,
                   "preset": recs[0].preset, "n_seeds": len(recs),
                   "prevalence": recs[0].dataset_stats.get("lesion_prevalence")}
            keys = sorted({k for r in recs for k in r.metrics})
            for k in keys:
                row[k] = _mean_std([r.metrics.get(k) for r in recs])
            for k in ("num_parameters", "train_seconds", "seconds_per_volume"):
                row[k] = _mean_std([r.cost[k] for r in recs])[0]
            rows.append(row)
    return rows


def _best(rows: list[dict], key: str, higher: bool) -> float | None:
    vals = [r[key][0] for r in rows if key in r and not math.isnan(r[key][0])]
    if not vals:
        return None
    return max(vals) if higher else min(vals)


def _params(n: float) -> str:
    if n is None or math.isnan(n):
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return f"{int(n)}"


def failures_markdown(failures: Sequence[Failure]) -> list[str]:
    """A "Failed" section: one line per fit or cell that raised or could not run."""
    if not failures:
        return []
    return ["## Failed", "", *[f"- {f.line()}" for f in failures], "",
            "Rerun the same command to retry only these (finished fits and cells come from the cache).", ""]


def leaderboard_markdown(records: Sequence[ResultRecord | dict], title: str = "uadbench leaderboard",
                         failures: Sequence[Failure] = ()) -> str:
    rows = summarise(records)
    lines = [f"# {title}", ""]
    lines.append(
        "Metrics in % (FP ml in ml, l1-ratio as a ratio), mean ± std over seeds; ↑/↓ higher/lower "
        "is better; best fair value in **bold**. FP ml: false-positive volume on the healthy test scans. "
        "Dice columns name their threshold protocol: `val-bisection` (the paper's 10-step search on the "
        "labelled validation split), `val-exact` (exact optimum on the same split), `healthy-fpr@5%` "
        "(5 % voxel FPR on healthy validation scans, no labels). The oracle column picks the best "
        "threshold per test volume with its labels: an upper bound, not a result."
    )
    lines.append("")
    by_group: OrderedDict = OrderedDict()
    for r in rows:
        by_group.setdefault((r["dataset"], r["shift"]), []).append(r)
    for (dataset, shift), grows in by_group.items():
        prevalence = grows[0].get("prevalence")
        extra = f"; lesion prevalence {prevalence * 100:.2f} % (AUPRC of a random score)" if prevalence else ""
        lines.append(f"## {dataset}, shift: {shift}{extra}")
        lines.append("")
        header = ["Method", "Preset"] + [f"{c.title} {c.info.arrow}" for c in FAIR_COLUMNS]
        header += ["Params", "Train s", "s / volume"] + [c.title for c in UPPER_BOUND_COLUMNS]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|")
        for r in grows:
            cells = [r["label"], r["preset"]]
            for col in FAIR_COLUMNS:
                if col.key not in r:
                    cells.append("–")
                    continue
                mean, std = r[col.key]
                text = _fmt(mean, std, r["n_seeds"], col.percent)
                best = _best(grows, col.key, col.higher)
                if best is not None and len(grows) > 1 and not math.isnan(mean) and abs(mean - best) < 1e-12:
                    text = f"**{text}**"
                cells.append(text)
            cells += [_params(r["num_parameters"]), f"{r['train_seconds']:.1f}", f"{r['seconds_per_volume']:.3f}"]
            for col in UPPER_BOUND_COLUMNS:
                if col.key in r:
                    ub_mean, ub_std = r[col.key]
                    cells.append(_fmt(ub_mean, ub_std, r["n_seeds"], col.percent))
                else:
                    cells.append("–")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += failures_markdown(failures)
    return "\n".join(lines)


def leaderboard_terminal(records: Sequence[ResultRecord | dict], failures: Sequence[Failure] = ()) -> str:
    """A compact plain-text table for the terminal."""
    rows = summarise(records)
    cols = [("Method", 14), ("Dataset", 22), ("Shift", 10), ("AUPRC", 8), ("AUROC", 8), ("Dice@val", 9), ("Dice@oracle*", 12), ("Train s", 8)]
    out = ["  ".join(name.ljust(w) for name, w in cols)]
    out.append("  ".join("-" * w for _, w in cols))
    def pct(row: dict, key: str) -> str:
        return "–" if key not in row or math.isnan(row[key][0]) else f"{row[key][0] * 100:.2f}"

    for r in rows:
        metrics = [pct(r, k) for k in ("auprc", "auroc", "dice@val-bisection", "dice@oracle")]
        vals = [r["label"], r["dataset"], r["shift"], *metrics, f"{r['train_seconds']:.1f}"]
        out.append("  ".join(str(v)[:w].ljust(w) for v, (_, w) in zip(vals, cols)))
    out.append("* Dice@oracle uses the test labels: an upper bound, not a result.")
    out += [f"FAILED {f.line()}" for f in failures]
    return "\n".join(out)


def leaderboard_csv(records: Sequence[ResultRecord | dict]) -> str:
    """One row per (dataset, shift, method): means and stds (as fractions, not %) and costs."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = [c.key for c in COLUMNS]
    writer.writerow(["dataset", "shift", "method", "preset", "n_seeds"] + [f"{k}{s}" for k in keys for s in ("", "_std")]
                    + ["num_parameters", "train_seconds", "seconds_per_volume"])
    for r in summarise(records):
        values = []
        for k in keys:
            mean, std = r.get(k, (math.nan, math.nan))
            values += ["" if math.isnan(mean) else repr(mean), "" if math.isnan(std) else repr(std)]
        writer.writerow([r["dataset"], r["shift"], r["label"], r["preset"], r["n_seeds"]] + values
                        + [r["num_parameters"], r["train_seconds"], r["seconds_per_volume"]])
    return buf.getvalue()


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def leaderboard_latex(records: Sequence[ResultRecord | dict]) -> str:
    """Booktabs tables, one per (dataset, shift); best fair value in bold; the oracle column apart."""
    rows = summarise(records)
    cols = FAIR_COLUMNS + UPPER_BOUND_COLUMNS
    out = []
    by_group: OrderedDict = OrderedDict()
    for r in rows:
        by_group.setdefault((r["dataset"], r["shift"]), []).append(r)
    for (dataset, shift), grows in by_group.items():
        out.append(r"\begin{table}[t]")
        out.append(r"\centering")
        out.append(rf"\caption{{{_latex_escape(dataset)}, shift: {_latex_escape(shift)}. Oracle Dice is an upper bound (test labels).}}")
        out.append(r"\begin{tabular}{l" + "r" * len(cols) + "}")
        out.append(r"\toprule")
        out.append(" & ".join(["Method"] + [_latex_escape(c.title) + (r" $\uparrow$" if c.higher else r" $\downarrow$") for c in cols]) + r" \\")
        out.append(r"\midrule")
        for r in grows:
            cells = [_latex_escape(r["label"])]
            for col in cols:
                key = col.key
                if key not in r:
                    cells.append("--")
                    continue
                mean, std = r[key]
                text = _fmt(mean, std, r["n_seeds"], col.percent).replace("±", r"$\pm$").replace("–", "--")
                best = _best(grows, key, col.higher)
                fair = not col.info.upper_bound
                if fair and best is not None and len(grows) > 1 and not math.isnan(mean) and abs(mean - best) < 1e-12:
                    text = rf"\textbf{{{text}}}"
                cells.append(text)
            out.append(" & ".join(cells) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)
