"""Benchmarks of the evaluation protocol against the straightforward scipy / sklearn version.

Run: ``.venv/bin/pytest benchmarks/test_bench_evaluation.py --benchmark-only -s``
(or ``tox -e bench``). Each benchmark times the harness's path with pytest-benchmark, times the
straightforward path (the test oracles, ``tests/oracles.py``) in the same run, checks both give the
same values and records the speed ratio in ``extra_info`` (printed with ``-s``).

Grid: the paper's 96×96×50 at 2 mm, a synthetic brain (ellipsoid, about 30 % of the volume) with
lesion blobs and a noisy residual map.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import ndimage

import oracles
from uadbench.evaluation.metrics import pooled_ranked_counts
from uadbench.evaluation.postprocess import PostprocessSettings, median_filter_3d, postprocess_map
from uadbench.evaluation.protocol import EvalVolume, evaluate_volume
from uadbench.evaluation.thresholds import bisection_threshold, exact_threshold

torch.set_num_threads(1)

SHAPE = (96, 96, 50)
SETTINGS = PostprocessSettings.for_spacing(2.0)
THRESHOLDS = {
    "val-bisection": 0.10,
    "val-exact": 0.11,
    "healthy-fpr@1%": 0.15,
    "healthy-fpr@5%": 0.12,
    "healthy-fpr@10%": 0.09,
}


def _volume(sid: str, rng: np.random.Generator) -> EvalVolume:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = (grid[0] / 0.85) ** 2 + (grid[1] / 0.75) ** 2 + (grid[2] / 0.9) ** 2 < 1
    lesion = np.zeros(SHAPE, bool)
    for _ in range(3):
        c = [rng.integers(n // 3, 2 * n // 3) for n in SHAPE]
        r = rng.integers(2, 7)
        idx = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
        lesion |= sum((g - ci) ** 2 for g, ci in zip(idx, c)) <= r**2
    lesion &= brain
    amap = (rng.random(SHAPE, dtype=np.float32) * 0.2 + lesion * 0.15) * brain
    return EvalVolume(sid, amap.astype(np.float32), brain, lesion, 2.0)


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _report(benchmark, name: str, straightforward_s: float) -> None:
    fast_s = benchmark.stats.stats.min
    ratio = straightforward_s / fast_s
    benchmark.extra_info.update(
        {"straightforward_s": straightforward_s, "fast_s": fast_s, "speedup": ratio}
    )
    print(f"\n{name}: fast {fast_s:.4f} s, straightforward {straightforward_s:.4f} s, x{ratio:.1f}")


@pytest.fixture(scope="module")
def volumes():
    rng = np.random.default_rng(0)
    return [_volume(f"b{i}", rng) for i in range(3)]


def test_bench_median_filter(benchmark, volumes):
    benchmark.group = "median filter 96x96x50"
    vol = volumes[0]
    masked = postprocess_map(vol.anomaly_map, vol.brain_mask, PostprocessSettings(median_size=1))
    result = benchmark.pedantic(median_filter_3d, args=(masked, 5), rounds=5, iterations=1)
    np.testing.assert_array_equal(result, ndimage.median_filter(masked, size=5))
    _report(benchmark, "median", _best_of(lambda: ndimage.median_filter(masked, size=5), 3))


def test_bench_per_volume_evaluation(benchmark, volumes):
    benchmark.group = "per-volume evaluation 96x96x50"

    def fast():
        return [evaluate_volume(v, THRESHOLDS, settings=SETTINGS).metrics for v in volumes]

    def straightforward():
        return [
            oracles.evaluate_volume(v.anomaly_map, v.brain_mask, v.lesion_mask, THRESHOLDS, SETTINGS)
            for v in volumes
        ]

    ours = benchmark.pedantic(fast, rounds=3, iterations=1)
    ref = straightforward()
    for o, r in zip(ours, ref):
        for key, value in r.items():
            assert o[key] == pytest.approx(value, abs=1e-9), key
    _report(benchmark, f"per-volume x{len(volumes)}", _best_of(straightforward, 2))
    assert benchmark.extra_info["speedup"] >= 3.0


@pytest.fixture(scope="module")
def validation_maps():
    rng = np.random.default_rng(1)
    base = _volume("v", rng)
    processed = postprocess_map(base.anomaly_map, base.brain_mask, SETTINGS)
    maps, labels = [], []
    for i in range(100):  # 100 distinct maps: perturbed copies of one post-processed map
        noise = rng.random(SHAPE, dtype=np.float32) * 0.01
        maps.append((processed + noise * (processed > 0)).astype(np.float32))
        labels.append(np.roll(base.lesion_mask, i % 7, axis=0))
    return maps, labels


def test_bench_threshold_search_100_volumes(benchmark, validation_maps):
    benchmark.group = "threshold search, 100 volumes"
    maps, labels = validation_maps

    def fast():
        counts = pooled_ranked_counts(zip(maps, labels))
        return bisection_threshold(counts), exact_threshold(counts)

    bis, ex = benchmark.pedantic(fast, rounds=2, iterations=1)
    assert benchmark.stats.stats.max < 10.0
    x = np.concatenate([m.ravel() for m in maps])
    y = np.concatenate([m.ravel() for m in labels])
    t = time.perf_counter()
    ref_dice, ref_point = oracles.greedy_bisection(x, y)
    straightforward_s = time.perf_counter() - t
    assert (bis.value, bis.score) == (ref_point, ref_dice)
    assert ex.score >= bis.score
    _report(benchmark, "bisection+exact vs straightforward bisection", straightforward_s)
