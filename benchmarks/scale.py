"""How prepared splits scale with the number of subjects, and the cost table of ``--plan``.

    python benchmarks/scale.py                       # N = 50, 200, 800 at the paper grid (96x96x50)
    python benchmarks/scale.py --sizes 50,200 --grid cpu
    python benchmarks/scale.py costs                 # seconds per training step / per predicted volume

**scale.** For each N, synthetic volumes (a brain-shaped ellipsoid with texture and per-subject
noise, float32, with brain and lesion masks; generating N phantom subjects would dominate the run)
go through the per-volume store (:mod:`uadbench.data.store`) in phases, each in a fresh process so
that its peak resident memory is its own (``os.wait4``'s ``ru_maxrss`` of that child):

    save     write the N volumes as a store (each synthesised on demand, written, dropped)
    load     open the store: N Volume objects, memory-mapped
    read     load and read every voxel of every volume once (sum of each image)
    epoch    load, build the SliceDataset training sees, draw one epoch of batches of 32 slices
             (volumes stacked in memory up to its 1 GiB budget, slices read on demand beyond)
    epoch-lazy   the same with slices read on demand at every N (a budget of 0)

The time of a phase is measured inside its process around the work alone (the median of 3 runs, 2
for save; a load, which takes milliseconds, is the fastest of five in its process), with the
interpreter's own objects frozen out of the garbage collector (``gc.freeze``: a full collection
costs in proportion to the heap, not to N); the memory of the work is the rise of resident memory
from its start to its peak (the peak reset first: ``/proc/self/clear_refs``; elsewhere the peak RSS
less that of the same process doing no work), so the exponent describes the work. The exponent of time and memory against N is the
slope of a least-squares line in log-log; a phase whose work stays under 10 MB at every N is
reported as flat (RSS moves by about that much between identical runs).
Floors: exponent <= 1.1 for every phase; the largest N at the paper grid within 4 GB; a 40-subject
load within 0.5 s and 400 MB.

**before.** The npz cache of earlier versions (``BASELINE: npz load_split``, copied below as it
was) at 10, 20 and 40 subjects, for the table of issue 20: it decompressed the whole split once per
subject and array, so time and memory grew with N squared.

**costs.** For every registered method at its ``smoke`` preset on the smoke grid and its ``cpu``
preset on the cpu grid (``--presets smoke,cpu,paper`` adds the paper preset on the paper grid): a
fit of k1 and of k2 steps through the runner's ``run_fit`` (seconds per step = the difference over
the steps; fixed = the rest), and the seconds to predict one volume;
and the evaluation protocol's seconds per volume on each grid. The rows print as the Python table
:data:`uadbench.run.plan.DEFAULT_COSTS` holds, with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GRIDS = {"paper": (96, 96, 50), "cpu": (64, 64, 32), "smoke": (32, 32, 16)}
PHASES = ("save", "load", "read", "epoch", "epoch-lazy")
REPEATS = {"save": 2}  # runs of each phase (fresh processes): the median time and the largest peak RSS count
FLAT_MB = 10.0  # a phase whose work takes less memory than this at every N has no growth to fit


# -- synthetic subjects ---------------------------------------------------------------------------
class Synthetic:
    """N volumes of ``shape``, built on access (subject i is the same on every access)."""

    def __init__(self, n: int, shape: tuple[int, int, int], lesion: bool = True) -> None:
        self.n, self.shape, self.lesion = n, shape, lesion
        x, y, z = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
        self.brain = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.2) ** 2 < 1
        self.template = ((0.5 + 0.2 * np.sin(6 * x) * np.cos(5 * y)) * self.brain).astype(np.float32)
        self.blob = (x - 0.2) ** 2 + y**2 + (z + 0.1) ** 2 < 0.05

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from uadbench.data.volume import Volume

        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng(i)
        image = self.template + np.float32(0.02) * rng.standard_normal(self.shape, dtype=np.float32) * self.brain
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        affine[:3, 3] = rng.uniform(-100, 100, 3)
        lesion = np.roll(self.blob, int(rng.integers(-5, 5)), axis=0) & self.brain if self.lesion else None
        return Volume(np.clip(image, 0, 1), affine, self.brain, f"sub-{i:05d}", lesion)


# -- BASELINE: npz load_split, as uadbench wrote and read prepared splits before the store --------
def baseline_npz_save_split(path: Path, volumes) -> None:
    from uadbench.data.geometry import NATIVE_AFFINE, NATIVE_SHAPE

    arrays = {
        "image": np.stack([v.image for v in volumes]),
        "brain": np.stack([v.brain_mask for v in volumes]),
        "subject_ids": np.array([v.subject_id for v in volumes]),
        "affine": np.stack([v.affine for v in volumes]),
        "native_affine": np.stack([np.asarray(v.meta.get(NATIVE_AFFINE, v.affine), dtype=np.float64) for v in volumes]),
        "native_shape": np.array([v.meta.get(NATIVE_SHAPE, v.shape) for v in volumes], dtype=np.int64),
    }
    if all(v.lesion_mask is not None for v in volumes):
        arrays["lesion"] = np.stack([v.lesion_mask for v in volumes])
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def baseline_npz_load_split(path: Path):
    from uadbench.data.geometry import NATIVE_AFFINE, NATIVE_SHAPE
    from uadbench.data.volume import Volume

    with np.load(path, allow_pickle=False) as z:
        ids = [str(s) for s in z["subject_ids"]]
        lesions = z["lesion"] if "lesion" in z else None
        affines, native_affines, native_shapes = z["affine"], z["native_affine"], z["native_shape"]
        return [
            Volume(z["image"][i], affines[i], z["brain"][i], ids[i], None if lesions is None else lesions[i],
                   meta={NATIVE_AFFINE: native_affines[i], NATIVE_SHAPE: tuple(int(n) for n in native_shapes[i])})
            for i in range(len(ids))
        ]


# -- one phase, in a process of its own -----------------------------------------------------------
def run_phase(phase: str, n: int, shape: tuple[int, int, int], folder: Path, work: bool) -> dict:
    """Runs in the child: imports what the phase needs, then (if ``work``) does it; returns its seconds."""
    from uadbench.data.store import load_volumes, save_volumes

    if phase.startswith("epoch"):
        import torch

        torch.set_num_threads(1)
        from uadbench.data.slices import SliceDataset
    store, npz = folder / f"n{n}.volumes", folder / f"n{n}.npz"
    if not work:
        return {"seconds": 0.0, "work_mb": None}
    gc.collect()
    gc.freeze()  # the interpreter's own objects stay out of the collector's passes: their cost is not N's
    reset = reset_peak_rss()
    before = status_kb("VmRSS")
    start = time.perf_counter()
    elapsed: float | None = None
    extra: dict = {}
    if phase == "save":
        save_volumes(store, Synthetic(n, shape))
    elif phase == "load":
        extra["volumes"] = len(load_volumes(store))
        seconds = [time.perf_counter() - start]
        for _ in range(4):  # a load takes milliseconds: the fastest of five, against the scheduler's jitter
            again = time.perf_counter()
            load_volumes(store)
            seconds.append(time.perf_counter() - again)
        elapsed = min(seconds)
    elif phase == "read":
        extra["sum"] = float(sum(float(v.image.sum(dtype=np.float64)) for v in load_volumes(store)))
    elif phase.startswith("epoch"):
        volumes = load_volumes(store)
        data = SliceDataset([v.image for v in volumes], [v.subject_id for v in volumes], memory_budget=0 if phase == "epoch-lazy" else None)
        extra["lazy"] = data.lazy
        stream = data.batches(32, torch.Generator().manual_seed(0))
        extra["batches"] = -(-n // 32)
        extra["checksum"] = float(sum(float(next(stream).sum()) for _ in range(extra["batches"])))
    elif phase == "old-save":
        baseline_npz_save_split(npz, [Synthetic(n, shape)[i] for i in range(n)])
    elif phase == "old-load":
        extra["volumes"] = len(baseline_npz_load_split(npz))
    if elapsed is None:
        elapsed = time.perf_counter() - start
    work_mb = (status_kb("VmHWM") - before) / 1024 if reset else None
    return {"seconds": elapsed, "work_mb": work_mb, **extra}


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now; VmHWM: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: 5 > /proc/self/clear_refs), so VmHWM is the work's own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return status_kb("VmHWM") > 0
    except OSError:
        return False


def measure(phase: str, n: int, shape: tuple[int, int, int], folder: Path, work: bool = True) -> dict:
    """``run_phase`` in a child process; adds its peak RSS in MB (``os.wait4``)."""
    cmd = [sys.executable, __file__, "_phase", phase, str(n), ",".join(map(str, shape)), str(folder), "1" if work else "0"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"phase {phase} at N={n} failed (exit {child.returncode})")
    return {**json.loads(out.strip().splitlines()[-1]), "rss_mb": usage.ru_maxrss / 1024}


def slope(ns: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(N)."""
    x, y = np.log(np.asarray(ns, float)), np.log(np.maximum(np.asarray(values, float), 1e-9))
    return float(np.polyfit(x, y, 1)[0])


