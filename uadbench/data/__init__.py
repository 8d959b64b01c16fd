"""Data: volumes, NIfTI I/O, the preprocessing pipeline, slice datasets and dataset sources.

Names are imported on first use, so that ``import uadbench.data.<module>`` loads no more than the
module it names (``SliceDataset`` needs torch; the rest does not).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetSource": "uadbench.data.dataset",
    "create_dataset": "uadbench.data.dataset",
    "default_data_root": "uadbench.data.dataset",
    "IMAGE_GRIDS": "uadbench.data.pipeline",
    "ImageGrid": "uadbench.data.pipeline",
    "get_image_grid": "uadbench.data.pipeline",
    "preprocess": "uadbench.data.pipeline",
    "SliceDataset": "uadbench.data.slices",
    "Volume": "uadbench.data.volume",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'uadbench.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
