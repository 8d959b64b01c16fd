"""The MLflow schema a researcher compares runs with: scalar params, thresholds as metrics with
their provenance as a file, training curves under shared keys by optimisation step, datasets as
inputs, the parent run's tables, the experiment's kind and saved comparison view (also given to
stores written before it), and the address ``uadbench ui`` prints."""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import pytest
from test_report import make_records

from uadbench.cli import main
from uadbench.config import config_to_dict, flatten, stable_hash
from uadbench.grid import parse_grid
from uadbench.records import records_text
from uadbench.run import tracking, ui
from uadbench.run.tracking import Tracker, comparison_view, curve_key, metric_key, prepare_views

GRID = {"name": "schema", "image_grid": "smoke", "train_dataset": "phantom-healthy-t2w",
        "methods": [{"name": "ae", "preset": "smoke"}], "datasets": [{"name": "phantom-tumour-t2w"}]}
THRESHOLDS = {
    "val-bisection": {"protocol": "val-bisection", "value": 0.58, "source": "phantom-tumour-t2w/val (3 volumes)", "n_volumes": 3,
                      "details": {"val_pooled_dice": 0.47}},
    "healthy-fpr@5%": {"protocol": "healthy-fpr@5%", "value": 0.61, "source": "phantom-healthy-t2w/val (3 volumes)", "n_volumes": 3,
                       "details": {}},
    "oracle": {"protocol": "oracle", "value": None, "source": "per test volume (upper bound)", "n_volumes": 4, "details": {}},
}


@pytest.mark.parametrize("key, method, shared", [
    ("ae/loss", "ae", "train/loss"),
    ("ae/samples_per_s", "ae", "train/samples_per_s"),
    ("ae/val_loss", "ae", "val/loss"),
    ("vae/kl", "vae", "train/kl"),
    ("vae/val_kl", "vae", "val/kl"),
    ("fanogan_encoder/loss", "fanogan", "train/loss"),  # a method's own second stage
    ("fanogan/critic_loss", "fanogan", "train/critic_loss"),
    ("pretrain/loss", "cddpm", "train/pretrain/loss"),  # another stage keeps its name
    ("loss", "ae", "train/loss"),
    ("val/loss", "ae", "val/loss"),
    ("train/loss", "dae", "train/loss"),
])
def test_training_curves_share_one_key_per_quantity(key, method, shared):
    assert curve_key(key, method) == shared


@pytest.fixture
def logged(tmp_path, data_root):
    """One fit and one cell of a grid logged to a fresh store, then the grid's outputs."""
    spec = parse_grid(GRID)
    (job,) = spec.fit_jobs()
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "uadbench-schema", artifact_dir=tmp_path / "art")
    tracker.start_grid(spec, "test", tmp_path)
    history = [(25, {"ae/loss": 0.5, "ae/samples_per_s": 100.0}), (50, {"ae/loss": 0.25, "ae/samples_per_s": 110.0}),
               (0, {"ae/val_loss": 0.3})]  # the validation loss once training ended, as the methods log it
    tracker.log_fit(job, {"history": history, "train_seconds": 2.0, "num_parameters": 10, "cached": False})
    rec = dataclasses.replace(make_records(seeds=(0,))[0], method="ae", label="ae", dataset="phantom-tumour-t2w", shift="gamma",
                              severity=1.5, fit_key=job.key, thresholds=THRESHOLDS, image_grid=spec.image_grid.to_dict(),
                              train_dataset="phantom-healthy-t2w")
    tracker.log_cell(rec, cached=False)
    results = tmp_path / "results.jsonl"
    results.write_text(records_text([rec]))
    tracker.log_outputs(results)
    tracker.end_grid("FINISHED")
    runs = {r.data.tags.get("uadbench.kind", "parent"): r for r in tracker.client.search_runs([tracker.experiment_id])}
    return spec, job, rec, tracker, runs


