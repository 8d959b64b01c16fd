"""What a run will do, before it does anything: ``uadbench run GRID --plan``.

A plan lists the grid's prepared splits, fits and evaluation cells with what the cache already
holds (by the same keys and paths as the run: :mod:`uadbench.grid.jobs`, :mod:`uadbench.run.layout`),
estimates the time of each fit and of the whole run on the chosen executor, and the disk its
caches take. Nothing is prepared, trained or written.

Time is ``fixed + steps x seconds per step`` per fit, plus ``seconds per volume`` for every volume
a fit's evaluation predicts and the protocol's seconds per evaluated volume. The figures come, in
this order, from the cache's own history (the fits and cells it holds of the same method, image
grid, device and thread count: ``own_train_seconds`` of ``meta.json`` over the fit's steps, the
cells' ``seconds_per_volume``), else from :data:`DEFAULT_COSTS`, measured on :data:`MEASURED_ON`
(``python benchmarks/scale.py costs`` measures them again on any machine), else they are unknown
and the plan says so. A method's training steps are its config's ``steps``, ``gan_steps`` and
``encoder_steps``, and ``pretrain_steps`` when ``pretrain`` is set (:func:`training_steps`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uadbench.config import config_to_dict
from uadbench.data.dataset import create_dataset
from uadbench.data.store import store_bytes
from uadbench.errors import UadbenchError
from uadbench.grid import EvalJob, FitJob, GridSpec
from uadbench.run import layout

STEP_FIELDS = ("steps", "gan_steps", "encoder_steps")  # optimiser steps a fit runs; pretrain_steps when pretrain
MEASURED_ON = "an AMD EPYC KVM guest, 2 cores shared with other jobs (load average 5 to 7), torch 2.14"
# (method, preset, image grid) -> (seconds per training step, fixed seconds per fit, seconds to predict
# one volume), on the CPU with one torch thread; measured by `python benchmarks/scale.py costs`
DEFAULT_COSTS: dict[tuple[str, str, str], tuple[float, float, float]] = {
    ("ae", "smoke", "smoke"): (0.002057, 0.0419, 0.00587),
    ("cddpm", "smoke", "smoke"): (0.1635, 0.184, 0.245),
    ("dae", "smoke", "smoke"): (0.01086, 0.0982, 0.00692),
    ("ddpm", "smoke", "smoke"): (0.05532, 0.0378, 0.0623),
    ("fanogan", "smoke", "smoke"): (0.03139, 0.0199, 0.002),
    ("mhd", "smoke", "smoke"): (0, 0.000792, 0.297),
    ("pddpm", "smoke", "smoke"): (0.07964, 0.00968, 0.225),
    ("thresh", "smoke", "smoke"): (0, 0.000519, 1.89e-05),
    ("vae", "smoke", "smoke"): (0.009667, 0.009, 0.00201),
    ("ae", "cpu", "cpu"): (0.1334, 0.0606, 0.0921),
    ("cddpm", "cpu", "cpu"): (0.3736, 1.82, 1.42),
    ("dae", "cpu", "cpu"): (0.125, 0.114, 0.0794),
    ("ddpm", "cpu", "cpu"): (0.4927, 0.477, 0.483),
    ("fanogan", "cpu", "cpu"): (0.167, 0.355, 0.0618),
    ("mhd", "cpu", "cpu"): (0, 0.00999, 1.59),
    ("pddpm", "cpu", "cpu"): (0.7978, 0, 1.53),
    ("thresh", "cpu", "cpu"): (0, 0.00198, 7.33e-05),
    ("vae", "cpu", "cpu"): (0.05382, 0.015, 0.0329),
    # the paper preset (k = 1, 2 steps; the diffusion methods' paper steps were too slow to measure here)
    ("ae", "paper", "paper"): (8.156, 0, 1.53),
    ("vae", "paper", "paper"): (1.581, 1.01, 0.744),
    ("dae", "paper", "paper"): (55.77, 1.88, 5.85),
}
# image grid -> seconds of the evaluation protocol per evaluated volume (the cell's result and its floor)
PROTOCOL_SECONDS: dict[str, float] = {"paper": 0.2539, "cpu": 0.0404, "smoke": 0.0029}


def training_steps(config: Any) -> int:
    """Optimiser steps a fit of ``config`` runs (see the module)."""
    values = config_to_dict(config)
    steps = sum(int(values[f]) for f in STEP_FIELDS if isinstance(values.get(f), int))
    if values.get("pretrain") and isinstance(values.get("pretrain_steps"), int):
        steps += int(values["pretrain_steps"])
    return steps


def step_overrides(config: Any, steps: int) -> dict[str, int]:
    """Overrides that set every step budget of ``config`` to ``steps`` (for measuring)."""
    values = config_to_dict(config)
    fields = [f for f in (*STEP_FIELDS, "pretrain_steps") if isinstance(values.get(f), int)]
    return {f: steps for f in fields}


# -- where the tasks run ------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """What the plan needs of an executor: how many tasks run at once (None: as many as the
    cluster gives), torch threads per task and the device type tasks train on."""

    kind: str
    concurrency: int | None
    threads: int
    device: str
    text: str
    time_limit: float | None = None  # seconds a task may run (Slurm --time)


def placement(kind: str, options: Mapping[str, Any], *, workers: int, threads: int, device: str) -> Placement:
    """The placement ``create_executor(workers, threads, kind=kind, **options)`` would give, without
    creating it (a Slurm plan needs no sbatch, a Ray plan no cluster)."""
    per_task = int(options.get("cpus") or threads) if kind != "local" else threads
    gpus = options.get("gpus") or 0
    if kind == "local":
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        text = f"local, {workers} worker{'s' if workers > 1 else ''} x {threads} torch thread{'s' if threads > 1 else ''}"
        return Placement(kind, workers, threads, device, text + f", {device}")
    device = "cpu" if device == "cpu" else ("cuda" if gpus else ("cpu" if device == "auto" else "cuda"))
    concurrency = None
    if kind == "ray" and options.get("address") is None:
        local = options.get("local_cpus") or (workers * per_task if workers > 1 else os.cpu_count() or 1)
        concurrency = max(1, int(local) // per_task)
    text = f"{kind}, {per_task} cpu{'s' if per_task > 1 else ''} and {gpus:g} gpu{'s' if gpus != 1 else ''} per task, {device}"
    limit = None
    if kind == "slurm" and options.get("time") is not None:
        from uadbench.executors.slurm import parse_slurm_time

        limit = 60.0 * parse_slurm_time(options["time"])
        text += f", {limit / 60:g} min per job"
    return Placement(kind, concurrency, per_task, device, text, limit)


# -- costs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cost:
    step: float | None  # seconds per training step
    fixed: float  # seconds per fit besides its steps
    predict: float | None  # seconds to predict one volume
    source: str


def _history(cache_dir: Path) -> tuple[list[dict], list[dict]]:
    """The cache's fit metas and cell records (only the fields the plan reads)."""
    metas, cells = [], []
    for path in sorted(layout.fits_root(cache_dir).glob(f"*/{layout.META}")):
        try:
            metas.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    evals = layout.eval_path(cache_dir, "x").parent
    for path in sorted(evals.glob("*.json")) if evals.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            cells.append({"method": record.get("method"), "config_hash": record.get("config_hash"),
                          "seconds_per_volume": (record.get("cost") or {}).get("seconds_per_volume")})
        except (OSError, ValueError):
            continue
    return metas, cells


