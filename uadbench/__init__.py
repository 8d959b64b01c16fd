"""uadbench: a benchmark harness for unsupervised anomaly detection in brain MRI."""

from __future__ import annotations

from uadbench.method import (
    AnomalyOutput,
    FitContext,
    Method,
    ReconstructionMethod,
    create_config,
    create_method,
)
from uadbench.registry import (
    DATASETS,
    METHODS,
    METRICS,
    SHIFTS,
    Registry,
    list_datasets,
    list_methods,
    list_metrics,
    list_shifts,
    register_dataset,
    register_method,
    register_metric,
    register_shift,
)

__version__ = "0.1.0"


def run_grid(*args, **kwargs):
    """Run a benchmark grid (see :func:`uadbench.runner.run_grid`)."""
    from uadbench.runner import run_grid as _run_grid

    return _run_grid(*args, **kwargs)


def create_dataset(name: str, root=None, seed: int = 0):
    from uadbench.data.dataset import create_dataset as _create_dataset

    return _create_dataset(name, root=root, seed=seed)


__all__ = [
    "AnomalyOutput",
    "DATASETS",
    "FitContext",
    "METHODS",
    "METRICS",
    "Method",
    "ReconstructionMethod",
    "Registry",
    "SHIFTS",
    "create_config",
    "create_dataset",
    "create_method",
    "list_datasets",
    "list_methods",
    "list_metrics",
    "list_shifts",
    "register_dataset",
    "register_method",
    "register_metric",
    "register_shift",
    "run_grid",
]
