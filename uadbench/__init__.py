"""uadbench: a benchmark harness for unsupervised anomaly detection in brain MRI.

The package face is lazy (PEP 562): ``import uadbench`` imports no torch; each public name is
imported from its module on first use, so ``import uadbench.grid`` or ``uadbench.report`` stays
light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from uadbench._version import __version__

_EXPORTS: dict[str, str] = {
    # the Method contract
    "AnomalyOutput": "uadbench.method",
    "FitContext": "uadbench.method",
    "Method": "uadbench.method",
    "ReconstructionMethod": "uadbench.method",
    "create_method": "uadbench.method",
    "create_config": "uadbench.config",
    # registries
    "DATASETS": "uadbench.registry",
    "METHODS": "uadbench.registry",
    "METRICS": "uadbench.registry",
    "SHIFTS": "uadbench.registry",
    "Registry": "uadbench.registry",
    "list_datasets": "uadbench.registry",
    "list_methods": "uadbench.registry",
    "list_metrics": "uadbench.registry",
    "list_shifts": "uadbench.registry",
    "register_dataset": "uadbench.registry",
    "register_method": "uadbench.registry",
    "register_metric": "uadbench.registry",
    "register_shift": "uadbench.registry",
    # data, runs and records
    "create_dataset": "uadbench.data.dataset",
    "run_grid": "uadbench.run.runner",
    "ResultRecord": "uadbench.records",
    "read_records": "uadbench.records",
    # your own scans
    "evaluate_volumes": "uadbench.api",
    "load_fitted_method": "uadbench.api",
    "load_volume": "uadbench.api",
    "predict_map": "uadbench.api",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'uadbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from uadbench.api import evaluate_volumes, load_fitted_method, load_volume, predict_map
    from uadbench.config import create_config
    from uadbench.data.dataset import create_dataset
    from uadbench.method import AnomalyOutput, FitContext, Method, ReconstructionMethod, create_method
    from uadbench.records import ResultRecord, read_records
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
    from uadbench.run.runner import run_grid