def cost_of(fit: FitJob, placement: Placement, history: tuple[list[dict], list[dict]]) -> Cost:
    """Seconds per step, per fit and per predicted volume of ``fit`` (see the module for the order)."""
    from uadbench.config import create_config

    metas, cells = history
    grid = fit.image_grid.to_dict()
    same = [m for m in metas if m.get("method") == fit.method.name and m.get("image_grid") == grid
            and str(m.get("device", "")).split(":")[0] == placement.device and m.get("threads") == placement.threads]
    rates = []
    for m in same:
        try:
            steps = training_steps(create_config(m["method"], m.get("preset", "paper"), m.get("overrides") or {}))
        except Exception:  # noqa: BLE001  # a meta of another version: not comparable
            continue
        if steps > 0 and m.get("own_train_seconds") is not None:
            rates.append((m.get("config_hash") == fit.config_hash, float(m["own_train_seconds"]) / steps))
    predicts = [float(c["seconds_per_volume"]) for c in cells
                if c["method"] == fit.method.name and c["config_hash"] == fit.config_hash and c["seconds_per_volume"] is not None]
    table = DEFAULT_COSTS.get((fit.method.name, fit.method.preset, fit.image_grid.name)) if placement.device == "cpu" else None
    if rates:
        exact = [r for same_config, r in rates if same_config] or [r for _, r in rates]
        step = sum(exact) / len(exact)
        predict = sum(predicts) / len(predicts) if predicts else (table[2] if table else None)
        return Cost(step, 0.0, predict, f"history ({len(exact)} fit{'s' if len(exact) > 1 else ''})")
    if table is not None:
        predict = sum(predicts) / len(predicts) if predicts else table[2]
        return Cost(table[0], table[1], predict, f"table ({fit.method.preset} preset)")
    return Cost(None, 0.0, sum(predicts) / len(predicts) if predicts else None, "unmeasured")


