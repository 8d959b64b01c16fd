"""Training and inference speed of the diffusion methods, per precision, on any device.

    python benchmarks/diffusion_speed.py --device cuda                 # paper preset, 96x96, batch 32
    python benchmarks/diffusion_speed.py --device cpu --preset tiny    # what CI runs, in seconds

For ddpm, pddpm and cddpm and each precision (fp32, bf16, fp16) it prints: training samples/s,
the achieved TFLOP/s (FLOPs of one training step counted by torch's FlopCounterMode, times steps
per second) and its fraction of the device's peak (``--peak-tflops``, or a table of known cards),
peak memory, seconds to reconstruct one volume of the preset's grid (96x96x50 for ``paper``), and
how far the reconstructions of the same weights are from fp32's (mean absolute difference, in
[0, 1] intensity units). ``--json FILE`` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch

from uadbench import FitContext, create_method
from uadbench.data.slices import SliceDataset
from uadbench.training import Precision

# dense bf16/fp16 tensor-core peaks in TFLOP/s (vendor data sheets); fp32 runs are compared with the
# same figure, which is the ceiling a mixed-precision run could reach on the card
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}

PRESETS = {
    # method preset, slice shape, slices per volume, batch size
    "paper": ("paper", (96, 96), 50, 32),
    "tiny": ("smoke", (32, 32), 16, 4),
}


@dataclass
class Row:
    method: str
    precision: str
    device: str
    samples_per_s: float
    tflops: float
    peak_fraction: float | None
    peak_memory_gb: float
    seconds_per_volume: float
    recon_diff_vs_fp32: float


def device_peak(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def step_flops(method, batch: torch.Tensor, generator: torch.Generator, amp: Precision) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, amp.autocast():
        loss = method.model.loss(batch, generator)
    with counter:
        amp.backward(loss)
    method.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, preset: str, precision: str, device: torch.device, *, steps: int, reference: torch.Tensor | None = None,
            weights: dict | None = None) -> tuple[Row, torch.Tensor, dict]:
    """One method at one precision: training speed, FLOPs, memory, reconstruction time and agreement."""
    method_preset, shape, depth, batch_size = PRESETS[preset]
    torch.manual_seed(0)
    method = create_method(name, method_preset, image_shape=shape, batch_size=batch_size, steps=steps)
    method.to(device)
    gen = torch.Generator().manual_seed(0)
    data = SliceDataset(torch.rand(max(batch_size, 4), *shape, depth))
    amp = Precision(precision, device)
    flops = step_flops(method, data.epoch(gen)[:batch_size].to(device), gen, amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ctx = FitContext(device=device, generator=gen, precision=precision)
    method.fit(data, None, FitContext(device=device, generator=torch.Generator().manual_seed(1), precision=precision, max_steps=2))  # warm-up
    _sync(device)
    start = time.perf_counter()
    method.fit(data, None, ctx)
    _sync(device)
    seconds = time.perf_counter() - start
    volume = torch.rand(depth, 1, *shape, device=device)
    if weights is None:  # the fp32 run: its trained weights are the ones every precision reconstructs with
        weights = copy.deepcopy(method.state_dict())
    method.load_state_dict(weights)
    method.to(device)
    for module in method.modules().values():
        module.eval()
    dtype = Precision.DTYPES[precision]
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        _sync(device)
        t0 = time.perf_counter()
        recon = torch.cat([method.reconstruct(volume[i : i + 64], generator=torch.Generator().manual_seed(2)) for i in range(0, depth, 64)])
        _sync(device)
        per_volume = time.perf_counter() - t0
    recon = recon.float().cpu()
    memory = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    peak = device_peak(device, None)
    tflops = flops * steps / seconds / 1e12
    row = Row(name, precision, str(device), steps * batch_size / seconds, tflops, tflops / peak if peak else None, memory,
              per_volume, float((recon - reference).abs().mean()) if reference is not None else 0.0)
    return row, recon, weights


def run(device: str, preset: str, precisions: list[str], methods: list[str], steps: int, peak: float | None = None) -> list[Row]:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda but no CUDA device is available")
    rows = []
    for name in methods:
        reference, weights = None, None
        for precision in precisions:
            row, recon, w = measure(name, preset, precision, dev, steps=steps, reference=reference, weights=weights)
            if peak:
                row.peak_fraction = row.tflops / peak
            if precision == "fp32":
                reference, weights = recon, w
            rows.append(row)
    return rows


def format_rows(rows: list[Row]) -> str:
    head = f"{'method':8} {'prec':5} {'samples/s':>10} {'TFLOP/s':>9} {'of peak':>8} {'mem GB':>7} {'s/volume':>9} {'|x-x32|':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        frac = f"{r.peak_fraction * 100:.1f} %" if r.peak_fraction is not None else "–"
        lines.append(f"{r.method:8} {r.precision:5} {r.samples_per_s:10.1f} {r.tflops:9.3f} {frac:>8} {r.peak_memory_gb:7.2f} "
                     f"{r.seconds_per_volume:9.3f} {r.recon_diff_vs_fp32:9.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--methods", nargs="+", default=["ddpm", "pddpm", "cddpm"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s (default: a table of known cards)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    p.add_argument("--json", help="write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "fp32" not in args.precision:
        args.precision = ["fp32", *args.precision]  # the reference for the agreement column
    rows = run(args.device, args.preset, args.precision, args.methods, args.steps, args.peak_tflops)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"{name}; preset {args.preset}; {args.steps} training steps per row")
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)
    return 0 if all(math.isfinite(r.samples_per_s) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
