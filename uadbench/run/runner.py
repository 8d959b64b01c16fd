"""Runs a grid: prepares data, fits every method, evaluates every cell, logs and reports.

Every expensive product is cached under a key that hashes everything that determines it (see
:mod:`uadbench.grid.jobs`; where each lies: :mod:`uadbench.run.layout`), and written atomically,
so a killed run resumes where it stopped and a finished cell is never recomputed.

:func:`run_grid` reads as its steps: 1. read the grid and expand its job graph; 2. prepare every
split it needs; 3. fit, dependencies first; 4. evaluate every (fit, dataset, shift) cell; 5. write
``results.jsonl`` and the leaderboard, log to MLflow.

Subjects: records, the leaderboard and MLflow name them by pseudonyms (:func:`subject_naming`,
keyed by ``<run dir>/pseudonym.key``) unless ``real_ids``; generated data (the phantom) keep their
synthetic ids. A cell's example volume (NIfTI named by the subject's id, and its panel) stays in
the cache unless ``log_examples`` sends it to MLflow too.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uadbench import report
from uadbench.data.dataset import dataset_class
from uadbench.errors import UadbenchError
from uadbench.evaluation.protocol import evaluate_dataset
from uadbench.executors import Executor, Task, TaskFailure, create_executor
from uadbench.files import record_digest, write_json_atomic, write_text_atomic
from uadbench.grid import EvalJob, FitJob, GridSpec, load_grid
from uadbench.grid.entries import NO_SHIFT_SPEC
from uadbench.progress import GridProgress
from uadbench.records import Failure, Pseudonyms, ResultRecord, ResultsFile, name_subjects, versions
from uadbench.registry import runtime_modules
from uadbench.run import layout
from uadbench.run.cells import EvalContext, cell_record, floor_evaluation, input_similarity, read_cell, save_example
from uadbench.run.live import LiveReader, LiveWriter, live_path
from uadbench.run.locks import hold_run
from uadbench.run.maps import MapSource, load_fitted, read_fit, read_fit_record, resolve_device, save_fit
from uadbench.run.outcome import Outcome
from uadbench.run.splits import prepare_split
from uadbench.run.tracking import create_tracker

Progress = Callable[[str], None]


def _print_progress(message: str) -> None:
    print(message, flush=True)


# -- 3. fits --------------------------------------------------------------------------------------
def network_passes(method: Any) -> dict[str, int]:
    """``{"network_passes": n}`` for a method that declares its network passes per slice, else {}."""
    passes = getattr(method, "network_passes", None)
    return {} if passes is None else {"network_passes": int(passes)}


def run_fit(job: FitJob, *, cache_dir: Path, data_root: Path | None, device: str = "cpu", progress: Progress | None = _print_progress,
            checkpoint_every: int = 500) -> dict:
    """Train one method (or read it from the cache); returns the fit's meta record.

    The fits ``job`` reuses (``job.depends_on``) are read from the cache, or fitted first when the
    caller did not run them. Metrics and progress also go to the fit's live log (:mod:`uadbench.run.live`);
    ``progress=None`` prints nothing."""
    import torch

    from uadbench.checkpoints import Checkpointer
    from uadbench.data.slices import SliceDataset
    from uadbench.method import FitContext, create_method

    if (cached := read_fit(cache_dir, job)) is not None:
        return {**cached, "cached": True}
    tag = f"[fit {job.method.display} seed {job.seed}]"
    live = LiveWriter(live_path(cache_dir, job.key), echo=(lambda msg: progress(f"{tag} {msg}")) if progress else None)
    train, val = (prepare_split(job.train_dataset, s, grid=job.image_grid, data_seed=job.data_seed, cache_dir=cache_dir, data_root=data_root)
                  for s in ("train", "val"))
    torch.manual_seed(job.seed)
    np.random.seed(job.seed % (2**32))
    dev = resolve_device(device)
    if dev.type == "cuda":  # the deterministic kernels where CUDA has them; a warning names each op that has none
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    method = create_method(job.method.name, config=job.config, image_shape=job.image_grid.slice_shape).to(dev)
    reused = [run_fit(d, cache_dir=cache_dir, data_root=data_root, device=device, progress=progress, checkpoint_every=checkpoint_every)
              for d in job.depends_on]
    ckpt = Checkpointer(layout.work_dir(cache_dir, job.key), checkpoint_every, method.modules)
    history = ckpt.history  # kept across a resume
    ctx = FitContext(
        device=dev, generator=torch.Generator().manual_seed(job.seed), seed=job.seed, checkpoint=ckpt,
        precision=job.method.precision, compile=job.method.compile,
        log_metrics=lambda metrics, step: live.metrics(metrics, step, history), progress=live.progress,
        dependencies={d.method.name: load_fitted(d, cache_dir, device) for d in job.depends_on},
    )
    live.progress(f"training on {len(train)} healthy volumes ({job.train_dataset}/train)")
    start = time.perf_counter()
    slices = [SliceDataset([v.image for v in split], [v.subject_id for v in split]) for split in (train, val)]
    method.fit(slices[0], slices[1], ctx)
    seconds = time.perf_counter() - start
    meta = {
        "key": job.key, "method": job.method.name, "label": job.method.display, "preset": job.method.preset,
        "overrides": job.method.overrides_dict, "config_hash": job.config_hash, "seed": job.seed,
        "train_dataset": job.train_dataset, "image_grid": job.image_grid.to_dict(),
        "train_seconds": seconds + sum(r["train_seconds"] for r in reused),  # a reused fit's training counts in the cost
        "own_train_seconds": seconds, "dependencies": {d.method.name: d.key for d in job.depends_on},
        "num_parameters": method.num_parameters(), "history": history, "device": str(dev), "threads": torch.get_num_threads(),
        "precision": job.method.precision, "compile": job.method.compile,
        "versions": versions(), **network_passes(method),
    }
    save_fit(cache_dir, job, method.state_dict(), meta)
    ckpt.clear()
    live.progress(f"done in {seconds:.1f} s")
    return {**meta, "cached": False}


# -- 4. evaluation --------------------------------------------------------------------------------
def run_cell(fit: FitJob, job: EvalJob, maps: MapSource, ectx: EvalContext, meta: dict) -> ResultRecord:
    """One evaluation cell: the protocol on the test split, healthy scans and validation splits."""
    spec, ds = ectx.spec, job.dataset
    test, healthy_ref = maps.volumes(job.map("test")), job.map("healthy_test")
    same = healthy_ref.key == job.map("test").key  # the test split is the healthy test split itself: evaluated once
    healthy_test = [] if same else maps.volumes(healthy_ref)  # once per shift, whatever the dataset
    lesion_val = maps.volumes(job.map("lesion_val"))
    protocol = dict(
        lesion_val=lesion_val if all(v.lesion_mask is not None for v in lesion_val) else None,
        healthy_val=maps.volumes(job.map("healthy_val")),
        source_names={"lesion_val": f"{ds.name}/{ds.val_split}", "healthy_val": f"{spec.train_dataset}/val"},
        seed=fit.seed,
    )
    result = evaluate_dataset(test + healthy_test, **protocol)  # type: ignore[arg-type]
    floor = floor_evaluation(test + healthy_test, **protocol)  # type: ignore[arg-type]  # the protocol on a map constant on the brain
    seconds = maps.maps(job.map("test")).seconds
    similarity = (input_similarity(maps.images(spec.train_dataset, "test", NO_SHIFT_SPEC), healthy_test)
                  if healthy_test and healthy_ref.dataset == spec.train_dataset else None)  # not across sites
    record = cell_record(fit, job, ectx, result, test, len(test if same else healthy_test), seconds, meta, str(maps.device), floor,
                         similarity)
    save_example(ectx.example_dir(job), test[0])
    write_json_atomic(ectx.eval_path(job), record.to_dict())
    record_digest(ectx.eval_path(job))
    return record


def restamp(record: ResultRecord, fit: FitJob, grid: str, spec_hash: str, example: str) -> ResultRecord:
    """A cached cell as a record of this grid: its key hashes everything that sets its numbers, so the
    fields that say how the grid named it (grid, spec hash, label, preset, overrides, sweep) come from
    the grid that reads it (another grid may have reached the same config as ``ae[steps=1500]``)."""
    m = fit.method
    return dataclasses.replace(record, grid=grid, spec_hash=spec_hash, label=m.display, preset=m.preset, overrides=m.overrides_dict,
                               sweep=dict(m.sweep), example=example)


CellOutcome = tuple[ResultRecord | Failure, bool]  # (the cell's record or failure, read from the cache)


def run_fit_evals(fit: FitJob, jobs: list[EvalJob], ectx: EvalContext, progress: Progress = _print_progress) -> list[CellOutcome]:
    """Every evaluation cell of one fit, as (record, read from the cache); a cell that raises is a
    :class:`Failure` and the other cells go on."""
    spec_hash = ectx.spec.spec_hash
    done = {job.key: restamp(record, fit, ectx.spec.name, spec_hash, ectx.example(job))
            for job in jobs if (record := read_cell(ectx.eval_path(job))) is not None}
    if len(done) == len(jobs):
        return [(done[j.key], True) for j in jobs]
    meta = read_fit_record(ectx.cache_dir, fit)
    if meta is None:
        raise UadbenchError(f"the fit of {fit.method.display} seed {fit.seed} has no record in {layout.fit_dir(ectx.cache_dir, fit.key)}; "
                            "rerun to fit it again")
    maps = MapSource(fit, batch_size=ectx.spec.predict_batch_size(fit.method.name), cache_dir=ectx.cache_dir, data_root=ectx.data_root,
                     device=resolve_device(ectx.device))
    out: list[CellOutcome] = []
    for job in jobs:
        if job.key in done:
            out.append((done[job.key], True))
            continue
        cell = f"{job.dataset.name}/{job.dataset.test_split} shift {job.shift.label}"
        progress(f"[eval {fit.method.display} seed {fit.seed}] {cell}")
        try:
            out.append((run_cell(fit, job, maps, ectx, meta), False))
        except Exception as exc:  # recorded; the other cells go on
            out.append((Failure("eval", fit.method.display, fit.seed, TaskFailure.from_exception(exc).error, cell), False))
    return out


def _fit_task(job: FitJob, cache_dir: Path, data_root: Path | None, device: str, checkpoint_every: int, quiet: bool) -> dict:
    return run_fit(job, cache_dir=cache_dir, data_root=data_root, device=device, checkpoint_every=checkpoint_every,
                   progress=None if quiet else _print_progress)


def _eval_task(fit: FitJob, jobs: list[EvalJob], ectx: EvalContext) -> list[CellOutcome]:
    return run_fit_evals(fit, jobs, ectx)


def job_graph(fits: list[FitJob], evals: list[EvalJob], ectx: EvalContext) -> list[Task]:
    """The tasks of a grid: every fit (after the fits it reuses), then one evaluation task per fit."""
    args = (ectx.cache_dir, ectx.data_root, ectx.device, ectx.checkpoint_every, ectx.quiet)
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
    failures: list[Failure] = field(default_factory=list)


def subject_naming(spec: GridSpec, run_dir: Path, real_ids: bool) -> Callable[[ResultRecord], ResultRecord]:
    """How the run's records name their subjects: pseudonyms under the run's key (made once, mode
    0600) unless ``real_ids``; a record of generated data alone (train and test) keeps its ids."""
    synthetic = {name for name in {spec.train_dataset, *(d.name for d in spec.datasets)} if dataset_class(name).synthetic_ids}
    needs_key = not real_ids and not {spec.train_dataset, *(d.name for d in spec.datasets)} <= synthetic
    pseudonyms = Pseudonyms.from_file(layout.pseudonym_key_path(run_dir)) if needs_key else None

    def name(record: ResultRecord) -> ResultRecord:
        return name_subjects(record, pseudonyms, synthetic=record.train_dataset in synthetic and record.dataset in synthetic)

    return name


def default_run_dir(spec: GridSpec) -> Path:
    return Path("runs") / spec.name


def run_grid(grid: str | os.PathLike | GridSpec, *, out_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             data_root: str | os.PathLike | None = None, tracking_uri: str | None = None, track: bool = True, workers: int = 1,
             threads_per_worker: int = 1, device: str | None = None, executor: Executor | None = None, checkpoint_every: int = 500,
             progress: Progress = _print_progress, real_ids: bool = False, log_examples: bool = False) -> RunSummary:
    """Run every fit and evaluation cell of ``grid``; returns where everything was written.

    A fit or cell that fails is recorded in ``RunSummary.failures`` (and the leaderboard) and the
    others go on; rerunning the same call retries only what failed or did not finish."""
    start = time.perf_counter()
    # 1. the grid, its job graph (keys know the thread count and device) and where things go
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    spec = dataclasses.replace(spec, data_root=str(data_root) if data_root is not None else spec.data_root)
    executor = executor or create_executor(workers, threads_per_worker, runtime_modules())
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(spec)
    ectx = EvalContext(spec, Path(cache_dir) if cache_dir is not None else layout.default_cache(run_dir),
                       Path(data_root) if data_root is not None else None, device or spec.device, checkpoint_every,
                       quiet=executor.polls and sys.stdout.isatty())  # a terminal shows a bar per fit instead of lines
    fits = spec.fit_jobs(runtime={"threads": executor.threads, "device": executor.device_type(ectx.device)})
    graph, evals = spec.fit_graph(fits), spec.eval_jobs(fits)
    # the run directory alone, the cache shared (runs may share one), each swept; removed again if the run fails first thing
    with hold_run(run_dir, ectx.cache_dir):
        progress(f"uadbench: grid {spec.name!r}: {len(spec.methods)} methods x {len(spec.seeds)} seeds = {len(fits)} fits "
                 f"({len(graph)} with reused ones), {len(evals)} evaluation cells; {executor.describe()}; run dir {run_dir}")
        # 2. data, prepared once here so that jobs only read the cache
        progress(f"uadbench: preparing data on the {spec.image_grid.name} grid {spec.image_grid.shape} at {spec.image_grid.spacing:g} mm")
        for name, split in spec.splits():
            vols = prepare_split(name, split, grid=spec.image_grid, data_seed=spec.data_seed, cache_dir=ectx.cache_dir, data_root=ectx.data_root)
            progress(f"  {name}/{split}: {len(vols)} volumes")
        for name, split, shift in spec.acquired_splits():  # the same subjects under another protocol
            prepare_split(name, split, grid=spec.image_grid, data_seed=spec.data_seed, cache_dir=ectx.cache_dir, data_root=ectx.data_root,
                          shift=shift)
            progress(f"  {name}/{split} re-acquired under {shift.label}")
        results = ResultsFile(layout.results_path(run_dir), [job.key for job in evals])
        if (moved := results.keep_foreign_records()) is not None:
            progress(f"uadbench: {results.path} held cells of another grid or setting; kept as {moved}")
        tracker = create_tracker(track, tracking_uri, run_dir, f"uadbench-{spec.name}")
        tracker.start_grid(spec, executor.describe(), run_dir)
        tasks = job_graph(graph, evals, ectx)
        bar = GridProgress(len(tasks))
        outcome = Outcome(results, tracker, ectx, LiveReader(ectx.cache_dir), graph, bar, subject_naming(spec, run_dir, real_ids), log_examples)
        executor.on_idle = outcome.poll  # while the executor waits: live curves and per-fit bars
        try:
            # 3. and 4. fits, dependencies first, then each fit's cells; each result is written as it comes
            for task, result in executor.run(tasks):
                bar.advance(outcome.take(task, result))
            # 5. results (written above), leaderboard, tracking
            records = results.ordered()
            leaderboard_path = layout.leaderboard_path(run_dir)
            board = report.leaderboard_markdown(records, title=f"uadbench leaderboard: {spec.name}", failures=outcome.failures,
                                                per_spec=True)  # records of another benchmark version never share a table
            write_text_atomic(leaderboard_path, board)
            if not results.path.is_file():
                results.add([])
            tracker.log_outputs(results.path, leaderboard_path)
        finally:
            bar.close()
            tracker.end_grid("FINISHED" if not outcome.failures and len(outcome.fit_metas) == len(graph) else "FAILED")
        return RunSummary(run_dir, records, [outcome.fit_metas[j.key] for j in fits if j.key in outcome.fit_metas], results.path,
                          leaderboard_path, tracker.tracking_uri, f"uadbench-{spec.name}", time.perf_counter() - start,
                          report.leaderboard_terminal(records, failures=outcome.failures), outcome.failures)
