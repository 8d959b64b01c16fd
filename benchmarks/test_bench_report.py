"""Benchmark: every table and figure of a leaderboard from 10,000 result records in under 10 s.

Run: ``.venv/bin/pytest benchmarks/test_bench_report.py --benchmark-only -s`` (or ``tox -e bench``).

The records are synthetic but shaped like real ones: 10 methods × 4 datasets × 25 shift cells (no
shift and 4 families × 6 severities) × 10 seeds, each with 20 lesioned and 10 healthy test
subjects carrying the per-volume metrics the protocol writes, and a floor. Rendering starts from
the records in memory (reading 10,000 records from ``results.jsonl`` is a separate cost) and
produces the tidy frame, the leaderboard and shift tables in Markdown, LaTeX, HTML and CSV, and the
box, severity and example figures as PNG and PDF.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from uadbench.records import ResultRecord

METHODS = ["thresh", "ae", "vae", "fanogan", "dae", "ddpm", "pddpm", "cddpm", "mhd", "mine"]
DATASETS = ["brats21", "mslub", "atlas", "wmh"]
FAMILIES = {"gamma": [0.3, 0.5, 0.7, 1.5, 2.0, 3.0], "bias": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "noise": [0.01, 0.02, 0.03, 0.05, 0.08, 0.1], "blur": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]}
SEEDS = range(10)
PROTOCOLS = ["val-bisection", "val-exact", "healthy-fpr@1%", "healthy-fpr@5%", "healthy-fpr@10%"]
LESION_METRICS = (["auprc", "auprc_brain", "auroc", "auroc_brain", "dice@oracle", "l1_healthy", "l1_lesion", "l1_ratio",
                   "detection_rate_large@val-bisection", "detection_rate_medium@val-bisection"] + [f"dice@{p}" for p in PROTOCOLS])
HEALTHY_METRICS = ["l1_healthy", "ssim", "psnr", "l1_recon", "entropy_diff"] + [f"fp_volume_ml@{p}" for p in PROTOCOLS]
BUDGET_S = 10.0


def _per_volume(rng: np.random.Generator, skill: float) -> dict[str, dict[str, float]]:
    out = {}
    lesion = rng.random((20, len(LESION_METRICS))) * 0.3 + skill
    for i in range(20):
        out[f"lesion-{i:03d}"] = dict(zip(LESION_METRICS, lesion[i].tolist()))
    healthy = rng.random((10, len(HEALTHY_METRICS))) * 5.0
    for i in range(10):
        out[f"healthy-{i:03d}"] = dict(zip(HEALTHY_METRICS, healthy[i].tolist()))
    return out


def _aggregates(per_volume: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = {k for v in per_volume.values() for k in v}
    return {k: float(np.mean([v[k] for v in per_volume.values() if k in v])) for k in sorted(keys)}


def synthetic_records(n_seeds: int = len(SEEDS)) -> list[ResultRecord]:
    rng = np.random.default_rng(0)
    shifts = [("none", None)] + [(f, s) for f, sev in FAMILIES.items() for s in sev]
    floors: dict[tuple, dict] = {}
    records = []
    for m, method in enumerate(METHODS):
        for dataset in DATASETS:
            for shift, severity in shifts:
                for seed in range(n_seeds):
                    per_volume = _per_volume(rng, 0.1 + 0.04 * m - (0.02 if shift != "none" else 0.0))
                    key = (dataset, shift, severity, seed)
                    if key not in floors:
                        fpv = _per_volume(rng, 0.05)
                        floors[key] = {"map": "1 on the brain mask, 0 elsewhere", "metrics": _aggregates(fpv), "per_volume": fpv,
                                       "confidence_intervals": {}, "brain_prevalence": 0.05}
                    metrics = _aggregates(per_volume)
                    records.append(ResultRecord(
                        grid="bench", spec_hash="0123456789ab", method=method, label=method, preset="paper", config_hash=f"c{m}",
                        fit_key=f"f{m}{seed}", eval_key=f"e{m}{dataset}{shift}{severity}{seed}", train_dataset="ixi", dataset=dataset,
                        split="test", val_split="val", shift=shift, severity=severity, seed=seed, image_grid={}, metrics=metrics,
                        thresholds={}, per_volume=per_volume, versions={},
                        cost={"num_parameters": 1_000_000 * (m + 1), "train_seconds": 3600.0 + m, "seconds_per_volume": 1.5},
                        confidence_intervals={k: [v - 0.05, v + 0.05] for k, v in metrics.items()},
                        device="cuda", precision="bf16", threads=4, floor=floors[key]))
    return records


def example_folders(root: Path, records: list[ResultRecord]) -> dict[str, dict[str, Path]]:
    """NIfTI examples (64 × 64 × 32) of each method on the first dataset, as cells write them."""
    from uadbench.data.nifti import save_nifti

    rng = np.random.default_rng(1)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (64, 64, 32)], indexing="ij")
    brain = (grid[0] / 0.8) ** 2 + (grid[1] / 0.9) ** 2 + (grid[2] / 0.9) ** 2 < 1
    lesion = ((grid[0] - 0.3) ** 2 + (grid[1] - 0.2) ** 2 + grid[2] ** 2 < 0.05) & brain
    image = (brain * (0.5 + 0.1 * rng.standard_normal(brain.shape)) + lesion * 0.3).clip(0, 1).astype(np.float32)
    out: dict[str, Path] = {}
    for r in records:
        if r.dataset == DATASETS[0] and r.shift == "none" and r.seed == 0:
            folder = root / "evals" / f"{r.eval_key}-example"
            folder.mkdir(parents=True)
            save_nifti(folder / "s0_image.nii.gz", image, np.eye(4))
            save_nifti(folder / "s0_reconstruction.nii.gz", (image - lesion * 0.25).astype(np.float32), np.eye(4))
            save_nifti(folder / "s0_anomaly_map.nii.gz", (np.abs(rng.standard_normal(brain.shape)) * 0.1 + lesion).astype(np.float32), np.eye(4))
            save_nifti(folder / "s0_lesion.nii.gz", lesion.astype(np.uint8), np.eye(4))
            save_nifti(folder / "s0_brain.nii.gz", brain.astype(np.uint8), np.eye(4))
            out[r.label] = folder
    return {DATASETS[0]: out}


def render_everything(records: list[ResultRecord], out: Path, examples: dict[str, dict[str, Path]]) -> dict[str, float]:
    """Every table and figure from ``records``, as ``uadbench leaderboard --publish`` renders them
    (one tidy frame, one summary); seconds per stage."""
    from uadbench import report
    from uadbench.report import figures

    times = {}
    t = time.perf_counter()
    frame = report.tidy_frame(records)
    times["tidy frame"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = report.summarise_frame(frame)
    times["summary"] = time.perf_counter() - t
    t = time.perf_counter()
    all_tables = report.tables_from_summary(summary)
    (out / "leaderboard.md").write_text(report.leaderboard_markdown(records, tables=all_tables))
    (out / "leaderboard.tex").write_text(report.leaderboard_latex(records, tables=all_tables))
    (out / "leaderboard.html").write_text(report.leaderboard_html(records, tables=all_tables))
    (out / "leaderboard.csv").write_text(report.summary_csv(summary))
    times["tables"] = time.perf_counter() - t
    t = time.perf_counter()
    figures.render_figures(frame, out / "figures", examples=examples, dpi=100)
    times["figures"] = time.perf_counter() - t
    return times


@pytest.fixture(scope="module")
def records():
    return synthetic_records()


def test_render_all_tables_and_figures_from_10000_records(benchmark, records, tmp_path):
    import matplotlib  # noqa: F401  (imported once, as a long-lived process would have it)
    import seaborn  # noqa: F401

    assert len(records) == 10_000
    examples = example_folders(tmp_path / "cache", records)
    stages: dict[str, float] = {}

    def run():
        stages.update(render_everything(records, tmp_path, examples))

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    total = benchmark.stats.stats.max
    benchmark.extra_info.update({k: round(v, 2) for k, v in stages.items()})
    print(f"\n10,000 records: {total:.2f} s ({', '.join(f'{k} {v:.2f} s' for k, v in stages.items())})")
    assert total < BUDGET_S, f"rendering 10,000 records took {total:.1f} s (budget {BUDGET_S} s): {stages}"
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.count("| *floor* ") == 1 + len(DATASETS) * len(FAMILIES)  # every lesion table has its floor
    assert len(list((tmp_path / "figures").glob("*.png"))) == 1 + len(FAMILIES) + 1
