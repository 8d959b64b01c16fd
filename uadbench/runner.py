"""Runs a grid: prepares data, fits every method, evaluates every cell, logs and reports.

Every expensive product is cached under a key that hashes everything that determines it (see
:mod:`uadbench.grid`), and written atomically, so a killed run resumes where it stopped and a
finished cell is never recomputed:

    <cache>/data/<dataset>-<split>-<key>.npz   preprocessed split on the grid (image, brain, lesion)
    <cache>/fits/<key>/                        model.pt (loaded with weights_only=True) + meta.json
    <cache>/maps/<key>.npz                     anomaly maps of one split under one shift
    <cache>/evals/<key>.json                   one evaluation cell's result record

:func:`run_grid` reads as its steps: 1. read the grid and expand its job graph; 2. prepare every
split it needs; 3. fit, dependencies first; 4. evaluate every (fit, dataset, shift) cell; 5. write
``results.jsonl`` and the leaderboard, log to MLflow.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uadbench import report
from uadbench.cells import EvalContext, cell_record, save_example
from uadbench.data.cache import data_key, load_split, save_split
from uadbench.data.dataset import create_dataset
from uadbench.data.pipeline import ImageGrid, preprocess
from uadbench.data.volume import Volume
from uadbench.errors import UadbenchError
from uadbench.evaluation.protocol import evaluate_dataset
from uadbench.executors import Executor, Task, create_executor
from uadbench.grid import NO_SHIFT_SPEC, EvalJob, FitJob, GridSpec, load_grid
from uadbench.inference import MapSource
from uadbench.io_utils import atomic_path, write_json_atomic, write_text_atomic
from uadbench.records import ResultRecord, records_text, versions
from uadbench.tracking import create_tracker

Progress = Callable[[str], None]


def _print_progress(message: str) -> None:
    print(message, flush=True)


# -- 2. data --------------------------------------------------------------------------------------
def prepare_split(dataset: str, split: str, *, grid: ImageGrid, data_seed: int, cache_dir: Path, data_root: Path | None) -> list[Volume]:
    """Preprocessed volumes of one split on ``grid``, cached as npz."""
    source = create_dataset(dataset, root=data_root, seed=data_seed)
    source.check_split(split)
    path = cache_dir / "data" / f"{dataset}-{split}-{data_key(source, split, grid)}.npz"
    if path.is_file():
        return load_split(path)
    volumes = [preprocess(v, grid) for v in source.load(split)]
    if not volumes:
        raise UadbenchError(f"dataset {dataset!r} split {split!r} has no subjects")
    save_split(path, volumes)
    return volumes


# -- 3. fits --------------------------------------------------------------------------------------
def fit_dir(cache_dir: Path, job: FitJob) -> Path:
    return cache_dir / "fits" / job.key


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UadbenchError("device 'cuda' requested but no CUDA device is available; use device = 'cpu'")
    return torch.device(device)


def run_fit(job: FitJob, *, cache_dir: Path, data_root: Path | None, device: str = "cpu", progress: Progress = _print_progress) -> dict:
    """Train one method (or read it from the cache); returns the fit's meta record.

    The fits ``job`` reuses (``job.depends_on``) are read from the cache, or fitted first when the
    caller did not run them."""
    import torch

    from uadbench.data.slices import SliceDataset
    from uadbench.method import FitContext, create_method

    out = fit_dir(cache_dir, job)
    if (out / "meta.json").is_file() and (out / "model.pt").is_file():
        return {**json.loads((out / "meta.json").read_text()), "cached": True}
    tag = f"[fit {job.method.display} seed {job.seed}]"
    train, val = (prepare_split(job.train_dataset, s, grid=job.image_grid, data_seed=job.data_seed, cache_dir=cache_dir, data_root=data_root)
                  for s in ("train", "val"))
    torch.manual_seed(job.seed)
    np.random.seed(job.seed % (2**32))
    dev = resolve_device(device)
    method = create_method(job.method.name, config=job.config, image_shape=job.image_grid.slice_shape).to(dev)
    reused = [run_fit(d, cache_dir=cache_dir, data_root=data_root, device=device, progress=progress) for d in job.depends_on]
    history: list[tuple[int, dict[str, float]]] = []
    ctx = FitContext(
        device=dev, generator=torch.Generator().manual_seed(job.seed), seed=job.seed,
        log_metrics=lambda metrics, step: history.append((int(step), {k: float(v) for k, v in metrics.items()})),
        progress=lambda msg: progress(f"{tag} {msg}"),
        dependencies={d.method.name: load_fitted(d, cache_dir, device) for d in job.depends_on},
    )
    progress(f"{tag} training on {len(train)} healthy volumes ({job.train_dataset}/train)")
    start = time.perf_counter()
    slices = [SliceDataset([v.image for v in split], [v.subject_id for v in split]) for split in (train, val)]
    method.fit(slices[0], slices[1], ctx)
    seconds = time.perf_counter() - start
    with atomic_path(out / "model.pt", suffix=".pt") as tmp:
        torch.save(method.state_dict(), tmp)
    meta = {
        "key": job.key, "method": job.method.name, "label": job.method.display, "preset": job.method.preset,
        "overrides": job.method.overrides_dict, "config_hash": job.config_hash, "seed": job.seed,
        "train_dataset": job.train_dataset, "image_grid": job.image_grid.to_dict(),
        "train_seconds": seconds + sum(r["train_seconds"] for r in reused),  # a reused fit's training counts in the cost
        "own_train_seconds": seconds, "dependencies": {d.method.name: d.key for d in job.depends_on},
        "num_parameters": method.num_parameters(), "history": history, "device": str(dev), "versions": versions(),
    }
    write_json_atomic(out / "meta.json", meta)
    progress(f"{tag} done in {seconds:.1f} s")
    return {**meta, "cached": False}


def load_fitted(job: FitJob, cache_dir: Path, device: str = "cpu"):
    """The fitted method of ``job`` from the cache, in eval mode on ``device``."""
    import torch

    from uadbench.method import create_method

    path = fit_dir(cache_dir, job) / "model.pt"
    if not path.is_file():
        raise UadbenchError(f"no checkpoint for {job.method.display} seed {job.seed} at {path}")
    dev = resolve_device(device)
    method = create_method(job.method.name, config=job.config, image_shape=job.image_grid.slice_shape)
    method.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    method.to(dev)
    for module in method.modules().values():
        module.eval()
    return method


# -- 4. evaluation --------------------------------------------------------------------------------
def run_fit_evals(fit: FitJob, jobs: list[EvalJob], ectx: EvalContext, progress: Progress = _print_progress) -> list[tuple[ResultRecord, bool]]:
    """Every evaluation cell of one fit, as (record, read from the cache)."""
    done = {job.key: ResultRecord.from_json(p.read_text(), str(p)) for job in jobs if (p := ectx.eval_path(job)).is_file()}
    if len(done) == len(jobs):
        return [(done[j.key], True) for j in jobs]
    spec = ectx.spec
    meta = json.loads((fit_dir(ectx.cache_dir, fit) / "meta.json").read_text())
    maps = MapSource(fit, spec=spec, cache_dir=ectx.cache_dir, data_root=ectx.data_root, device=resolve_device(ectx.device),
                     load_method=lambda: load_fitted(fit, ectx.cache_dir, ectx.device), prepare=prepare_split)
    out = []
    for job in jobs:
        if job.key in done:
            out.append((done[job.key], True))
            continue
        ds = job.dataset
        progress(f"[eval {fit.method.display} seed {fit.seed}] {ds.name}/{ds.test_split} shift {job.shift.label}")
        test = maps.volumes(ds.name, ds.test_split, job.shift)
        healthy_test = maps.volumes(spec.train_dataset, "test", job.shift)  # once per shift, whatever the dataset
        lesion_val = maps.volumes(ds.name, ds.val_split, NO_SHIFT_SPEC)
        result = evaluate_dataset(
            test + healthy_test,
            lesion_val=lesion_val if all(v.lesion_mask is not None for v in lesion_val) else None,
            healthy_val=maps.volumes(spec.train_dataset, "val", NO_SHIFT_SPEC),
            source_names={"lesion_val": f"{ds.name}/{ds.val_split}", "healthy_val": f"{spec.train_dataset}/val"},
            seed=fit.seed,
        )
        record = cell_record(fit, job, ectx, result, test, len(healthy_test), maps.seconds(ds.name, ds.test_split, job.shift), meta, str(maps.device))
        if job.shift.name == NO_SHIFT_SPEC.name:
            save_example(ectx.example_dir(job), test[0])
        write_json_atomic(ectx.eval_path(job), record.to_dict())
        out.append((record, False))
    return out


def _fit_task(job: FitJob, cache_dir: Path, data_root: Path | None, device: str) -> dict:
    return run_fit(job, cache_dir=cache_dir, data_root=data_root, device=device)


def _eval_task(fit: FitJob, jobs: list[EvalJob], ectx: EvalContext) -> list[tuple[ResultRecord, bool]]:
    return run_fit_evals(fit, jobs, ectx)


def job_graph(fits: list[FitJob], evals: list[EvalJob], ectx: EvalContext) -> list[Task]:
    """The tasks of a grid: every fit (after the fits it reuses), then one evaluation task per fit."""
    args = (ectx.cache_dir, ectx.data_root, ectx.device)
    tasks = [Task(f"fit:{f.key}", _fit_task, (f, *args), tuple(f"fit:{d.key}" for d in f.depends_on)) for f in fits]
    for fit in {e.fit.key: e.fit for e in evals}.values():
        jobs = [e for e in evals if e.fit.key == fit.key]
        tasks.append(Task(f"eval:{fit.key}", _eval_task, (fit, jobs, ectx), (f"fit:{fit.key}",)))
    return tasks


# -- 5. the whole grid ----------------------------------------------------------------------------
@dataclass
class RunSummary:
    run_dir: Path
    records: list[ResultRecord]
    fits: list[dict]
    results_path: Path
    leaderboard_path: Path
    tracking_uri: str | None
    experiment: str
    seconds: float
    table: str = ""


def default_run_dir(spec: GridSpec) -> Path:
    return Path("runs") / spec.name


def run_grid(grid: str | os.PathLike | GridSpec, *, out_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             data_root: str | os.PathLike | None = None, tracking_uri: str | None = None, track: bool = True, workers: int = 1,
             threads_per_worker: int = 1, device: str | None = None, executor: Executor | None = None,
             progress: Progress = _print_progress) -> RunSummary:
    """Run every fit and evaluation cell of ``grid``; returns where everything was written."""
    start = time.perf_counter()
    # 1. the grid, its job graph and where things go
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    executor = executor or create_executor(workers, threads_per_worker)
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(spec)
    ectx = EvalContext(spec, Path(cache_dir) if cache_dir is not None else run_dir / "cache",
                       Path(data_root) if data_root is not None else None, device or spec.device)
    fits = spec.fit_jobs()
    graph = spec.fit_graph(fits)
    evals = spec.eval_jobs(fits)
    run_dir.mkdir(parents=True, exist_ok=True)
    progress(f"uadbench: grid {spec.name!r}: {len(spec.methods)} methods x {len(spec.seeds)} seeds = {len(fits)} fits "
             f"({len(graph)} with reused ones), {len(evals)} evaluation cells; {executor.describe()}; run dir {run_dir}")
    # 2. data, prepared once here so that jobs only read the cache
    progress(f"uadbench: preparing data on the {spec.image_grid.name} grid {spec.image_grid.shape} at {spec.image_grid.spacing:g} mm")
    for name, split in spec.splits():
        vols = prepare_split(name, split, grid=spec.image_grid, data_seed=spec.data_seed, cache_dir=ectx.cache_dir, data_root=ectx.data_root)
        progress(f"  {name}/{split}: {len(vols)} volumes")
    tracker = create_tracker(track, tracking_uri, run_dir, f"uadbench-{spec.name}")
    tracker.start_grid(spec, executor.describe())
    status = "FAILED"
    try:
        # 3. and 4. fits, dependencies first, then each fit's evaluation cells
        fit_metas: dict[str, dict] = {}
        cells: dict[str, tuple[ResultRecord, bool]] = {}
        for task, result in executor.run(job_graph(graph, evals, ectx)):
            if task.key.startswith("fit:"):
                fit_metas[task.args[0].key] = result
                tracker.log_fit(task.args[0], result)
            else:
                cells.update((rec.eval_key, (rec, cached)) for rec, cached in result)
        records = [cells[job.key][0] for job in evals]
        # 5. results, leaderboard, tracking
        results_path, leaderboard_path = run_dir / "results.jsonl", run_dir / "leaderboard.md"
        write_text_atomic(results_path, records_text(records))
        write_text_atomic(leaderboard_path, report.leaderboard_markdown(records, title=f"uadbench leaderboard: {spec.name}"))
        for job in evals:
            tracker.log_cell(cells[job.key][0], cells[job.key][1], ectx.example_dir(job))
        tracker.log_outputs(results_path, leaderboard_path)
        status = "FINISHED"
    finally:
        tracker.end_grid(status)
    return RunSummary(run_dir, records, [fit_metas[j.key] for j in fits], results_path, leaderboard_path, tracker.tracking_uri,
                      f"uadbench-{spec.name}", time.perf_counter() - start, report.leaderboard_terminal(records))