def scale(sizes: list[int], grid: str, before: list[int], folder: Path) -> int:
    shape = GRIDS[grid]
    mb = np.prod(shape) * 6 / 1e6
    print(f"machine: {machine()}; python {platform.python_version()}, numpy {np.__version__}")
    print(f"grid {grid} {'x'.join(map(str, shape))}: {mb:.2f} MB per subject on disk (image float32 + brain + lesion)\n")
    rows: dict[str, list[dict]] = {p: [] for p in PHASES}
    base = {p: measure(p, 1, shape, folder, work=False)["rss_mb"] for p in PHASES}
    for n in sizes:
        for phase in PHASES:
            runs = [measure(phase, n, shape, folder) for _ in range(REPEATS.get(phase, 3))]
            r = {**runs[0], "seconds": float(np.median([x["seconds"] for x in runs])), "rss_mb": max(x["rss_mb"] for x in runs)}
            own = [x["work_mb"] for x in runs if x["work_mb"] is not None]
            r["work_mb"] = max(max(own) if own else r["rss_mb"] - base[phase], 0.01)
            rows[phase].append(r)
            print(f"  N={n:5d} {phase:6} {r['seconds']:8.3f} s  peak RSS {r['rss_mb']:8.1f} MB  (work {r['work_mb']:8.1f} MB)"
                  + (f"  lazy slices: {r['lazy']}" if "lazy" in r else ""), flush=True)
    ok = True
    print(f"\n| phase | {' | '.join(f'N={n} time' for n in sizes)} | {' | '.join(f'N={n} RSS' for n in sizes)} "
          "| time exponent | memory exponent |")
    print("|---" * (2 + 2 * len(sizes) + 1) + "|")
    for phase in PHASES:
        t = [r["seconds"] for r in rows[phase]]
        m = [r["work_mb"] for r in rows[phase]]
        et = slope(sizes, t) if len(sizes) > 1 else float("nan")
        flat = max(m) < FLAT_MB
        em = slope(sizes, m) if len(sizes) > 1 and not flat else float("nan")
        ok &= bool(et <= 1.1 and (flat or em <= 1.1)) if len(sizes) > 1 else True
        rss = " | ".join(f"{r['rss_mb']:.0f} MB" for r in rows[phase])
        mem = f"flat (< {FLAT_MB:g} MB)" if flat else f"{em:.2f}"
        print(f"| {phase} | {' | '.join(f'{s:.3f} s' for s in t)} | {rss} | {et:.2f} | {mem} |")
    print(f"\n(RSS: the phase process's peak, its imports included: {', '.join(f'{p} {base[p]:.0f} MB' for p in PHASES)} "
          "doing no work; the memory exponent is fitted to the rise of RSS during the work)")
    largest = max(r["rss_mb"] for p in PHASES for r in rows[p] if r is rows[p][-1])
    floor_rss = largest <= 4096 if grid == "paper" else None
    print(f"floor: exponents <= 1.1 in every phase: {'yes' if ok else 'NO'}")
    print(f"floor: N={sizes[-1]} at the {grid} grid within 4 GB peak RSS: {largest:.0f} MB "
          f"{'' if floor_rss is None else ('yes' if floor_rss else 'NO')}")

    print("\nbefore and after, 40 subjects and fewer (load_split of a prepared split):")
    print("| subjects | data | BASELINE npz load | BASELINE peak RSS | store load | store peak RSS |")
    print("|---|---|---|---|---|---|")
    loads = {}
    for n in before:
        measure("old-save", n, shape, folder)
        old = measure("old-load", n, shape, folder)
        measure("save", n, shape, folder)
        new = measure("load", n, shape, folder)
        loads[n] = new
        print(f"| {n} | {n * np.prod(shape) * 4 / 1e6:.0f} MB | {old['seconds']:.2f} s | {old['rss_mb']:.0f} MB "
              f"| {new['seconds']:.4f} s | {new['rss_mb']:.0f} MB |", flush=True)
    if 40 in loads:
        r = loads[40]
        print(f"floor: 40-subject load within 0.5 s and 400 MB: {r['seconds']:.4f} s, {r['rss_mb']:.0f} MB "
              f"{'yes' if r['seconds'] <= 0.5 and r['rss_mb'] <= 400 else 'NO'}")
    return 0


