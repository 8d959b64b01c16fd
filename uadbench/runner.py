"""Runs a grid: prepares data, fits every method, evaluates every cell, logs and reports.

Every expensive product is cached under a key that hashes everything that determines it, and
written atomically, so a killed run resumes where it stopped and a finished cell is never
recomputed:

    <cache>/data/<key>.npz        preprocessed split on the grid (images, brain and lesion masks)
    <cache>/fits/<key>/           model.pt (state_dict, loaded with weights_only=True) + meta.json
    <cache>/evals/<key>.json      one evaluation cell's result record

Steps of :func:`run_grid`:
1. read the grid; 2. prepare every split it needs; 3. fit (in worker processes when
``workers > 1``); 4. evaluate every (fit, dataset, shift) cell; 5. write ``results.jsonl``, log to
MLflow and render the leaderboard.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from uadbench.config import config_to_dict, flatten, stable_hash
from uadbench.data.pipeline import PIPELINE_VERSION, ImageGrid
from uadbench.data.volume import Volume
from uadbench.errors import UadbenchError
from uadbench.grid import EvalJob, FitJob, GridSpec, dependency_jobs, load_grid
from uadbench.io_utils import atomic_path, write_json_atomic, write_text_atomic

RECORD_SCHEMA = 1
FIT_FORMAT = "1"

Progress = Callable[[str], None]


def _print_progress(message: str) -> None:
    print(message, flush=True)


def versions() -> dict[str, str]:
    import torch

    import uadbench

    return {
        "uadbench": uadbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def _subject_seed(*parts: Any) -> int:
    return int(stable_hash(list(parts), length=8), 16)


# -- 2. data --------------------------------------------------------------------------------------
def prepare_split(
    dataset: str, split: str, *, grid: ImageGrid, data_seed: int, cache_dir: Path, data_root: Path | None
) -> list[Volume]:
    """Preprocessed volumes of one split on ``grid``, cached as npz."""
    from uadbench.data.dataset import create_dataset
    from uadbench.data.pipeline import preprocess

    source = create_dataset(dataset, root=data_root, seed=data_seed)
    source.check_split(split)
    key = stable_hash(
        {"fp": source.fingerprint(), "split": split, "grid": grid.to_dict(), "pipeline": PIPELINE_VERSION}, 16
    )
    path = cache_dir / "data" / f"{dataset}-{split}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            ids = [str(s) for s in z["subject_ids"]]
            lesions = z["lesion"] if "lesion" in z else None
            affine = z["affine"]
            return [
                Volume(z["image"][i], affine, z["brain"][i], ids[i], None if lesions is None else lesions[i])
                for i in range(len(ids))
            ]
    volumes = [preprocess(v, grid) for v in source.load(split)]
    if not volumes:
        raise UadbenchError(f"dataset {dataset!r} split {split!r} has no subjects")
    arrays: dict[str, np.ndarray] = {
        "image": np.stack([v.image for v in volumes]),
        "brain": np.stack([v.brain_mask for v in volumes]),
        "subject_ids": np.array([v.subject_id for v in volumes]),
        "affine": volumes[0].affine,
    }
    if all(v.lesion_mask is not None for v in volumes):
        arrays["lesion"] = np.stack([v.lesion_mask for v in volumes])
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return volumes


# -- 3. fits --------------------------------------------------------------------------------------
def fit_dir(cache_dir: Path, job: FitJob) -> Path:
    return cache_dir / "fits" / job.key


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UadbenchError("device 'cuda' requested but no CUDA device is available; use device = 'cpu'")
    return torch.device(device)


def run_fit(
    job: FitJob, *, cache_dir: Path, data_root: Path | None, device: str = "cpu", progress: Progress = _print_progress
) -> dict:
    """Train one method (or load it from the cache); returns the fit's meta record."""
    import torch

    from uadbench.data.slices import SliceDataset
    from uadbench.method import FitContext, method_class

    out = fit_dir(cache_dir, job)
    meta_path = out / "meta.json"
    if meta_path.is_file() and (out / "model.pt").is_file():
        meta = json.loads(meta_path.read_text())
        meta["cached"] = True
        return meta
    tag = f"[fit {job.method.display} seed {job.seed}]"
    train = prepare_split(job.train_dataset, "train", grid=job.image_grid, data_seed=job.data_seed, cache_dir=cache_dir, data_root=data_root)
    val = prepare_split(job.train_dataset, "val", grid=job.image_grid, data_seed=job.data_seed, cache_dir=cache_dir, data_root=data_root)
    torch.manual_seed(job.seed)
    np.random.seed(job.seed % (2**32))
    dev = _resolve_device(device)
    cls = method_class(job.method.name)
    method = cls(job.config, image_shape=job.image_grid.slice_shape)
    method.to(dev)
    dependencies = {}
    reused_seconds = 0.0
    dep_jobs = dependency_jobs(job)
    for dep in dep_jobs:
        progress(f"{tag} reuses {dep.method.name} ({dep.method.preset}, fit {dep.key})")
        reused_seconds += run_fit(dep, cache_dir=cache_dir, data_root=data_root, device=device, progress=progress)["train_seconds"]
        dependencies[dep.method.name] = load_fitted(dep, cache_dir, device)
    history: list[tuple[int, dict[str, float]]] = []
    work = cache_dir / "work" / job.key
    work.mkdir(parents=True, exist_ok=True)
    ctx = FitContext(
        device=dev,
        generator=torch.Generator().manual_seed(job.seed),
        seed=job.seed,
        work_dir=work,
        log_metrics=lambda metrics, step: history.append((int(step), {k: float(v) for k, v in metrics.items()})),
        progress=lambda msg: progress(f"{tag} {msg}"),
        dependencies=dependencies,
    )
    progress(f"{tag} training on {len(train)} healthy volumes ({job.train_dataset}/train)")
    start = time.perf_counter()
    method.fit(
        SliceDataset([v.image for v in train], [v.subject_id for v in train]),
        SliceDataset([v.image for v in val], [v.subject_id for v in val]),
        ctx,
    )
    seconds = time.perf_counter() - start
    state = method.state_dict()
    with atomic_path(out / "model.pt", suffix=".pt") as tmp:
        torch.save(state, tmp)
    meta = {
        "format": FIT_FORMAT,
        "key": job.key,
        "method": job.method.name,
        "label": job.method.display,
        "preset": job.method.preset,
        "overrides": job.method.overrides_dict,
        "config": config_to_dict(job.config),
        "config_hash": job.config_hash,
        "seed": job.seed,
        "train_dataset": job.train_dataset,
        "image_grid": job.image_grid.to_dict(),
        "train_seconds": seconds + reused_seconds,  # a reused fit's training counts in the cost
        "own_train_seconds": seconds,
        "dependencies": {d.method.name: d.key for d in dep_jobs},
        "num_parameters": method.num_parameters(),
        "history": history,
        "device": str(dev),
        "versions": versions(),
    }
    write_json_atomic(meta_path, meta)
    progress(f"{tag} done in {seconds:.1f} s")
    meta["cached"] = False
    return meta


