"""Training curves reach MLflow while a fit runs: the fit's live log, read by the grid's process."""

from __future__ import annotations

from types import SimpleNamespace

from uadbench.grid import parse_grid
from uadbench.run.live import LiveReader, LiveWriter, live_path, step_of
from uadbench.run.outcome import Outcome
from uadbench.run.tracking import Tracker

GRID = {"name": "live", "image_grid": "smoke", "train_dataset": "phantom-healthy-t2w",
        "methods": [{"name": "ae", "preset": "smoke"}], "datasets": [{"name": "phantom-tumour-t2w"}]}


def test_reader_returns_whole_lines_once(tmp_path):
    writer, reader = LiveWriter(live_path(tmp_path, "k")), LiveReader(tmp_path)
    history: list = []
    writer.metrics({"loss": 1.0}, 25, history)
    writer.progress("ae step 25/100 loss 1.0 (3 s)")
    with open(writer.path, "a") as f:
        f.write('{"msg": "half a li')  # a line still being written
    first = reader.read("k")
    assert [e.get("i") for e in first] == [0, None] and reader.read("k") == []
    with open(writer.path, "a") as f:
        f.write('ne"}\n')
    assert reader.read("k") == [{"msg": "half a line"}]
    assert history == [(25, {"loss": 1.0})] and step_of("ae step 25/100 loss 1.0") == (25, 100)


def test_metrics_of_a_running_fit_are_on_its_mlflow_run_before_it_ends(tmp_path, data_root):
    spec = parse_grid(GRID)
    (job,) = spec.fit_jobs()
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "uadbench-live", artifact_dir=tmp_path / "art")
    tracker.start_grid(spec, "test", tmp_path)
    outcome = Outcome(SimpleNamespace(), tracker, SimpleNamespace(), LiveReader(tmp_path), [job], None)
    writer, history = LiveWriter(live_path(tmp_path, job.key)), []
    for step in (25, 50):
        writer.metrics({"ae/loss": 1.0 / step}, step, history)
    outcome.poll()
    run_id = tracker.live_runs[job.key]
    run = tracker.client.get_run(run_id)
    assert run.info.status == "RUNNING"  # the fit is still training
    assert [m.step for m in tracker.client.get_metric_history(run_id, "train/loss")] == [25, 50]
    # the fit ends: one more row, not streamed yet, then its meta; no row is logged twice
    writer.metrics({"ae/loss": 0.01}, 75, history)
    meta = {"history": history, "train_seconds": 1.0, "num_parameters": 10, "cached": False}
    tracker.log_fit(job, meta, {0, 1})
    points = tracker.client.get_metric_history(run_id, "train/loss")  # the key every method's curve shares
    assert sorted(m.step for m in points) == [25, 50, 75]
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
    tracker.end_grid("FINISHED")


def test_a_restarted_log_longer_than_the_old_offset_is_read_from_its_start(tmp_path):
    """A fit killed and resumed writes a fresh log; when that log has already grown past the offset
    read from the killed one, the reader must not seek into the middle of one of its lines."""
    reader, history = LiveReader(tmp_path), []
    killed = LiveWriter(live_path(tmp_path, "k"))
    killed.progress("ae step 1/100")
    assert [e["msg"] for e in reader.read("k")] == ["ae step 1/100"]
    resumed = LiveWriter(live_path(tmp_path, "k"))  # the resumed fit: a new log at the same path
    for step in range(10):
        resumed.metrics({"loss": float(step)}, step, history)
    with open(resumed.path, "a") as f:
        f.write("not json\n[1, 2]\n{\"other\": 1}\n")  # foreign lines are skipped, not fatal
    resumed.progress("ae step 10/100")
    rows = reader.read("k")
    assert [r["i"] for r in rows if "metrics" in r] == list(range(10)) and rows[-1] == {"msg": "ae step 10/100"}
    assert reader.read("k") == []