# -- the cost table of --plan -----------------------------------------------------------------------
def costs(k: tuple[int, int], folder: Path, methods: list[str], presets: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    from uadbench.config import create_config
    from uadbench.data.dataset import DatasetSource
    from uadbench.data.pipeline import IMAGE_GRIDS
    from uadbench.evaluation.protocol import EvalVolume, evaluate_dataset
    from uadbench.grid.entries import MethodSpec
    from uadbench.grid.jobs import make_fit_job
    from uadbench.registry import DATASETS, METHODS
    from uadbench.run.cells import floor_evaluation
    from uadbench.run.maps import load_fitted, predict_volume
    from uadbench.run.plan import step_overrides, training_steps
    from uadbench.run.runner import run_fit
    from uadbench.run.splits import prepare_split

    class Bench(DatasetSource):
        splits = ("train", "val", "test")

        def subjects(self, split: str) -> list[str]:
            return [f"{split}-{i}" for i in range(8 if split == "train" else 2)]

        def load(self, split: str):
            shape = (48, 56, 48)  # 2 mm, cropped or padded to each grid by the pipeline
            vols = Synthetic(8 if split == "train" else 2, shape, lesion=False)
            return [vols[i] for i in range(len(vols))]

    DATASETS.register("bench-scale-synthetic", Bench)
    print(f"# measured on {machine()}, cpu, 1 torch thread; k = {k} training steps")
    rows = {}
    for preset in presets:
        grid_name, grid = preset, IMAGE_GRIDS[preset]  # each preset on the grid of its name
        for name in methods or METHODS.names():
            if name not in METHODS.names() or preset not in METHODS.get(name).presets:
                continue
            base = create_config(name, preset, {})
            seconds, steps = [], []
            for kk in k:
                overrides = step_overrides(base, kk)
                if name == "mhd":  # its own fit trains nothing; keep the cDDPM it reuses short
                    overrides = {"base_overrides": tuple(sorted(step_overrides(create_config("cddpm", preset, {}), 2).items()))}
                spec = MethodSpec(name, preset, tuple(sorted(overrides.items())))
                job = make_fit_job(spec, "bench-scale-synthetic", 0, 0, grid, {"threads": 1, "device": "cpu"})
                meta = run_fit(job, cache_dir=folder, data_root=None, device="cpu", progress=None, checkpoint_every=0)
                seconds.append(float(meta["own_train_seconds"]))
                steps.append(training_steps(job.config))
            if steps[1] > steps[0]:
                per_step = max((seconds[1] - seconds[0]) / (steps[1] - steps[0]), 0.0)
                fixed = max(seconds[0] - steps[0] * per_step, 0.0)
            else:
                per_step, fixed = 0.0, min(seconds)
            method = load_fitted(job, folder, "cpu")
            image = prepare_split("bench-scale-synthetic", "test", grid=grid, data_seed=0, cache_dir=folder, data_root=None)[0].image
            batch = grid.shape[2] if METHODS.get(name).whole_volume else 64
            predict = min(predict_volume(method, image, seed=0, batch_size=batch, device="cpu")[2] for _ in range(2))
            rows[(name, preset, grid_name)] = (per_step, fixed, predict)
            print(f"    ({name!r}, {preset!r}, {grid_name!r}): ({per_step:.4g}, {fixed:.3g}, {predict:.3g}),", flush=True)
    protocol = {}
    for grid_name, shape in GRIDS.items() if not methods else ():
        rng = np.random.default_rng(0)
        vols = Synthetic(6, shape)
        spacing = IMAGE_GRIDS[grid_name].spacing
        ev = [EvalVolume(f"s{i}", rng.random(shape, dtype=np.float32), vols[i].brain_mask, vols[i].lesion_mask, spacing)
              for i in range(6)]
        start = time.perf_counter()
        evaluate_dataset(ev[:2], lesion_val=ev[2:4], healthy_val=ev[4:], seed=0)
        floor_evaluation(ev[:2], lesion_val=ev[2:4], healthy_val=ev[4:], seed=0)
        protocol[grid_name] = (time.perf_counter() - start) / 6
    print(f"# protocol seconds per evaluated volume: {json.dumps({g: round(s, 4) for g, s in protocol.items()})}")
    return 0


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} cores{load}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_phase":
        phase, n, shape, folder, work = argv[1:6]
        result = run_phase(phase, int(n), tuple(int(s) for s in shape.split(",")), Path(folder), work == "1")  # type: ignore[arg-type]
        print(json.dumps(result))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", choices=["scale", "costs"], default="scale")
    p.add_argument("--sizes", default="50,200,800", help="subjects per cohort (default 50,200,800)")
    p.add_argument("--before", default="10,20,40", help="subjects for the npz baseline (default 10,20,40; '' skips it)")
    p.add_argument("--grid", choices=sorted(GRIDS), default="paper")
    p.add_argument("--steps", default="2,6", help="costs: the two step budgets k1,k2 (default 2,6)")
    p.add_argument("--methods", default="", help="costs: methods to measure (default: every registered one, and the protocol)")
    p.add_argument("--presets", default="smoke,cpu", help="costs: presets, each on the image grid of its name (default smoke,cpu)")
    p.add_argument("--dir", help="working folder (default: a temporary one, removed after)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="uadbench-scale-", dir=args.dir) as tmp:
        if args.what == "costs":
            k1, k2 = (int(s) for s in args.steps.split(","))
            return costs((k1, k2), Path(tmp), [m for m in args.methods.split(",") if m], args.presets.split(","))
        sizes = [int(s) for s in args.sizes.split(",") if s]
        before = [int(s) for s in args.before.split(",") if s]
        return scale(sorted(sizes), args.grid, before, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