def load_fitted(job: FitJob, cache_dir: Path, device: str = "cpu"):
    import torch

    from uadbench.method import method_class

    path = fit_dir(cache_dir, job) / "model.pt"
    if not path.is_file():
        raise UadbenchError(f"no checkpoint for {job.method.display} seed {job.seed} at {path}")
    dev = _resolve_device(device)
    method = method_class(job.method.name)(job.config, image_shape=job.image_grid.slice_shape)
    state = torch.load(path, map_location=dev, weights_only=True)
    method.load_state_dict(state)
    method.to(dev)
    for module in method.modules().values():
        module.eval()
    return method


# -- 4. evaluation --------------------------------------------------------------------------------
def predict_volume(method, image: np.ndarray, *, seed: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray | None, float]:
    """The method's anomaly map (and reconstruction) of one volume, slice batch by slice batch."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))[:, None].float()  # (Z,1,X,Y)
    generator = torch.Generator().manual_seed(seed)
    maps, recons = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = method.predict(x[i : i + batch_size].to(device), generator=generator)
            if tuple(out.anomaly_map.shape) != tuple(x[i : i + batch_size].shape):
                raise UadbenchError(
                    f"method {type(method).__name__} returned a map of shape {tuple(out.anomaly_map.shape)} "
                    f"for input {tuple(x[i:i + batch_size].shape)}"
                )
            maps.append(out.anomaly_map.float().cpu())
            if out.reconstruction is not None:
                recons.append(out.reconstruction.float().cpu())
    seconds = time.perf_counter() - start
    amap = np.moveaxis(torch.cat(maps)[:, 0].numpy(), 0, -1).astype(np.float32)
    recon = np.moveaxis(torch.cat(recons)[:, 0].numpy(), 0, -1).astype(np.float32) if recons else None
    return amap, recon, seconds


def _eval_volumes(method, volumes: list[Volume], *, shift, grid_seed: int, batch_size: int, device, spacing: float):
    from uadbench.evaluation.protocol import EvalVolume
    from uadbench.shifts import apply_shift

    out, seconds = [], []
    for v in volumes:
        rng = np.random.default_rng(_subject_seed("shift", shift.name, shift.severity, grid_seed, v.subject_id))
        image = apply_shift(shift.name, v.image, v.brain_mask, shift.severity, rng)
        amap, recon, sec = predict_volume(
            method, image, seed=_subject_seed("predict", grid_seed, v.subject_id), batch_size=batch_size, device=device
        )
        if not np.isfinite(amap).all():
            raise UadbenchError(f"method produced a non-finite anomaly map for volume {v.subject_id!r}")
        seconds.append(sec)
        out.append(EvalVolume(v.subject_id, amap, v.brain_mask, v.lesion_mask, spacing, image=image, reconstruction=recon))
    return out, seconds


@dataclass
class EvalContext:
    spec: GridSpec
    cache_dir: Path
    data_root: Path | None
    device: str


def run_fit_evals(fit: FitJob, jobs: list[EvalJob], ectx: EvalContext, progress: Progress = _print_progress) -> list[dict]:
    """All evaluation cells of one fit (cached cells are read back)."""
    from uadbench.evaluation.protocol import evaluate_dataset
    from uadbench.shifts import NO_SHIFT
    from uadbench.grid import ShiftSpec

    records: list[dict] = []
    todo = []
    for job in jobs:
        path = ectx.cache_dir / "evals" / f"{job.key}.json"
        if path.is_file():
            rec = json.loads(path.read_text())
            rec["cached"] = True
            records.append(rec)
        else:
            todo.append(job)
    if not todo:
        return records
    spec = ectx.spec
    grid = fit.image_grid
    device = _resolve_device(ectx.device)
    method = load_fitted(fit, ectx.cache_dir, ectx.device)
    fit_meta = json.loads((fit_dir(ectx.cache_dir, fit) / "meta.json").read_text())
    bs = spec.eval_batch_size
    tag = f"[eval {fit.method.display} seed {fit.seed}]"
    none = ShiftSpec(NO_SHIFT, None)
    healthy_val_vols = prepare_split(spec.train_dataset, "val", grid=grid, data_seed=spec.data_seed, cache_dir=ectx.cache_dir, data_root=ectx.data_root)
    healthy_val, _ = _eval_volumes(method, healthy_val_vols, shift=none, grid_seed=fit.seed, batch_size=bs, device=device, spacing=grid.spacing)
    healthy_test_vols = prepare_split(spec.train_dataset, "test", grid=grid, data_seed=spec.data_seed, cache_dir=ectx.cache_dir, data_root=ectx.data_root)
    val_cache: dict[str, list] = {}
    test_cache: dict[str, list[Volume]] = {}
    for job in todo:
        ds = job.dataset
        if ds.name not in val_cache:
            vols = prepare_split(ds.name, ds.val_split, grid=grid, data_seed=spec.data_seed, cache_dir=ectx.cache_dir, data_root=ectx.data_root)
            val_cache[ds.name] = _eval_volumes(method, vols, shift=none, grid_seed=fit.seed, batch_size=bs, device=device, spacing=grid.spacing)[0]
            test_cache[ds.name] = prepare_split(ds.name, ds.test_split, grid=grid, data_seed=spec.data_seed, cache_dir=ectx.cache_dir, data_root=ectx.data_root)
        test_vols = test_cache[ds.name]
        progress(f"{tag} {ds.name}/{ds.test_split} shift {job.shift.label}: {len(test_vols)} volumes")
        test, seconds = _eval_volumes(method, test_vols, shift=job.shift, grid_seed=fit.seed, batch_size=bs, device=device, spacing=grid.spacing)
        # healthy test scans (same shift) give false-positive volumes and reconstruction quality
        healthy_test, _ = _eval_volumes(method, healthy_test_vols, shift=job.shift, grid_seed=fit.seed, batch_size=bs, device=device, spacing=grid.spacing)
        # an annotated validation split always goes to the protocol, which refuses one without lesions
        lesion_val = val_cache[ds.name] if all(v.lesion_mask is not None for v in val_cache[ds.name]) else None
        result = evaluate_dataset(
            test + healthy_test,
            lesion_val=lesion_val,
            healthy_val=healthy_val,
            source_names={
                "lesion_val": f"{ds.name}/{ds.val_split}",
                "healthy_val": f"{spec.train_dataset}/val",
            },
            seed=fit.seed,
        )
        res = result.to_dict()
        record = {
            "schema": RECORD_SCHEMA,
            "grid": spec.name,
            "spec_hash": spec.spec_hash,
            "method": fit.method.name,
            "label": fit.method.display,
            "preset": fit.method.preset,
            "overrides": fit.method.overrides_dict,
            "config_hash": fit.config_hash,
            "fit_key": fit.key,
            "eval_key": job.key,
            "train_dataset": fit.train_dataset,
            "dataset": ds.name,
            "split": ds.test_split,
            "val_split": ds.val_split,
            "shift": job.shift.name,
            "severity": job.shift.severity,
            "seed": fit.seed,
            "image_grid": grid.to_dict(),
            "metrics": res["aggregates"],
            "confidence_intervals": res.get("confidence_intervals", {}),
            "per_volume": res["per_volume"],
            "thresholds": res["thresholds"],
            "healthy_test": f"{spec.train_dataset}/test ({len(healthy_test)} volumes: fp_volume_ml, ssim, psnr, l1_recon)",
            "dataset_stats": {
                "n_volumes": len(test),
                "lesion_prevalence": float(np.mean([v.lesion_mask.mean() for v in test if v.lesion_mask is not None] or [0.0])),
            },
            "cost": {
                "num_parameters": fit_meta["num_parameters"],
                "train_seconds": fit_meta["train_seconds"],
                "seconds_per_volume": float(np.mean(seconds)),
            },
            "versions": versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if job.shift.name == NO_SHIFT:
            _save_example(ectx.cache_dir / "evals" / f"{job.key}-example", test[0])
        write_json_atomic(ectx.cache_dir / "evals" / f"{job.key}.json", record)
        record["cached"] = False
        records.append(record)
    return records


def _save_example(prefix: Path, vol) -> None:
    """The first test volume's image, map and lesion mask as NIfTI (an MLflow artifact)."""
    from uadbench.data.nifti import save_nifti

    affine = np.diag([vol.spacing, vol.spacing, vol.spacing, 1.0])
    prefix.mkdir(parents=True, exist_ok=True)
    save_nifti(prefix / f"{vol.subject_id}_anomaly_map.nii.gz", vol.anomaly_map, affine)
    if vol.image is not None:
        save_nifti(prefix / f"{vol.subject_id}_image.nii.gz", vol.image, affine)
    if vol.lesion_mask is not None:
        save_nifti(prefix / f"{vol.subject_id}_lesion.nii.gz", vol.lesion_mask.astype(np.uint8), affine)


