"""A metric from another package is computed in every cell: the protocol, the records, the tables.

``plugins/uadbench_extra_metric`` is a throwaway package of one module. Each test installs it the
way pip would, as far as discovery goes: a ``.dist-info`` folder with an ``entry_points.txt`` line
in the ``uadbench.metrics`` group, on ``sys.path``; the registry then finds it through
``importlib.metadata``, never through an import by name.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from synthetic import brainlike_volumes
from uadbench.errors import UadbenchError
from uadbench.evaluation.catalogue import VolumeMetric, metric_info, volume_metric, volume_metrics
from uadbench.evaluation.detection import DETECTION_METRICS
from uadbench.evaluation.metrics import METRICS_VERSION, metrics_version
from uadbench.evaluation.postprocess import PostprocessSettings, postprocess_map
from uadbench.evaluation.protocol import EvalVolume, evaluate_dataset
from uadbench.registry import METRICS

PLUGINS = Path(__file__).parent / "plugins"
NAMES = ("extra_brain_ml", "extra_lesion_score")
SHAPE = (24, 24, 10)


@contextlib.contextmanager
def installed(tmp_path: Path) -> Iterator[None]:
    """The throwaway package installed (a distribution with its entry point) for the block."""
    site = tmp_path / "site"
    dist = site / "uadbench_extra_metric-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uadbench-extra-metric\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[uadbench.metrics]\nextra = uadbench_extra_metric\n")
    paths = [str(site), str(PLUGINS)]
    sys.path[:0] = paths
    METRICS.refresh()
    try:
        yield
    finally:
        for path in paths:
            sys.path.remove(path)
        for name in NAMES:
            METRICS.unregister(name)
        sys.modules.pop("uadbench_extra_metric", None)
        METRICS.refresh()


def _split(prefix: str, n: int, seed: int, lesion: bool) -> list[EvalVolume]:
    vols, brains, lesions = brainlike_volumes(n, shape=SHAPE, seed=seed, lesion=lesion)
    rng = np.random.default_rng(seed)
    return [EvalVolume(f"{prefix}{i}", (np.abs(v - 0.5) + 0.3 * rng.random(SHAPE)).astype(np.float32) * b, b,
                       les if lesion else None, 2.5, image=v)
            for i, (v, b, les) in enumerate(zip(vols, brains, lesions))]


@pytest.fixture(scope="module")
def splits():
    return {"test": _split("t", 4, 1, True) + _split("h", 3, 2, False), "lesion_val": _split("lv", 3, 3, True),
            "healthy_val": _split("hv", 2, 4, False)}


def _evaluate(splits):
    return evaluate_dataset(splits["test"], lesion_val=splits["lesion_val"], healthy_val=splits["healthy_val"],
                            n_bootstrap=50).to_dict()


def test_the_package_is_found_through_its_entry_point_only(tmp_path):
    assert not set(NAMES) & set(METRICS.names())
    with pytest.raises(ImportError):
        __import__("uadbench_extra_metric")
    with installed(tmp_path):
        assert "extra" in {ep.name for ep in importlib.metadata.entry_points(group="uadbench.metrics")}
        assert set(NAMES) <= set(METRICS.names()) and not METRICS.load_errors()
        assert [m.name for m in volume_metrics()] == list(NAMES)
        info = metric_info("extra_lesion_score")
        assert isinstance(info, VolumeMetric) and info.direction == "higher" and info.description.startswith("Mean post-processed")
        assert metric_info("extra_brain_ml").direction == "signed"
        # the cache keys see the metric and its version
        assert metrics_version() == f"{METRICS_VERSION}+extra_brain_ml=2,extra_lesion_score=1"
    assert metrics_version() == METRICS_VERSION and not set(NAMES) & set(METRICS.names())


def test_evaluate_dataset_computes_a_registered_metric_and_changes_nothing_else(tmp_path, splits):
    before = _evaluate(splits)
    with installed(tmp_path):
        after = _evaluate(splits)
    settings = PostprocessSettings.for_spacing(2.5)
    expected = {}
    for v in splits["test"]:
        processed = postprocess_map(v.anomaly_map, v.brain_mask, settings)
        brain_ml = v.brain_mask.sum() * 2.5**3 / 1000
        assert after["per_volume"][v.subject_id]["extra_brain_ml"] == pytest.approx(brain_ml, rel=1e-12)
        if v.lesion_mask is not None:
            expected[v.subject_id] = float(np.mean(processed[v.lesion_mask], dtype=np.float64))
            assert after["per_volume"][v.subject_id]["extra_lesion_score"] == pytest.approx(expected[v.subject_id], rel=1e-12)
        else:  # undefined (NaN): no value, and out of the mean
            assert "extra_lesion_score" not in after["per_volume"][v.subject_id]
    assert after["aggregates"]["extra_lesion_score"] == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    assert after["counts"]["extra_lesion_score"] == 4 and after["counts"]["extra_brain_ml"] == 7
    lo, hi = after["confidence_intervals"]["extra_lesion_score"]
    assert lo <= after["aggregates"]["extra_lesion_score"] <= hi
    # every other number is the one computed without the package
    for part in ("aggregates", "confidence_intervals", "counts"):
        assert {k: v for k, v in after[part].items() if k not in NAMES} == before[part]
    for sid, values in after["per_volume"].items():
        assert {k: v for k, v in values.items() if k not in NAMES} == before["per_volume"][sid]
    assert after["thresholds"] == before["thresholds"]


@pytest.mark.slow
def test_a_grid_run_records_the_metric_and_the_tables_have_it(tmp_path, data_root):
    from uadbench import report
    from uadbench.grid import parse_grid
    from uadbench.run.runner import run_grid

    grid = {"name": "extra", "image_grid": "smoke", "seeds": [0], "train_dataset": "phantom-healthy-t2w",
            "methods": [{"name": "thresh", "preset": "smoke"}], "datasets": [{"name": "phantom-tumour-t2w"}]}
    keys_without = [j.key for j in parse_grid(dict(grid)).eval_jobs()]
    with installed(tmp_path):
        spec = parse_grid(dict(grid))
        assert not {j.key for j in spec.eval_jobs()} & set(keys_without), "a cell cached without the metric must be evaluated again"
        (record,) = run_grid(spec, out_dir=tmp_path / "run", track=False, progress=lambda m: None).records
    assert {"extra_lesion_score", "extra_brain_ml"} <= set(record.metrics)
    lesioned = [sid for sid, values in record.per_volume.items() if "dice@val-bisection" in values]
    assert lesioned and all("extra_lesion_score" in record.per_volume[sid] for sid in lesioned)
    assert record.metrics["extra_lesion_score"] == pytest.approx(np.mean([record.per_volume[s]["extra_lesion_score"] for s in lesioned]))
    assert "extra_lesion_score=1" in record.versions["components"]["metrics"]
    assert "extra_lesion_score" in record.floor["metrics"]  # the floor is the same protocol
    assert set(DETECTION_METRICS) <= set(record.metrics) & set(record.confidence_intervals)  # and so are the detection metrics
    frame = report.tidy_frame([record])
    rows = frame[(frame["metric"] == "extra_lesion_score") & (frame["kind"] == "method")]
    assert set(rows["level"]) == {"cell", "subject"} and len(rows[rows["level"] == "subject"]) == len(lesioned)


def _register(name: str, fn) -> None:
    volume_metric(name)(fn)


@pytest.mark.parametrize("fn, message", [
    (lambda p, les, b, s: "high", "returned str on volume 't0'; a volume metric returns a float"),
    (lambda p, les, b, s: 1 / 0, "failed on volume 't0': ZeroDivisionError"),
    (lambda p, les, b, s: p.fill(0.0), "failed on volume 't0': ValueError"),  # the arrays are read-only
])
def test_a_broken_metric_is_named_with_the_volume(splits, fn, message):
    try:
        _register("test_broken", fn)
        with pytest.raises(UadbenchError, match=f"metric 'test_broken' {message}"):
            _evaluate(splits)
    finally:
        METRICS.unregister("test_broken")


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "dice@mine", "compute": math.fabs}, "may not contain '@'"),
    ({"name": "detection_rate_mine", "compute": math.fabs}, "may not contain '@' nor start with"),
    ({"name": "mine", "compute": None}, "compute must be a function"),
    ({"name": "mine", "compute": math.fabs, "direction": "up"}, "valid: higher, lower, signed"),
    ({"name": "mine", "compute": math.fabs, "version": ""}, "version must be a non-empty string"),
])
def test_a_volume_metric_is_refused_when_declared_wrongly(kwargs, message):
    with pytest.raises(UadbenchError, match=message):
        VolumeMetric(description="d", **kwargs)


def test_a_built_in_name_cannot_be_taken():
    with pytest.raises(UadbenchError, match="'auprc' is already registered"):
        volume_metric("auprc")(lambda p, les, b, s: 0.0)