# -- the plan -----------------------------------------------------------------------------------
@dataclass
class SplitLine:
    dataset: str
    split: str
    shift: str  # "" or the acquisition shift's label
    subjects: int
    bytes: int
    cached: bool | None  # None: unknown (the dataset's data were not found)


@dataclass
class FitLine:
    job: FitJob
    cached: bool | None
    steps: int
    cost: Cost
    listed: bool = True  # False: a fit only reused by listed ones (Method.dependencies)

    @property
    def seconds(self) -> float | None:
        if self.cached:
            return 0.0
        if self.cost.step is None:
            return None if self.steps else self.cost.fixed
        return self.cost.fixed + self.steps * self.cost.step


@dataclass
class EvalLine:
    fit: FitJob
    cells: int
    cached: int | None
    volumes: int  # volumes to predict (maps not in the cache)
    evaluated: int  # volumes the protocol reads over the cells still to run
    seconds: float | None


@dataclass
class RunPlan:
    spec: GridSpec
    placement: Placement
    cache_dir: Path
    splits: list[SplitLine]
    fits: list[FitLine]
    evals: list[EvalLine]
    map_bytes: tuple[int, int]  # (all maps, those in the cache)
    model_bytes: int | None
    wall_seconds: float | None
    notes: list[str] = field(default_factory=list)


def _subjects(source: Any, split: str) -> tuple[int, bool]:
    """Subjects of ``split`` and whether they were counted (else the dataset's paper split sizes)."""
    try:
        return len(source.subjects(split)), True
    except UadbenchError:
        plan = getattr(type(source), "split_plan", None)
        sizes = dict(plan.sizes) if plan is not None else {}
        return int(sizes.get(split, 0)), False


