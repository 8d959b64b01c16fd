"""MLflow tracking: the only module that imports mlflow, and the owner of the tag and param schema.

One experiment per grid (``uadbench-<grid name>``, tagged ``mlflow.experimentKind =
custom_model_development`` so the UI opens it in model-training mode), one parent run per
invocation, a child run per fit and per evaluation cell. The schema, in one place:

- parent run (``<grid>-<time>``): tags ``uadbench.grid``, ``uadbench.spec_hash``; params grid,
  spec_hash, image_grid, seeds, train_dataset, executor; at its end the artifacts
  ``results.jsonl``, ``leaderboard.md``, ``leaderboard.html`` (the edition's tables, rendered by
  the UI) and ``comparison.json`` (one row per cell: method, dataset, shift, seed, AUPRC, Dice@val;
  MLflow renders it as a table), and the metrics ``cells`` and ``fits``;
- fit run (``ae · fit · s0``): tags ``uadbench.kind=fit``, method, label, preset, seed,
  config_hash, fit_key, cached; scalar params method, label, preset, seed, train_dataset,
  image_grid and the flattened config (``config.*``); the training dataset as an MLflow input;
  metrics: the training curves under shared keys (:func:`curve_key`: ``train/loss``,
  ``train/samples_per_s``, ``val/loss``, method extras ``train/<name>``) by optimisation step,
  train_seconds, num_parameters; artifact ``config.json`` (method, preset, overrides, the full
  config, precision, seed, training data, image grid);
- cell run (``ae · phantom-tumour-t2w · gamma@1.5 · s0``): tags ``uadbench.kind=eval``, method,
  label, dataset, split, shift, severity, seed, config_hash, fit_key, eval_key, spec_hash, cached;
  scalar params method, label, preset, dataset, split, val_split, shift, severity, seed,
  train_dataset, image_grid and the fit's ``config.*``; the evaluation dataset as an MLflow input
  (context: the split); metrics: the cell's metrics, ``cost.*`` and each threshold's value
  (``threshold.<protocol>``); artifact ``thresholds.json`` (each threshold's provenance); with
  ``log_examples`` (``uadbench run --log-examples``) only, artifacts under ``example/``: the example
  test volume's anomaly map, image, reconstruction and masks (NIfTI) and its panel ``panel.png``
  (input | reconstruction | map | ground truth).

With ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true`` (and ``psutil``), the parent run and each fit run
that streams its curves also log the machine's CPU, memory and GPU use under ``system/``.

The experiment also holds a saved view of the runs page (:func:`comparison_view`, an experiment tag
``mlflow.sharedViewState.<key>``): the latest invocation's evaluation runs, one row per cell, with
method, dataset, shift, severity, seed, AUPRC and Dice@val as columns; :func:`comparison_address`
is the address that opens it.

The default store is ``sqlite:///<run dir>/mlflow.db`` with artifacts under
``<run dir>/mlartifacts``; any tracking URI MLflow accepts (an ``http://127.0.0.1:5000`` server,
say) works too. :class:`NullTracker` stands in when tracking is off.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uadbench.config import config_to_dict, flatten
from uadbench.errors import UadbenchError
from uadbench.records import ResultRecord
from uadbench.run import layout

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_INVALID = re.compile(r"[^\w./\- :]")

EXPERIMENT_KIND = "custom_model_development"  # the value of ``mlflow.experimentKind``: model training, not GenAI
VIEW_KEY = "uadbench-comparison"  # the saved view's share key (experiment tag ``mlflow.sharedViewState.<key>``)
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_METRICS = ("auprc", "dice@val-bisection")  # the comparison's metric columns, as the records name them
SYSTEM_METRICS_INTERVAL_S = 5.0  # seconds between two samples of the system metrics
VIEW_TAGS = ("method", "dataset", "shift", "severity", "seed")  # its identifying columns (tags: old stores have them too)


def metric_key(name: str) -> str:
    """An MLflow-safe metric name: 'dice@healthy-fpr@5%' -> 'dice.at.healthy-fpr.at.5pct'."""
    return _INVALID.sub("_", name.replace("@", ".at.").replace("%", "pct"))


_URI_PLAIN = re.compile(r"[^A-Za-z0-9/._~+,=@:-]")


_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|access_token|secret|key|api_key)=)[^&#]*")


def redact_uri(uri: str) -> str:
    """``uri`` with its credentials replaced by ``***``: the password of ``user:password@host`` and
    secret query parameters (``?token=...``). For what is printed, logged or put on a command line."""
    from urllib.parse import urlsplit, urlunsplit

    out = _SECRET_QUERY.sub(r"\1***", uri)
    try:
        parts = urlsplit(out)
    except ValueError:
        return out
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        out = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return out


def default_tracking_uri(run_dir: str | os.PathLike) -> str:
    """``sqlite:///<run dir>/mlflow.db``, read right whatever characters the path holds.

    SQLAlchemy takes what follows a ``?`` as query parameters and percent-decodes the path, while
    MLflow creates the parent folder of the undecoded path. So the path stays plain up to the last
    folder before its first unusual character (space, ``?``, ``#``, ``%``, non-ASCII, ...), and the
    rest is percent-encoded, ``/`` included: the folder MLflow creates is a real ancestor of the run
    directory, and SQLAlchemy decodes the whole path."""
    from urllib.parse import quote

    path = str(layout.mlflow_db(Path(run_dir).resolve()))
    unusual = _URI_PLAIN.search(path)
    if unusual is None:
        return f"sqlite:///{path}"
    cut = path.rfind("/", 0, unusual.start()) + 1
    return f"sqlite:///{path[:cut]}{quote(path[cut:], safe='')}"


def system_metrics_wanted() -> bool:
    """Whether runs log system metrics (CPU, memory, GPU where MLflow can read it): MLflow's own
    switch, ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true``, needs ``psutil``. The grid's parent run
    then holds them for the whole invocation, and each fit run that streams its curves (``--workers
    2`` or a cluster) for the time it trains."""
    return os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").strip().lower() in ("1", "true")


def curve_key(key: str, method: str) -> str:
    """The shared MLflow key of a training-curve value a method logged, so that two methods' curves
    share a chart: ``<stage>/loss`` -> ``train/loss``, ``<stage>/samples_per_s`` ->
    ``train/samples_per_s``, ``<stage>/val_loss`` -> ``val/loss``, ``<stage>/val_<x>`` ->
    ``val/<x>``, any other ``<stage>/<x>`` -> ``train/<x>``. The stage is the method's own
    (``ae``, ``cddpm``) or one of its own sub-stages (``fanogan_encoder``); another stage (cDDPM's
    ``pretrain``) keeps its name: ``train/pretrain/loss``. Keys already under ``train/``, ``val/``
    or ``system/`` stay as they are."""
    stage, sep, name = key.partition("/")
    if not sep:
        stage, name = method, key
    if stage in ("train", "val", "system"):
        return key
    own = stage == method or stage.startswith(f"{method}_")
    where, rest = ("val", name[4:]) if name.startswith("val_") else ("train", name)
    if where == "val" and rest == "":
        where, rest = "train", name
    return f"{where}/{rest}" if own else f"{where}/{stage}/{rest}"


def _relocate_artifacts(store: Path, experiment_id: str, old: str, new: str) -> None:
    """Point an experiment of a run directory's own store, and its runs, at artifact root ``new``.

    The run directory was moved or copied (its artifacts travelled with it): new runs then write
    their artifacts where the run directory is now, and the earlier ones are found there."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(store, timeout=60)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, int(experiment_id)))
        con.execute(
            "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
            (new, len(old) + 1, int(experiment_id), len(old), old),
        )


class Tracker:
    """Logs a grid invocation to MLflow through an explicit client (no global active run)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_dir: Path | None = None, own_store: Path | None = None) -> None:
        """``own_store``: the sqlite file of a store that lives in the run directory with ``artifact_dir``;
        if the run directory was moved or copied, its experiment is pointed at ``artifact_dir`` again."""
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._mlflow = mlflow
        self.tracking_uri = tracking_uri
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
            location = Path(artifact_dir).resolve().as_uri() if artifact_dir is not None else None
            if exp is None:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                                   tags={"mlflow.experimentKind": EXPERIMENT_KIND})
            else:
                self.experiment_id = exp.experiment_id
                if own_store is not None and location is not None and exp.artifact_location != location:
                    _relocate_artifacts(own_store, exp.experiment_id, exp.artifact_location, location)
                if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
                    self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
        except Exception as exc:
            raise UadbenchError(f"cannot open MLflow tracking store {redact_uri(tracking_uri)!r}: {exc}") from None
        self.parent_id: str | None = None
        self.live_runs: dict[str, str] = {}  # fit key -> run id of fits that stream metrics
        self._spec: Any = None
        self._fit_params: dict[str, dict[str, Any]] = {}  # fit key -> the fit's scalar params (its cells carry them too)
        self._last_step: dict[str, int] = {}  # run id -> the last optimisation step logged on it
        self._inputs: dict[tuple[str, str], Any] = {}  # (dataset, split) -> its MLflow DatasetInput
        self.system_metrics = system_metrics_wanted()
        self._monitors: dict[str, Any] = {}  # run id -> its SystemMetricsMonitor

    def _monitor(self, run_id: str) -> None:
        """Log this machine's CPU, memory (and GPU) use on ``run_id`` under ``system/`` until it ends,
        when system metrics are switched on (:func:`system_metrics_wanted`)."""
        if not self.system_metrics:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError as exc:
            print(f"uadbench: warning: no system metrics: {exc} (pip install psutil)", file=sys.stderr)
            self.system_metrics = False
            return
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, samples_before_logging=1,
                                       tracking_uri=self.tracking_uri)
        monitor.start()
        self._monitors[run_id] = monitor

    def _end_monitor(self, run_id: str) -> None:
        if (monitor := self._monitors.pop(run_id, None)) is not None:
            monitor.finish()

    def start_parent(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, params)
        return self.parent_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_key(str(k))[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(run_id, params=items[i : i + 90])

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, int(step))
            for k, v in metrics.items()
            if v is not None and v == v  # skip None and NaN
        ]
        for i in range(0, len(items), 900):
            self.client.log_batch(run_id, metrics=items[i : i + 900])

    def child_run(self, run_name: str, *, tags: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
        all_tags = {k: str(v) for k, v in tags.items()}
        if self.parent_id:
            all_tags["mlflow.parentRunId"] = self.parent_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        if params:
            self._log_params(run.info.run_id, params)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self._log_metrics(run_id, metrics, step)

    def log_history(self, run_id: str, history: list[tuple[int, dict[str, float]]], method: str | None = None) -> None:
        """Training-curve rows ``(step, {key: value})`` of a fit, in the order they were logged; with
        ``method``, under the shared keys of :func:`curve_key`. A row at step 0 after later steps
        (a method's validation loss once training ended) is put at the last optimisation step."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for step, row in history:
            last = self._last_step.get(run_id, 0)
            step = last if int(step) == 0 else int(step)
            self._last_step[run_id] = max(last, step)
            items += [Metric(metric_key(curve_key(k, method) if method else k), float(v), now, step) for k, v in row.items()]
        for i in range(0, len(items), 900):
            self.client.log_batch(run_id, metrics=items[i : i + 900])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._end_monitor(run_id)
        self.client.set_terminated(run_id, status=status)

    def end_parent(self, status: str = "FINISHED") -> None:
        for run_id in list(self._monitors):
            self._end_monitor(run_id)
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status=status)

    # -- the grid's schema (see the module docstring) ---------------------------------------------
    def start_grid(self, spec: Any, executor: str, run_dir: Path) -> None:
        """The parent run of this invocation; earlier parents of the same run directory that are
        still RUNNING (their process was killed) are marked KILLED first, with their children.
        The experiment's saved comparison view then shows this invocation's cells."""
        where = str(Path(run_dir).resolve())
        self.close_killed_runs(where)
        self._spec = spec
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        params = {"grid": spec.source, "spec_hash": spec.spec_hash, "image_grid": json.dumps(spec.image_grid.to_dict()),
                  "seeds": json.dumps(list(spec.seeds)), "train_dataset": spec.train_dataset, "executor": executor}
        tags = {"uadbench.grid": spec.name, "uadbench.spec_hash": spec.spec_hash, "uadbench.run_dir": where,
                "uadbench.pid": str(os.getpid())}
        parent = self.start_parent(f"{spec.name}-{stamp}", params, tags)
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, json.dumps(comparison_view(parent)))
        self._monitor(parent)

    def close_killed_runs(self, run_dir: str) -> list[str]:
        """Mark RUNNING parent runs of ``run_dir`` (and their RUNNING children) KILLED; returns their ids."""
        quoted = run_dir.replace("'", "\\'")
        running = "attributes.status = 'RUNNING'"
        parents = self.client.search_runs([self.experiment_id], filter_string=f"tags.`uadbench.run_dir` = '{quoted}' and {running}")
        for parent in parents:
            children = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and {running}")
            for run in [*children, parent]:
                self.client.set_terminated(run.info.run_id, status="KILLED")
        return [p.info.run_id for p in parents]

    def _dataset_input(self, dataset: str, split: str) -> Any:
        """``dataset``'s ``split`` as an MLflow dataset input: name, digest (of the dataset's
        fingerprint), source (where its data lie) and the split as its context."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        if (dataset, split) not in self._inputs:
            from uadbench.config import stable_hash
            from uadbench.data import create_dataset

            term = self._spec.data_term(dataset)
            source = str(create_dataset(dataset, root=self._spec.data_root, seed=self._spec.data_seed).root)
            profile = json.dumps({"fingerprint": term["fingerprint"], "dataset_version": term["dataset_version"],
                                  "pipeline": term["pipeline"], "image_grid": term["grid"]})
            entity = Dataset(dataset, stable_hash(term["fingerprint"], 16), "local", json.dumps({"uri": source}), profile=profile)
            self._inputs[(dataset, split)] = DatasetInput(entity, tags=[InputTag("mlflow.data.context", split)])
        return self._inputs[(dataset, split)]

    def _log_input(self, run_id: str, dataset: str, split: str) -> None:
        if self._spec is None:
            return
        try:
            self.client.log_inputs(run_id, datasets=[self._dataset_input(dataset, split)])
        except UadbenchError:
            return  # a dataset that cannot be described here (no data at its root) is simply not an input

    def _fit_run(self, job: Any, meta: Mapping[str, Any]) -> str:
        name, tags, params = fit_run(job, meta)
        self._fit_params[job.key] = params
        run_id = self.child_run(name, tags=tags, params=params)
        self._log_input(run_id, job.train_dataset, "train")
        return run_id

    def log_live(self, job: Any, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Metrics of a fit that is still training, on its run (created, RUNNING, on first use)."""
        if job.key not in self.live_runs:
            self.live_runs[job.key] = self._fit_run(job, {"cached": False})
            self._monitor(self.live_runs[job.key])  # the machine while the fit trains
        self.log_history(self.live_runs[job.key], rows, job.method.name)

    def log_fit(self, job: Any, meta: Mapping[str, Any], streamed: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        """A finished fit: its run (the live one, if metrics were streamed) gets the history rows
        not streamed yet, its cost, and ends."""
        run_id = self.live_runs.pop(job.key, None)
        if run_id is None:
            run_id = self._fit_run(job, meta)
        history = [(s, m) for i, (s, m) in enumerate(meta.get("history", [])) if i not in streamed]
        self.log_history(run_id, history, job.method.name)
        self.log_metrics(run_id, {"train_seconds": meta["train_seconds"], "num_parameters": meta["num_parameters"]},
                         self._last_step.get(run_id, 0))
        self.client.log_dict(run_id, fit_config(job), "config.json")
        self.end_run(run_id)

    def log_cell(self, rec: ResultRecord, cached: bool, example_dir: Path | None = None) -> None:
        name, tags, params = cell_run(rec, cached, self._fit_params.get(rec.fit_key))
        run_id = self.child_run(name, tags=tags, params=params)
        self._log_input(run_id, rec.dataset, rec.split)
        thresholds: dict[str, Any] = {f"threshold.{k}": t.get("value") for k, t in rec.thresholds.items() if isinstance(t, Mapping)}
        self.log_metrics(run_id, {**rec.metrics, **thresholds,
                                  **{f"cost.{k}": v for k, v in rec.cost.items() if isinstance(v, (int, float))}})
        self.client.log_dict(run_id, rec.thresholds, "thresholds.json")
        if example_dir is not None and example_dir.is_dir():  # the run passes it only when asked (--log-examples)
            draw_panel(example_dir, f"{rec.label}, {rec.dataset} {rec.shift_label}")
            for f in sorted(example_dir.iterdir()):
                self.log_artifact(run_id, f, "example")
        self.end_run(run_id)

    def log_outputs(self, *paths: Path) -> None:
        """The grid's outputs on its parent run; beside ``results.jsonl``, its records as the tables
        and comparison the UI renders (``leaderboard.html``, ``comparison.json``) and counts as metrics."""
        from uadbench.records import read_records

        parent = self.parent_id
        if parent is None:
            return
        for path in paths:
            self.log_artifact(parent, path)
            if Path(path).name != layout.RESULTS:
                continue
            try:
                records = read_records(path)
            except UadbenchError:  # no cell finished: the grid's failures are in leaderboard.md
                continue
            from uadbench import report

            title = f"uadbench leaderboard: {self._spec.name}" if self._spec is not None else "uadbench leaderboard"
            self.client.log_text(parent, report.leaderboard_html(records, title=title, per_spec=True), "leaderboard.html")
            with warnings.catch_warnings():  # pandas' notice about a dtype selection inside mlflow's log_table
                warnings.simplefilter("ignore")
                self.client.log_table(parent, comparison_table(records), "comparison.json")
            self.log_metrics(parent, {"cells": len(records), "fits": len({r.fit_key for r in records})})

    def end_grid(self, status: str) -> None:
        self.end_parent(status)


def comparison_table(records: list[ResultRecord]) -> dict[str, list[Any]]:
    """One row per evaluation cell: method, label, dataset, shift, seed and the comparison's metrics."""
    rows = sorted(records, key=lambda r: (r.dataset, r.shift_label, r.label, r.seed))
    table: dict[str, list[Any]] = {"method": [r.method for r in rows], "label": [r.label for r in rows],
                                   "dataset": [r.dataset for r in rows], "shift": [r.shift_label for r in rows],
                                   "seed": [r.seed for r in rows]}
    for metric in VIEW_METRICS:
        table[metric] = [r.metrics.get(metric) for r in rows]
    return table


def comparison_view(parent_id: str | None) -> dict[str, Any]:
    """The runs page's state that compares methods with no click: the evaluation runs of the
    invocation ``parent_id`` (all, when None), one row per cell, columns method, dataset, shift,
    AUPRC, Dice@val, method, dataset, shift, severity and seed (metrics and tags, which stores of every uadbench version
    have), in the order of the run names (method first). MLflow reads it from the experiment tag
    ``mlflow.sharedViewState.<key>`` when the address carries ``viewStateShareKey=<key>``."""
    where = "tags.`uadbench.kind` = 'eval'"
    if parent_id:
        where += f" and tags.`mlflow.parentRunId` = '{parent_id}'"
    columns = [f"metrics.`{metric_key(m)}`" for m in VIEW_METRICS] + [f"tags.`{t}`" for t in VIEW_TAGS]
    name = "tags.`mlflow.runName`"
    return {"searchFilter": where, "orderByKey": name, "orderByAsc": True, "lifecycleFilter": "Active",
            "selectedColumns": columns, "columnOrder": [name, *columns], "columnWidths": {c: 120 for c in columns},
            "runsHiddenMode": "SHOW_ALL", "runListHidden": False, "viewMaximized": False}


def comparison_address(base_url: str, experiment_id: str) -> str:
    """The address of ``experiment_id``'s saved comparison view on the server at ``base_url``, in
    model-training mode (MLflow 3 opens an experiment in GenAI mode without ``workflowType``)."""
    return (f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&compareRunsMode=TABLE&viewStateShareKey={VIEW_KEY}")


def prepare_views(tracking_uri: str) -> list[tuple[str, str]]:
    """Give every uadbench experiment of the store at ``tracking_uri`` the model-training kind and
    a comparison view of its latest invocation (stores written by earlier versions included);
    returns (experiment name, id), the most recently active first."""
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = []
        for exp in client.search_experiments(filter_string="name LIKE 'uadbench-%'"):
            parents = client.search_runs([exp.experiment_id], filter_string="tags.`uadbench.grid` != ''",
                                         order_by=["attributes.start_time DESC"], max_results=1)
            parent = parents[0] if parents else None
            if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
                client.set_experiment_tag(exp.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
            client.set_experiment_tag(exp.experiment_id, VIEW_TAG, json.dumps(comparison_view(parent.info.run_id if parent else None)))
            found.append((parent.info.start_time if parent else 0, exp.name, exp.experiment_id))
    except Exception as exc:
        raise UadbenchError(f"cannot read MLflow tracking store {redact_uri(tracking_uri)!r}: {exc}") from None
    return [(name, eid) for _, name, eid in sorted(found, reverse=True)]


def draw_panel(example_dir: Path, title: str) -> None:
    """The example panel (input | reconstruction | map | ground truth) of a cell's example volume,
    as ``panel.png`` beside it, unless it is there already."""
    from uadbench.report.figures import cell_panel, read_example, save_figure
    from uadbench.run import layout

    if (example_dir / f"{layout.PANEL}.png").is_file() or (example := read_example(example_dir)) is None:
        return
    save_figure(cell_panel(example, f"{title}, {example['subject']}"), example_dir / layout.PANEL, formats=("png",), dpi=100)


def run_name(*parts: Any) -> str:
    """A run name that leads with what differs and fits MLflow's name column: ``ae · fit · s0``."""
    return " · ".join(str(p) for p in parts)


def fit_run(job: Any, meta: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(run name, tags, params) of a fit run; ``job`` is a :class:`uadbench.grid.FitJob`."""
    tags = {"uadbench.kind": "fit", "method": job.method.name, "label": job.method.display, "preset": job.method.preset,
            "seed": job.seed, "config_hash": job.config_hash, "fit_key": job.key, "cached": meta.get("cached", False)}
    params = {"method": job.method.name, "label": job.method.display, "preset": job.method.preset, "seed": job.seed,
              "train_dataset": job.train_dataset, "image_grid": job.image_grid.name, **flatten(config_to_dict(job.config), "config.")}
    return run_name(job.method.display, "fit", f"s{job.seed}"), tags, params


def fit_config(job: Any) -> dict[str, Any]:
    """What a fit's ``config.json`` artifact holds: everything that configures it, as one file."""
    return {"method": job.method.name, "label": job.method.display, "preset": job.method.preset,
            "overrides": job.method.overrides_dict, "config": config_to_dict(job.config), "config_hash": job.config_hash,
            "precision": job.method.precision, "compile": job.method.compile, "seed": job.seed,
            "train_dataset": job.train_dataset, "image_grid": job.image_grid.to_dict()}


def cell_run(rec: ResultRecord, cached: bool, fit_params: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(run name, tags, params) of an evaluation cell's run; ``fit_params``: its fit run's params
    (for the ``config.*`` values; without them, the record's overrides)."""
    tags = {"uadbench.kind": "eval", "method": rec.method, "label": rec.label, "dataset": rec.dataset, "split": rec.split,
            "shift": rec.shift, "severity": rec.severity, "seed": rec.seed, "config_hash": rec.config_hash,
            "fit_key": rec.fit_key, "eval_key": rec.eval_key, "spec_hash": rec.spec_hash, "cached": cached}
    config = {k: v for k, v in (fit_params or {}).items() if k.startswith("config.")} or flatten(rec.overrides, "config.")
    params = {"method": rec.method, "label": rec.label, "preset": rec.preset, "dataset": rec.dataset, "split": rec.split,
              "val_split": rec.val_split, "shift": rec.shift, "severity": rec.severity, "seed": rec.seed,
              "train_dataset": rec.train_dataset, "image_grid": rec.image_grid.get("name", ""), **config}
    return run_name(rec.label, rec.dataset, rec.shift_label, f"s{rec.seed}"), tags, params


class NullTracker:
    """Tracking switched off: every call does nothing."""

    tracking_uri: str | None = None

    def start_grid(self, spec: Any, executor: str, run_dir: Path) -> None: ...

    def log_live(self, job: Any, rows: list[tuple[int, dict[str, float]]]) -> None: ...

    def log_fit(self, job: Any, meta: Mapping[str, Any], streamed: set[int] = frozenset()) -> None: ...  # type: ignore[assignment]

    def log_cell(self, rec: ResultRecord, cached: bool, example_dir: Path | None = None) -> None: ...

    def log_outputs(self, *paths: Path) -> None: ...

    def end_grid(self, status: str) -> None: ...


def create_tracker(track: bool, tracking_uri: str | None, run_dir: Path, experiment: str) -> Tracker | NullTracker:
    if not track:
        return NullTracker()
    if tracking_uri:
        return Tracker(tracking_uri, experiment, artifact_dir=layout.mlflow_artifacts(run_dir))
    return Tracker(default_tracking_uri(run_dir), experiment, artifact_dir=layout.mlflow_artifacts(run_dir),
                   own_store=layout.mlflow_db(Path(run_dir).resolve()))


def search_runs(tracking_uri: str, experiment: str):
    """All runs of ``experiment`` as a pandas DataFrame (for tests and notebooks)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(experiment_names=[experiment])
