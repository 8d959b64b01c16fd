"""MLflow tracking: the only module that imports mlflow, and the owner of the tag and param schema.

One experiment per grid (``uadbench-<grid name>``), one parent run per invocation, a child run per
fit and per evaluation cell. The schema, in one place:

- parent run: tags ``uadbench.grid``, ``uadbench.spec_hash``; params grid, spec_hash, image_grid,
  seeds, train_dataset, executor;
- fit run (``fit/<label>/seed<seed>``): tags ``uadbench.kind=fit``, method, label, preset, seed,
  config_hash, fit_key, cached; params method, preset and the flattened config (``config.*``);
  metrics: the training history (by step), train_seconds, num_parameters; artifact ``config.json``
  (method, preset, overrides, the full config, precision, seed, training data, image grid);
- cell run (``eval/<label>/<dataset>/<shift>/seed<seed>``): tags ``uadbench.kind=eval``, method,
  label, dataset, split, shift, severity, seed, config_hash, fit_key, eval_key, spec_hash, cached;
  params ``threshold.<protocol>`` (value and provenance); metrics: the cell's metrics and
  ``cost.*``; with ``log_examples`` (``uadbench run --log-examples``) only, artifacts under
  ``example/``: the example test volume's anomaly map, image, reconstruction and masks (NIfTI)
  and its panel ``panel.png`` (input | reconstruction | map | ground truth).

The default store is ``sqlite:///<run dir>/mlflow.db`` with artifacts under
``<run dir>/mlartifacts``; any tracking URI MLflow accepts (an ``http://127.0.0.1:5000`` server,
say) works too. :class:`NullTracker` stands in when tracking is off.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
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
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                self.experiment_id = exp.experiment_id
                if own_store is not None and location is not None and exp.artifact_location != location:
                    _relocate_artifacts(own_store, exp.experiment_id, exp.artifact_location, location)
        except Exception as exc:
            raise UadbenchError(f"cannot open MLflow tracking store {redact_uri(tracking_uri)!r}: {exc}") from None
        self.parent_id: str | None = None
        self.live_runs: dict[str, str] = {}  # fit key -> run id of fits that stream metrics

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

    def log_history(self, run_id: str, history: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, int(step)) for step, row in history for k, v in row.items()]
        for i in range(0, len(items), 900):
            self.client.log_batch(run_id, metrics=items[i : i + 900])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def end_parent(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status=status)

    # -- the grid's schema (see the module docstring) ---------------------------------------------
    def start_grid(self, spec: Any, executor: str, run_dir: Path) -> None:
        """The parent run of this invocation; earlier parents of the same run directory that are
        still RUNNING (their process was killed) are marked KILLED first, with their children."""
        where = str(Path(run_dir).resolve())
        self.close_killed_runs(where)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        params = {"grid": spec.source, "spec_hash": spec.spec_hash, "image_grid": json.dumps(spec.image_grid.to_dict()),
                  "seeds": json.dumps(list(spec.seeds)), "train_dataset": spec.train_dataset, "executor": executor}
        tags = {"uadbench.grid": spec.name, "uadbench.spec_hash": spec.spec_hash, "uadbench.run_dir": where,
                "uadbench.pid": str(os.getpid())}
        self.start_parent(f"{spec.name}-{stamp}", params, tags)

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

    def log_live(self, job: Any, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Metrics of a fit that is still training, on its run (created, RUNNING, on first use)."""
        if job.key not in self.live_runs:
            name, tags, params = fit_run(job, {"cached": False})
            self.live_runs[job.key] = self.child_run(name, tags=tags, params=params)
        self.log_history(self.live_runs[job.key], rows)

    def log_fit(self, job: Any, meta: Mapping[str, Any], streamed: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        """A finished fit: its run (the live one, if metrics were streamed) gets the history rows
        not streamed yet, its cost, and ends."""
        run_id = self.live_runs.pop(job.key, None)
        if run_id is None:
            name, tags, params = fit_run(job, meta)
            run_id = self.child_run(name, tags=tags, params=params)
        history = [(s, m) for i, (s, m) in enumerate(meta.get("history", [])) if i not in streamed]
        self.log_history(run_id, history)
        self.log_metrics(run_id, {"train_seconds": meta["train_seconds"], "num_parameters": meta["num_parameters"]})
        self.client.log_dict(run_id, fit_config(job), "config.json")
        self.end_run(run_id)

    def log_cell(self, rec: ResultRecord, cached: bool, example_dir: Path | None = None) -> None:
        name, tags, params = cell_run(rec, cached)
        run_id = self.child_run(name, tags=tags, params=params)
        self.log_metrics(run_id, {**rec.metrics, **{f"cost.{k}": v for k, v in rec.cost.items() if isinstance(v, (int, float))}})
        if example_dir is not None and example_dir.is_dir():  # the run passes it only when asked (--log-examples)
            draw_panel(example_dir, f"{rec.label}, {rec.dataset} {rec.shift_label}")
            for f in sorted(example_dir.iterdir()):
                self.log_artifact(run_id, f, "example")
        self.end_run(run_id)

    def log_outputs(self, *paths: Path) -> None:
        for path in paths:
            self.log_artifact(self.parent_id, path)  # type: ignore[arg-type]

    def end_grid(self, status: str) -> None:
        self.end_parent(status)


def draw_panel(example_dir: Path, title: str) -> None:
    """The example panel (input | reconstruction | map | ground truth) of a cell's example volume,
    as ``panel.png`` beside it, unless it is there already."""
    from uadbench.report.figures import cell_panel, read_example, save_figure
    from uadbench.run import layout

    if (example_dir / f"{layout.PANEL}.png").is_file() or (example := read_example(example_dir)) is None:
        return
    save_figure(cell_panel(example, f"{title}, {example['subject']}"), example_dir / layout.PANEL, formats=("png",), dpi=100)


def fit_run(job: Any, meta: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(run name, tags, params) of a fit run; ``job`` is a :class:`uadbench.grid.FitJob`."""
    tags = {"uadbench.kind": "fit", "method": job.method.name, "label": job.method.display, "preset": job.method.preset,
            "seed": job.seed, "config_hash": job.config_hash, "fit_key": job.key, "cached": meta.get("cached", False)}
    params = {"method": job.method.name, "preset": job.method.preset, **flatten(config_to_dict(job.config), "config.")}
    return f"fit/{job.method.display}/seed{job.seed}", tags, params


def fit_config(job: Any) -> dict[str, Any]:
    """What a fit's ``config.json`` artifact holds: everything that configures it, as one file."""
    return {"method": job.method.name, "label": job.method.display, "preset": job.method.preset,
            "overrides": job.method.overrides_dict, "config": config_to_dict(job.config), "config_hash": job.config_hash,
            "precision": job.method.precision, "compile": job.method.compile, "seed": job.seed,
            "train_dataset": job.train_dataset, "image_grid": job.image_grid.to_dict()}


def cell_run(rec: ResultRecord, cached: bool) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(run name, tags, params) of an evaluation cell's run."""
    tags = {"uadbench.kind": "eval", "method": rec.method, "label": rec.label, "dataset": rec.dataset, "split": rec.split,
            "shift": rec.shift, "severity": rec.severity, "seed": rec.seed, "config_hash": rec.config_hash,
            "fit_key": rec.fit_key, "eval_key": rec.eval_key, "spec_hash": rec.spec_hash, "cached": cached}
    params = {f"threshold.{k}": json.dumps(v) for k, v in rec.thresholds.items()}
    return f"eval/{rec.label}/{rec.dataset}/{rec.shift_label}/seed{rec.seed}", tags, params


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