def plan_run(spec: GridSpec, placement: Placement, *, cache_dir: Path, data_root: Path | None = None) -> RunPlan:
    """The plan of ``spec`` on ``placement`` against ``cache_dir`` (see the module); reads only."""
    from uadbench.data.cache import data_key
    from uadbench.run.splits import split_paths

    spec = dataclasses.replace(spec, data_root=str(data_root) if data_root is not None else spec.data_root)
    notes: list[str] = []
    names = dict.fromkeys([spec.train_dataset, *(d.name for d in spec.datasets)])
    sources = {n: create_dataset(n, root=spec.data_root, seed=spec.data_seed) for n in names}
    missing = set()
    for name in names:
        try:
            spec.data_term(name)
        except UadbenchError as exc:
            missing.add(name)
            first = str(exc).splitlines()[0]
            notes.append(f"{first if first.startswith(name) else f'{name}: {first}'} (its cache entries are unknown; "
                         "split sizes are the paper's)")
            # the plan's jobs still need a data term: a stand-in that matches no cache entry
            spec._terms[name] = {"unavailable": name}

    # data: every split the grid prepares, and the acquired ones
    voxels = spec.image_grid.shape
    splits, counts = [], {}
    for name, split in spec.splits():
        n, counted = _subjects(sources[name], split)
        counts[(name, split)] = n
        cached = None
        if name not in missing:
            path, npz = split_paths(name, split, data_key(sources[name], split, spec.image_grid), cache_dir)
            cached = path.is_dir() or npz.is_file()
        splits.append(SplitLine(name, split, "", n, store_bytes(n, voxels, sources[name].has_lesions(split)), cached))
    for name, split, shift in spec.acquired_splits():
        cached = None
        if name not in missing:
            path, npz = split_paths(name, split, data_key(sources[name], split, spec.image_grid), cache_dir, shift)
            cached = path.is_dir() or npz.is_file()
        n = counts[(name, split)]
        splits.append(SplitLine(name, split, shift.label, n, store_bytes(n, voxels, sources[name].has_lesions(split)), cached))

    # fits, by the run's own keys
    runtime = {"threads": placement.threads, "device": placement.device}
    listed = spec.fit_jobs(runtime=runtime)
    graph = spec.fit_graph(listed)
    listed_keys = {f.key for f in listed}
    history = _history(cache_dir)
    known = spec.train_dataset not in missing
    fits = []
    for job in graph:
        cached = (layout.model_path(cache_dir, job.key).is_file() and layout.meta_path(cache_dir, job.key).is_file()) if known else None
        fits.append(FitLine(job, cached, training_steps(job.config), cost_of(job, placement, history), job.key in listed_keys))

    # evaluation: per fit, its cells and the maps they read
    evals_all = spec.eval_jobs(listed)
    by_fit: dict[str, list[EvalJob]] = {}
    for e in evals_all:
        by_fit.setdefault(e.fit.key, []).append(e)
    fit_lines = {f.job.key: f for f in fits}
    maps = {m.key: m for e in evals_all for m in e.maps}
    known_maps = {k: known and m.dataset not in missing and layout.map_path(cache_dir, k).is_file() for k, m in maps.items()}
    evals = []
    for key, jobs in by_fit.items():
        fit_known = known and all(e.dataset.name not in missing for e in jobs)
        todo = [e for e in jobs if not (fit_known and layout.eval_path(cache_dir, e.key).is_file())]
        to_predict = {m.key: m for e in todo for m in e.maps if not known_maps[m.key]}
        predict = sum(counts[(m.dataset, m.split)] for m in to_predict.values())
        evaluated = sum(counts[(m.dataset, m.split)] for e in todo for m in e.maps)
        cost, protocol = fit_lines[key].cost, PROTOCOL_SECONDS.get(spec.image_grid.name)
        seconds = None
        if not todo:
            seconds = 0.0
        elif (cost.predict is not None or predict == 0) and protocol is not None:
            seconds = predict * (cost.predict or 0.0) + evaluated * protocol
        evals.append(EvalLine(jobs[0].fit, len(jobs), len(jobs) - len(todo) if fit_known else None, predict, evaluated, seconds))
    per_map = voxels[0] * voxels[1] * voxels[2] * 4 * 2  # anomaly map + reconstruction, float32, before compression
    sizes = {k: counts[(m.dataset, m.split)] * per_map for k, m in maps.items()}
    map_bytes = (sum(sizes.values()), sum(b for k, b in sizes.items() if known_maps[k]))
    model_bytes = _model_bytes(graph, history[0])
    plan = RunPlan(spec, placement, cache_dir, splits, fits, evals, map_bytes, model_bytes, None, notes)
    plan.wall_seconds = schedule(plan)
    return plan


def _model_bytes(fits: list[FitJob], metas: list[dict]) -> int | None:
    """model.pt of every fit: float32 parameters (from the cache's metas, else by building each config once)."""
    known: dict[str, int] = {str(m.get("config_hash")): int(m["num_parameters"]) for m in metas if m.get("num_parameters") is not None}
    total = 0
    for job in fits:
        if job.config_hash not in known:
            try:
                from uadbench.method import create_method

                method = create_method(job.method.name, config=job.config, image_shape=job.image_grid.slice_shape)
                known[job.config_hash] = int(method.num_parameters())
            except Exception:  # noqa: BLE001  # a method that cannot be built here (a missing optional package)
                return None
        total += 4 * known[job.config_hash]
    return total