def test_a_fit_run_has_scalar_params_shared_curves_and_its_training_data(logged):
    spec, job, _, tracker, runs = logged
    fit = runs["fit"]
    assert fit.info.run_name == "ae · fit · s0"
    expected = {k: str(v) for k, v in flatten(config_to_dict(job.config), "config.").items()}
    assert {k: v for k, v in fit.data.params.items() if k.startswith("config.")} == expected
    assert {k: fit.data.params[k] for k in ("method", "label", "preset", "seed", "image_grid")} == \
        {"method": "ae", "label": "ae", "preset": "smoke", "seed": "0", "image_grid": "smoke"}
    history = lambda key: [(m.step, m.value) for m in tracker.client.get_metric_history(fit.info.run_id, key)]  # noqa: E731
    assert history("train/loss") == [(25, 0.5), (50, 0.25)]
    assert history("train/samples_per_s") == [(25, 100.0), (50, 110.0)]
    assert history("val/loss") == [(50, 0.3)]  # at the last optimisation step, not at 0
    assert "ae/loss" not in fit.data.metrics
    (data,) = fit.inputs.dataset_inputs
    assert data.dataset.name == "phantom-healthy-t2w" and {t.key: t.value for t in data.tags} == {"mlflow.data.context": "train"}
    assert data.dataset.digest == stable_hash(spec.data_term("phantom-healthy-t2w")["fingerprint"], 16)
    assert json.loads(data.dataset.profile)["fingerprint"] == spec.data_term("phantom-healthy-t2w")["fingerprint"]


def test_a_cell_run_differs_from_others_by_its_params_and_has_thresholds_as_metrics(logged, tmp_path):
    _, job, rec, tracker, runs = logged
    cell = runs["eval"]
    assert cell.info.run_name == "ae · phantom-tumour-t2w · gamma@1.5 · s0"
    assert {k: cell.data.params[k] for k in ("method", "label", "dataset", "split", "shift", "severity", "seed", "image_grid")} == {
        "method": "ae", "label": "ae", "dataset": "phantom-tumour-t2w", "split": "test", "shift": "gamma", "severity": "1.5",
        "seed": "0", "image_grid": "smoke"}
    assert cell.data.params["config.latent_dim"] == str(job.config.latent_dim)  # the fit's config, on every cell
    assert not any(v.startswith("{") for v in cell.data.params.values())  # no JSON blobs
    assert cell.data.metrics["threshold.val-bisection"] == 0.58
    assert cell.data.metrics[metric_key("threshold.healthy-fpr@5%")] == 0.61
    assert "threshold.oracle" not in cell.data.metrics  # no value: no metric
    assert cell.data.metrics["auprc"] == pytest.approx(rec.metrics["auprc"])
    where = tracker.client.download_artifacts(cell.info.run_id, "thresholds.json", str(tmp_path))
    assert json.loads(open(where).read()) == THRESHOLDS
    (data,) = cell.inputs.dataset_inputs
    assert data.dataset.name == "phantom-tumour-t2w" and data.tags[0].value == "test"


def test_the_parent_run_holds_the_leaderboard_and_comparison_tables(logged, tmp_path):
    _, _, rec, tracker, runs = logged
    parent = runs["parent"]
    names = {f.path for f in tracker.client.list_artifacts(parent.info.run_id)}
    assert {"results.jsonl", "leaderboard.html", "comparison.json"} <= names
    html = open(tracker.client.download_artifacts(parent.info.run_id, "leaderboard.html", str(tmp_path))).read()
    assert html.startswith("<!DOCTYPE html>") and "ae" in html
    table = json.loads(open(tracker.client.download_artifacts(parent.info.run_id, "comparison.json", str(tmp_path))).read())
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["method"] == "ae" and row["shift"] == "gamma@1.5" and row["auprc"] == pytest.approx(rec.metrics["auprc"])
    assert parent.data.metrics == {"cells": 1.0, "fits": 1.0}


def test_the_experiment_is_for_model_training_with_a_view_of_the_latest_grid(logged):
    _, _, _, tracker, runs = logged
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags[tracking.VIEW_TAG])
    assert view == comparison_view(runs["parent"].info.run_id)
    # the view's filter is a valid MLflow search that finds exactly the grid's cells
    found = tracker.client.search_runs([tracker.experiment_id], filter_string=view["searchFilter"])
    assert [r.info.run_id for r in found] == [runs["eval"].info.run_id]
    assert {"metrics.`auprc`", "metrics.`dice.at.val-bisection`", "tags.`method`", "tags.`dataset`", "tags.`shift`"} <= set(
        view["selectedColumns"])


