"""The evaluation's data: what goes in (:class:`EvalVolume`) and what comes out, with provenance.

- :class:`EvalVolume`: one volume's raw anomaly map and the harness's masks;
- :class:`ThresholdInfo`: a threshold and where it came from;
- :class:`VolumeResult`: the metrics of one test volume;
- :class:`DatasetEvaluation`: every number of one (method, dataset) evaluation.

``to_dict`` forms are JSON-serialisable: undefined numbers (NaN, inf) become None and are read
back as NaN by ``from_dict``. This module holds no protocol logic and imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from uadbench.errors import UadbenchError


@dataclass
class EvalVolume:
    """One evaluation volume: a method's raw anomaly map and the harness's masks.

    ``anomaly_map`` (X, Y, Z) float32, slices restacked along Z; ``brain_mask`` bool;
    ``lesion_mask`` bool or None for healthy scans; ``spacing`` isotropic voxel size in mm;
    ``image`` / ``reconstruction`` optional, in [0, 1], for l1 and reconstruction quality;
    ``affine`` optional 4x4 voxel-to-world matrix of the grid, for writing the volume as NIfTI.
    """

    subject_id: str
    anomaly_map: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None
    spacing: float
    image: np.ndarray | None = None
    reconstruction: np.ndarray | None = None
    affine: np.ndarray | None = None


@dataclass
class ThresholdInfo:
    """Where a threshold came from. ``value`` is None for the per-volume oracle."""

    protocol: str
    value: float | None
    source: str
    n_volumes: int
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdInfo:
        """Inverse of :meth:`to_dict` (None details read back as NaN)."""
        return cls(
            protocol=str(data["protocol"]),
            value=None if data.get("value") is None else float(data["value"]),
            source=str(data["source"]),
            n_volumes=int(data["n_volumes"]),
            details={k: from_json_number(v) for k, v in data.get("details", {}).items()},
        )


@dataclass
class VolumeResult:
    """Metrics of one test volume plus the (numerator, denominator) pairs of pooled aggregates."""

    subject_id: str
    metrics: dict[str, float]
    ratios: dict[str, tuple[float, float]]


@dataclass
class DatasetEvaluation:
    """Every number of one (method, dataset) evaluation, with provenance."""

    per_volume: dict[str, dict[str, float]]
    aggregates: dict[str, float]
    confidence_intervals: dict[str, tuple[float, float]]
    thresholds: dict[str, ThresholdInfo]
    counts: dict[str, int] = field(default_factory=dict)  # volumes behind each aggregate
    settings: dict[str, Any] = field(default_factory=dict)  # post-processing, bootstrap

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; undefined (NaN / inf) numbers become None."""
        return json_safe(
            {
                "per_volume": self.per_volume,
                "aggregates": self.aggregates,
                "confidence_intervals": {k: list(v) for k, v in self.confidence_intervals.items()},
                "thresholds": {k: v.to_dict() for k, v in self.thresholds.items()},
                "counts": self.counts,
                "settings": self.settings,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetEvaluation:
        """Inverse of :meth:`to_dict` (None read back as NaN)."""
        try:
            return cls(
                per_volume={
                    sid: {k: from_json_number(v) for k, v in m.items()}
                    for sid, m in data["per_volume"].items()
                },
                aggregates={k: from_json_number(v) for k, v in data["aggregates"].items()},
                confidence_intervals={
                    k: (from_json_number(v[0]), from_json_number(v[1]))
                    for k, v in data.get("confidence_intervals", {}).items()
                },
                thresholds={k: ThresholdInfo.from_dict(v) for k, v in data["thresholds"].items()},
                counts={k: int(v) for k, v in data.get("counts", {}).items()},
                settings=dict(data.get("settings", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UadbenchError(
                f"not a serialised DatasetEvaluation ({type(exc).__name__}: {exc}); expected the "
                "output of DatasetEvaluation.to_dict()"
            ) from None


def from_json_number(v: Any) -> float:
    """A number read back from JSON: None (an undefined value) becomes NaN."""
    return math.nan if v is None else float(v)


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, tuples as lists, NaN / inf as None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


__all__ = [
    "DatasetEvaluation",
    "EvalVolume",
    "ThresholdInfo",
    "VolumeResult",
    "from_json_number",
    "json_safe",
]