# -- workers --------------------------------------------------------------------------------------
def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _fit_task(job: FitJob, cache_dir: Path, data_root: Path | None, device: str) -> dict:
    return run_fit(job, cache_dir=cache_dir, data_root=data_root, device=device)


def _eval_task(fit: FitJob, jobs: list[EvalJob], ectx: EvalContext) -> list[dict]:
    return run_fit_evals(fit, jobs, ectx)


# -- 5. the whole grid ----------------------------------------------------------------------------
@dataclass
class RunSummary:
    run_dir: Path
    records: list[dict]
    fits: list[dict]
    results_path: Path
    leaderboard_path: Path
    tracking_uri: str | None
    experiment: str
    seconds: float
    table: str = ""
    extra: dict = field(default_factory=dict)


def default_run_dir(spec: GridSpec) -> Path:
    return Path("runs") / spec.name


def run_grid(
    grid: str | os.PathLike | GridSpec,
    *,
    out_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    workers: int = 1,
    threads_per_worker: int = 1,
    device: str | None = None,
    progress: Progress = _print_progress,
) -> RunSummary:
    """Run every fit and evaluation cell of ``grid``; returns where everything was written."""
    from uadbench import report

    start = time.perf_counter()
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else run_dir / "cache"
    droot = Path(data_root) if data_root is not None else None
    dev = device or spec.device
    if workers < 1:
        raise UadbenchError(f"workers must be >= 1, got {workers}")
    fits = spec.fit_jobs()
    evals = spec.eval_jobs(fits)
    progress(
        f"uadbench: grid {spec.name!r}: {len(spec.methods)} methods x {len(spec.seeds)} seeds = {len(fits)} fits, "
        f"{len(evals)} evaluation cells; run dir {run_dir}"
    )

    # 2. data, prepared once in this process so workers only read the cache
    progress(f"uadbench: preparing data on the {spec.image_grid.name} grid {spec.image_grid.shape} at {spec.image_grid.spacing:g} mm")
    needed = {(spec.train_dataset, "train"), (spec.train_dataset, "val"), (spec.train_dataset, "test")}
    for ds in spec.datasets:
        needed |= {(ds.name, ds.val_split), (ds.name, ds.test_split)}
    for name, split in sorted(needed):
        vols = prepare_split(name, split, grid=spec.image_grid, data_seed=spec.data_seed, cache_dir=cache, data_root=droot)
        progress(f"  {name}/{split}: {len(vols)} volumes")

    tracker = None
    if track:
        from uadbench.tracking import Tracker, default_tracking_uri

        uri = tracking_uri or default_tracking_uri(run_dir)
        tracker = Tracker(uri, f"uadbench-{spec.name}", artifact_dir=run_dir / "mlartifacts")
        tracker.start_parent(
            f"{spec.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}",
            {"grid": spec.source, "spec_hash": spec.spec_hash, "image_grid": json.dumps(spec.image_grid.to_dict()),
             "seeds": json.dumps(list(spec.seeds)), "train_dataset": spec.train_dataset, "workers": workers},
            {"uadbench.grid": spec.name, "uadbench.spec_hash": spec.spec_hash},
        )
    status = "FAILED"
    try:
        # 3. fits
        fit_metas: dict[str, dict] = {}
        pool = None
        if workers > 1:
            pool = cf.ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(threads_per_worker,),
            )
        try:
            if pool is None:
                for job in fits:
                    fit_metas[job.key] = run_fit(job, cache_dir=cache, data_root=droot, device=dev, progress=progress)
            else:
                # methods that reuse another fit go in a second wave, after the fits they reuse
                reusing = {j.key for j in fits if dependency_jobs(j)}
                waves = [[j for j in fits if j.key not in reusing], [j for j in fits if j.key in reusing]]
                for wave in waves:
                    futures = {pool.submit(_fit_task, job, cache, droot, dev): job for job in wave}
                    for fut in cf.as_completed(futures):
                        fit_metas[futures[fut].key] = fut.result()
            for job in fits:
                meta = fit_metas[job.key]
                if tracker is not None:
                    run_id = tracker.child_run(
                        f"fit/{job.method.display}/seed{job.seed}",
                        tags={"uadbench.kind": "fit", "method": job.method.name, "label": job.method.display,
                              "preset": job.method.preset, "seed": job.seed, "config_hash": job.config_hash,
                              "cached": meta.get("cached", False)},
                        params={"method": job.method.name, "preset": job.method.preset,
                                **flatten(config_to_dict(job.config), "config.")},
                    )
                    tracker.log_history(run_id, [(s, m) for s, m in meta.get("history", [])])
                    tracker.log_metrics(run_id, {"train_seconds": meta["train_seconds"], "num_parameters": meta["num_parameters"]})
                    tracker.end_run(run_id)

            # 4. evaluation, one task per fit
            ectx = EvalContext(spec, cache, droot, dev)
            by_fit: dict[str, list[EvalJob]] = {}
            for job in evals:
                by_fit.setdefault(job.fit.key, []).append(job)
            results: dict[str, list[dict]] = {}
            if pool is None:
                for fit in fits:
                    results[fit.key] = run_fit_evals(fit, by_fit.get(fit.key, []), ectx, progress)
            else:
                futures = {pool.submit(_eval_task, fit, by_fit.get(fit.key, []), ectx): fit for fit in fits}
                for fut in cf.as_completed(futures):
                    results[futures[fut].key] = fut.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

        order = {job.key: i for i, job in enumerate(evals)}
        records = sorted((r for rs in results.values() for r in rs), key=lambda r: order.get(r["eval_key"], 0))

        # 5. results, tracking, leaderboard
        results_path = run_dir / "results.jsonl"
        lines = [json.dumps({k: v for k, v in r.items() if k != "cached"}, sort_keys=True) for r in records]
        write_text_atomic(results_path, "\n".join(lines) + "\n")
        table_md = report.leaderboard_markdown(records, title=f"uadbench leaderboard: {spec.name}")
        leaderboard_path = run_dir / "leaderboard.md"
        write_text_atomic(leaderboard_path, table_md)
        if tracker is not None:
            for rec in records:
                run_id = tracker.child_run(
                    f"eval/{rec['label']}/{rec['dataset']}/{'none' if rec['shift'] == 'none' else rec['shift'] + '@' + format(rec['severity'], 'g')}/seed{rec['seed']}",
                    tags={"uadbench.kind": "eval", "method": rec["method"], "label": rec["label"], "dataset": rec["dataset"],
                          "split": rec["split"], "shift": rec["shift"], "severity": rec["severity"], "seed": rec["seed"],
                          "config_hash": rec["config_hash"], "cached": rec.get("cached", False)},
                    params={f"threshold.{k}": json.dumps(v) for k, v in rec["thresholds"].items()},
                )
                tracker.log_metrics(run_id, {**rec["metrics"], **{f"cost.{k}": v for k, v in rec["cost"].items()}})
                example = cache / "evals" / f"{rec['eval_key']}-example"
                if example.is_dir():
                    for f in sorted(example.iterdir()):
                        tracker.log_artifact(run_id, f, "example")
                tracker.end_run(run_id)
            tracker.log_artifact(tracker.parent_id, results_path)
            tracker.log_artifact(tracker.parent_id, leaderboard_path)
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.end_parent(status)

    table = report.leaderboard_terminal(records)
    seconds = time.perf_counter() - start
    return RunSummary(
        run_dir=run_dir,
        records=records,
        fits=[fit_metas[j.key] for j in fits],
        results_path=results_path,
        leaderboard_path=leaderboard_path,
        tracking_uri=tracker.tracking_uri if tracker else None,
        experiment=f"uadbench-{spec.name}",
        seconds=seconds,
        table=table,
    )