def schedule(plan: RunPlan) -> float | None:
    """Wall seconds of the run's tasks (every fit, then one evaluation task per fit) on
    ``plan.placement``: tasks start in graph order as soon as their dependencies are done and a
    worker is free (all at once on a cluster). None when a task's time is unknown."""
    durations: dict[str, float] = {}
    deps: dict[str, list[str]] = {}
    for f in plan.fits:
        if f.seconds is None:
            return None
        durations[f"fit:{f.job.key}"] = f.seconds
        deps[f"fit:{f.job.key}"] = [f"fit:{d.key}" for d in f.job.depends_on]
    for e in plan.evals:
        if e.seconds is None:
            return None
        durations[f"eval:{e.fit.key}"] = e.seconds
        deps[f"eval:{e.fit.key}"] = [f"fit:{e.fit.key}"]
    slots = plan.placement.concurrency or len(durations) or 1
    free = [0.0] * slots
    end: dict[str, float] = {}
    pending = list(durations)
    while pending:
        ready = next(t for t in pending if all(d in end for d in deps[t]))
        pending.remove(ready)
        slot = min(range(slots), key=lambda i: free[i])
        start = max([free[slot], *(end[d] for d in deps[ready])])
        end[ready] = free[slot] = start + durations[ready]
    return max(end.values(), default=0.0)


# -- the text -------------------------------------------------------------------------------------
def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