def test_a_store_written_before_the_view_gets_it_and_the_model_training_kind(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    ids = {}
    for name in ("uadbench-older", "uadbench-newer"):  # as earlier versions wrote them: no tags on the experiment
        ids[name] = client.create_experiment(name)
        parent = client.create_run(ids[name], tags={"uadbench.grid": name}).info.run_id
        client.create_run(ids[name], tags={"mlflow.parentRunId": parent, "uadbench.kind": "eval", "method": "ae"})
    other = client.create_experiment("someone-else")
    assert prepare_views(uri) == [("uadbench-newer", ids["uadbench-newer"]), ("uadbench-older", ids["uadbench-older"])]
    for eid in ids.values():
        tags = client.get_experiment(eid).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        view = json.loads(tags[tracking.VIEW_TAG])
        assert len(client.search_runs([eid], filter_string=view["searchFilter"])) == 1
    assert "mlflow.experimentKind" not in client.get_experiment(other).tags  # another experiment is left alone


def test_ui_prints_the_address_of_the_comparison_and_opens_it(tmp_path, logged, monkeypatch, capsys):
    _, _, _, tracker, _ = logged
    calls, opened = [], []
    monkeypatch.setattr(ui, "serve_process_group", lambda cmd, env, **kw: calls.append(cmd) or 0)
    monkeypatch.setattr(ui, "open_when_ready", lambda base, address: opened.append((base, address)))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert main(["ui", "--run-dir", str(tmp_path), "--port", str(free), "--open"]) == 0
    out = capsys.readouterr().out.splitlines()
    address = (f"http://127.0.0.1:{free}/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning"
               "&compareRunsMode=TABLE&viewStateShareKey=uadbench-comparison")
    assert out[1] == f"compare the methods of uadbench-schema: {address}"
    assert opened == [(f"http://127.0.0.1:{free}", address)] and len(calls) == 1


@pytest.mark.parametrize("host, url", [("127.0.0.1", "http://127.0.0.1:5000"), ("0.0.0.0", "http://127.0.0.1:5000"),
                                       ("::", "http://[::1]:5000"), ("localhost", "http://localhost:5000")])
def test_the_address_of_a_server(host, url):
    assert ui.base_url(host, 5000) == url


def test_system_metrics_are_off_unless_switched_on(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    assert not tracking.system_metrics_wanted()
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    assert tracking.system_metrics_wanted()


def test_system_metrics_on_the_grids_run_when_switched_on(tmp_path, data_root, monkeypatch):
    pytest.importorskip("psutil", reason="MLflow's system metrics read the machine with psutil")
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setattr(tracking, "SYSTEM_METRICS_INTERVAL_S", 0.2)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "uadbench-system", artifact_dir=tmp_path / "art")
    tracker.start_grid(parse_grid(GRID), "test", tmp_path)
    deadline = time.time() + 60
    while not any(k.startswith("system/") for k in tracker.client.get_run(tracker.parent_id).data.metrics):
        assert time.time() < deadline, "no system metric reached the grid's run within 60 s"
        time.sleep(0.2)
    tracker.end_grid("FINISHED")
    metrics = tracker.client.get_run(tracker.parent_id).data.metrics
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100 and metrics["system/system_memory_usage_megabytes"] > 0
    assert not tracker._monitors  # every monitor ended with the grid


def test_without_psutil_system_metrics_are_one_warning(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setitem(sys.modules, "mlflow.system_metrics.system_metrics_monitor", None)  # as if psutil were missing
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "uadbench-system", artifact_dir=tmp_path / "art")
    tracker.start_grid(parse_grid(GRID), "test", tmp_path)
    tracker.end_grid("FINISHED")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uadbench: warning: no system metrics:") and "pip install psutil" in err[0]
    assert tracker.client.get_run(tracker.parent_id).info.status == "FINISHED"
