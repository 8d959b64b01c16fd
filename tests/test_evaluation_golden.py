"""The protocol's numbers stay put: a fixed input against the values the protocol gave before.

``data/evaluation_golden.json`` holds the full result (aggregates, per-volume values, confidence
intervals, counts, thresholds) of :func:`evaluate_dataset` and :func:`evaluate_crossfit` on the
synthetic volumes below, written by the protocol of ``PROTOCOL_VERSION`` 1 / ``METRICS_VERSION`` 1
before the detection metrics were added. Every number it holds must come out again; the only keys
a result may add are the detection metrics and the metrics registered by other packages. Rewrite the
file (``python tests/test_evaluation_golden.py --write``) only with a change that is meant to
change a number, and bump the version that says so.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from uadbench.evaluation.catalogue import volume_metrics
from uadbench.evaluation.detection import DETECTION_METRICS
from uadbench.evaluation.protocol import EvalVolume, evaluate_crossfit, evaluate_dataset

GOLDEN = Path(__file__).parent / "data" / "evaluation_golden.json"
SHAPE = (24, 24, 12)


def _volume(sid: str, rng: np.random.Generator, lesion: bool, recon: bool) -> EvalVolume:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = sum((g / 0.85) ** 2 for g in grid) < 1.0
    les = np.zeros(SHAPE, dtype=bool)
    if lesion:
        idx = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
        for _ in range(int(rng.integers(1, 3))):
            centre = [int(rng.integers(n // 3, 2 * n // 3)) for n in SHAPE]
            radius = int(rng.integers(2, 4))
            les |= sum((g - c) ** 2 for g, c in zip(idx, centre)) <= radius**2
        les &= brain
    amap = ((rng.random(SHAPE) * 0.2 + les * rng.uniform(0.05, 0.4)) * brain).astype(np.float32)
    image = reconstruction = None
    if recon:
        image = (rng.random(SHAPE) * brain).astype(np.float32)
        reconstruction = np.clip(image + amap * rng.choice([-1, 1], size=SHAPE), 0, 1).astype(np.float32)
        amap = np.abs(image - reconstruction)
    return EvalVolume(sid, amap, brain, les if lesion else None, 2.0, image=image, reconstruction=reconstruction)


def golden_inputs() -> dict[str, list[EvalVolume]]:
    rng = np.random.default_rng(20240501)
    return {
        "test": [_volume(f"t{i}", rng, True, True) for i in range(4)] + [_volume(f"h{i}", rng, False, True) for i in range(3)],
        "lesion_val": [_volume(f"lv{i}", rng, True, False) for i in range(3)],
        "healthy_val": [_volume(f"hv{i}", rng, False, False) for i in range(3)],
    }


def golden_results() -> dict[str, dict]:
    s = golden_inputs()
    return {
        "dataset": evaluate_dataset(s["test"], lesion_val=s["lesion_val"], healthy_val=s["healthy_val"], n_bootstrap=50,
                                    seed=3).to_dict(),
        "crossfit": evaluate_crossfit(s["test"] + s["lesion_val"], k=3, healthy_val=s["healthy_val"], n_bootstrap=50).to_dict(),
    }


def _same(new, old, where: str) -> None:
    """Every value of ``old`` is in ``new``, equal (numbers to the last few bits)."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for key, value in old.items():
            assert key in new, f"{where}.{key} is gone"
            _same(new[key], value, f"{where}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(old, float):
        assert isinstance(new, (int, float)) and math.isclose(new, old, rel_tol=1e-12, abs_tol=1e-15), f"{where}: {new} != {old}"
    else:
        assert new == old, f"{where}: {new!r} != {old!r}"


def test_the_protocol_gives_the_numbers_it_gave_before():
    old = json.loads(GOLDEN.read_text())
    new = golden_results()
    _same(new, old, "result")
    assert old["dataset"]["aggregates"]["auprc"] > 0 and len(old["dataset"]["per_volume"]) == 7  # the file holds numbers
    # what was added since: the dataset-level detection metrics and the metrics of other packages
    registered = {m.name for m in volume_metrics()}
    for kind in ("dataset", "crossfit"):
        for part in ("aggregates", "confidence_intervals", "counts"):
            assert set(new[kind][part]) - set(old[kind][part]) == set(DETECTION_METRICS) | registered, (kind, part)
        for sid, values in new[kind]["per_volume"].items():
            assert set(values) - set(old[kind]["per_volume"][sid]) <= registered


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_text(json.dumps(golden_results(), indent=1, sort_keys=True) + "\n")