def _time(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _seeds(seeds: Any) -> str:
    return ",".join(str(s) for s in seeds)


def _count(flags: Any) -> str:
    flags = list(flags)
    return "?" if None in flags else f"{sum(bool(f) for f in flags)}/{len(flags)}"


def _state(cached: bool | None) -> str:
    return "?" if cached is None else ("cached" if cached else "to do")


def format_plan(plan: RunPlan) -> str:
    """The plan as text (see the module)."""
    spec, p = plan.spec, plan.placement
    g = spec.image_grid
    lines = [f"plan of grid {spec.name!r}: nothing is run", f"  executor: {p.text}", f"  cache:    {plan.cache_dir}"]
    held = sum(1 for s in plan.splits if s.cached)
    lines += ["", f"data on the {g.name} grid {'x'.join(map(str, g.shape))} at {g.spacing:g} mm: {len(plan.splits)} splits, {held} in the cache"]
    for s in plan.splits:
        where = f"{s.dataset}/{s.split}" + (f" under {s.shift}" if s.shift else "")
        lines.append(f"  {where:48} {s.subjects:6d} subjects {_size(s.bytes):>10}  {_state(s.cached)}")
    listed = sum(1 for f in plan.fits if f.listed)
    held = sum(1 for f in plan.fits if f.cached)
    lines += ["", f"fits: {len(plan.fits)} ({listed} listed, {len(plan.fits) - listed} reused by others), {held} in the cache; "
                  "one row per entry of the grid, time per fit"]
    lines.append(f"  {'method':24} {'seeds':10} {'cached':>6} {'steps':>7} {'s/step':>8} {'time':>8}  figures from")
    evals = {e.fit.key: e for e in plan.evals}
    groups: dict[tuple, list[FitLine]] = {}
    for f in plan.fits:
        name = f.job.method.display if f.listed else f"{f.job.method.name} (reused)"
        groups.setdefault((name, f.job.config_hash), []).append(f)
    for (name, _), group in groups.items():
        f = group[0]
        rate = "-" if not f.steps else ("?" if f.cost.step is None else f"{f.cost.step:.3g}")
        times = {_time(g.seconds) for g in group if not g.cached} or {_time(0.0)}
        lines.append(f"  {name:24} {_seeds(g.job.seed for g in group):10} {_count(g.cached for g in group):>6} {f.steps:7d} "
                     f"{rate:>8} {'/'.join(sorted(times)):>8}  {f.cost.source}")
    cells = sum(e.cells for e in plan.evals)
    held_cells = sum(e.cached or 0 for e in plan.evals)
    lines += ["", f"evaluation cells: {cells} ({len(plan.evals)} tasks, one per fit), {held_cells} in the cache; "
                  "time per task: predict every volume not in the map cache, then the protocol"]
    lines.append(f"  {'method':24} {'seeds':10} {'cells':>6} {'cached':>6} {'volumes':>8} {'s/volume':>8} {'time':>8}")
    for (name, _), group in groups.items():
        tasks = [evals[g.job.key] for g in group if g.job.key in evals]
        if not tasks:
            continue
        pv = group[0].cost.predict
        cached = "?" if any(e.cached is None for e in tasks) else str(sum(e.cached or 0 for e in tasks))
        times = {_time(e.seconds) for e in tasks}
        lines.append(f"  {name:24} {_seeds(e.fit.seed for e in tasks):10} {sum(e.cells for e in tasks):6d} {cached:>6} "
                     f"{max(e.volumes for e in tasks):8d} {'?' if pv is None else f'{pv:.3g}':>8} {'/'.join(sorted(times)):>8}")
    fit_sum = [f.seconds for f in plan.fits]
    eval_sum = [e.seconds for e in plan.evals]
    total = None if None in fit_sum or None in eval_sum else sum(fit_sum) + sum(eval_sum)  # type: ignore[arg-type]
    longest = None if None in fit_sum else max(fit_sum, default=0.0)  # type: ignore[type-var]
    lines += ["", "time:"]
    fit_total = None if None in fit_sum else sum(fit_sum)  # type: ignore[arg-type]
    eval_total = None if None in eval_sum else sum(eval_sum)  # type: ignore[arg-type]
    lines.append(f"  fits {_time(fit_total)} + evaluation {_time(eval_total)} = {_time(total)} of task time "
                 f"({p.device}, {p.threads} thread{'s' if p.threads > 1 else ''} per task); longest fit {_time(longest)}")
    if p.concurrency is None:
        lines.append(f"  wall time {_time(plan.wall_seconds)} if the cluster runs every task as soon as it may; size the job time "
                     f"limit from the longest fit and the allocation from the task time")
    else:
        lines.append(f"  wall time {_time(plan.wall_seconds)} with {p.concurrency} task{'s' if p.concurrency > 1 else ''} at once")
    if p.time_limit is not None:
        over = [t for t in (*fit_sum, *eval_sum) if t is not None and t > p.time_limit]
        if over:
            lines.append(f"  {len(over)} task{'s' if len(over) > 1 else ''} would run past the {p.time_limit / 60:g} min job limit "
                         f"(longest {_time(max(over))}): raise --slurm-time, or rerun to resume the fits from their checkpoints")
    sources = {f.cost.source for f in plan.fits if not f.cached and f.steps}
    if any(s.startswith("table") for s in sources):
        lines.append(f"  table figures: measured on {MEASURED_ON}, cpu, 1 torch thread (`python benchmarks/scale.py costs`)")
    if "unmeasured" in sources or plan.wall_seconds is None:
        lines.append(f"  ?: no figures for these methods on {p.device} at this preset and grid; a run of one fit "
                     "with the same cache gives them")
    split_bytes = sum(s.bytes for s in plan.splits)
    held_bytes = sum(s.bytes for s in plan.splits if s.cached)
    lines += ["", "disk:"]
    lines.append(f"  prepared splits {_size(split_bytes)} ({_size(held_bytes)} in the cache): voxels x 6 bytes (image float32, brain "
                 "and lesion masks)")
    lines.append(f"  anomaly maps up to {_size(plan.map_bytes[0])} ({_size(plan.map_bytes[1])} in the cache): voxels x 8 bytes "
                 "(map and reconstruction, float32), less after compression")
    lines.append(f"  models {_size(plan.model_bytes)} (float32 parameters)")
    total_bytes = None if plan.model_bytes is None else split_bytes + plan.map_bytes[0] + plan.model_bytes
    lines.append(f"  total up to {_size(total_bytes)}")
    if plan.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in plan.notes]
    return "\n".join(lines)

