"""MLflow tracking: the only module that imports mlflow.

One experiment per grid, one parent run per invocation, a child run per fit and per evaluation
cell, tagged with method, dataset, shift, severity, seed and config hash. The default store is
``sqlite:///<run dir>/mlflow.db`` with artifacts under ``<run dir>/mlartifacts``; any tracking URI
MLflow accepts (an ``http://127.0.0.1:5000`` server, say) works too.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

from uadbench.errors import UadbenchError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_INVALID = re.compile(r"[^\w./\- :]")


def metric_key(name: str) -> str:
    """An MLflow-safe metric name: 'dice@healthy-fpr@5%' -> 'dice.at.healthy-fpr.at.5pct'."""
    return _INVALID.sub("_", name.replace("@", ".at.").replace("%", "pct"))


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


class Tracker:
    """Logs a grid invocation to MLflow through an explicit client (no global active run)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_dir: Path | None = None) -> None:
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
            if exp is None:
                location = Path(artifact_dir).resolve().as_uri() if artifact_dir is not None else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                self.experiment_id = exp.experiment_id
        except Exception as exc:
            raise UadbenchError(f"cannot open MLflow tracking store {tracking_uri!r}: {exc}") from exc
        self.parent_id: str | None = None

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


def search_runs(tracking_uri: str, experiment: str):
    """All runs of ``experiment`` as a pandas DataFrame (for tests and notebooks)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(experiment_names=[experiment])
