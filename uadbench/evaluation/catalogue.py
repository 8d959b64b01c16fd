"""The metric catalogue: every metric the protocol reports, what it is, and how tables show it.

:data:`METRIC_INFO` lists the built-in metrics in display order (aggregates are reported in this
order); :func:`metric_info` finds the entry of any key as it appears in results, including the
cross-fitting protocols' keys and metrics registered by other packages. Each entry says:

- ``direction``: ``"higher"`` (higher is better, ↑), ``"lower"`` (lower is better, ↓) or
  ``"signed"`` (the sign is the finding and neither direction is better: no best, no rank; the
  histogram entropy difference ``entropy_diff`` is one);
- ``upper_bound``: the value uses the test labels (the oracle Dice): never a fair result;
- ``percent``: a fraction that tables show multiplied by 100.

Every entry is registered in :data:`uadbench.registry.METRICS` (``uadbench list metrics``).

Another package adds a per-volume metric with :func:`volume_metric` (a :class:`VolumeMetric`
entry): one module of its own and one entry-point line are enough, and the protocol then computes
it on every test volume of every cell (:mod:`uadbench.evaluation.volume`); records carry it in
``metrics`` (the mean over the volumes that define it, with its bootstrap CI) and ``per_volume``,
and the report's tidy frame has its rows. For example, in ``my_metrics.py``::

    import numpy as np
    from uadbench.evaluation.catalogue import volume_metric

    @volume_metric("hot_fraction", direction="lower", percent=True,
                   description="fraction of brain voxels whose post-processed score exceeds 0.5")
    def hot_fraction(processed, lesion, brain, spacing):
        return float(np.mean(processed[brain] > 0.5)) if brain.any() else float("nan")

and in ``pyproject.toml``::

    [project.entry-points."uadbench.metrics"]
    hot_fraction = "my_metrics"

Registered metrics enter the evaluation cache keys (:func:`uadbench.evaluation.metrics.metrics_version`),
so cells evaluated before a metric was installed are evaluated again (from their cached maps).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uadbench.errors import UadbenchError
from uadbench.registry import METRICS, register_metric

#: Threshold protocols with a fair (not test-tuned) threshold, in display order.
FAIR_PROTOCOLS = (
    "val-bisection",
    "val-exact",
    "healthy-fpr@1%",
    "healthy-fpr@5%",
    "healthy-fpr@10%",
)
ORACLE = "oracle"
ALL_PROTOCOLS = FAIR_PROTOCOLS + (ORACLE,)

#: Lesion-size bins (ml) of connected lesions for the detection rate: [lower, upper).
SIZE_BINS_ML: dict[str, tuple[float, float]] = {
    "small": (0.0, 0.1),
    "medium": (0.1, 1.0),
    "large": (1.0, math.inf),
}

#: The directions a metric may have: better when higher, better when lower, or signed (neither).
DIRECTIONS = ("higher", "lower", "signed")
_ARROWS = {"higher": "↑", "lower": "↓", "signed": "±"}


@dataclass(frozen=True)
class MetricInfo:
    """A metric reported by the evaluation protocol, and how tables should show it.

    ``direction``: ``"higher"`` or ``"lower"`` (the better side), or ``"signed"`` (a signed value
    with no better side, which tables never rank). ``upper_bound``: the value uses the test labels
    (the oracle Dice); never a fair result, never mixed into the fair columns. ``percent``: a
    fraction that tables show multiplied by 100.
    """

    name: str
    description: str
    direction: str = "higher"
    upper_bound: bool = False
    percent: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise UadbenchError(
                f"metric {self.name!r}: unknown direction {self.direction!r}; valid: {', '.join(DIRECTIONS)}"
            )

    @property
    def higher_is_better(self) -> bool:
        """True only for direction ``"higher"``; a ``"signed"`` metric has no better side (check
        :attr:`ranked` before ranking by it)."""
        return self.direction == "higher"

    @property
    def ranked(self) -> bool:
        """Whether a better value exists: false for signed metrics."""
        return self.direction != "signed"

    @property
    def arrow(self) -> str:
        """``"↑"`` when higher is better, ``"↓"`` when lower is better, ``"±"`` when signed."""
        return _ARROWS[self.direction]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


#: Name prefixes the protocol aggregates as pooled ratios (not as means): not for a volume metric.
_POOLED = ("dice_pooled@", "detection_rate_", "l1_ratio")


@dataclass(frozen=True, repr=False)
class VolumeMetric(MetricInfo):
    """A per-volume metric that the protocol computes on every test volume of every cell.

    The contract of ``compute``: ``compute(processed, lesion, brain, spacing) -> float`` with

    - ``processed``: the volume's post-processed anomaly map (X, Y, Z) float32, erosion-masked and
      median-filtered (post-processing steps 2-3), higher = more anomalous; read-only;
    - ``lesion``: the boolean lesion mask (X, Y, Z), or None for a scan without annotation (a
      healthy scan); an annotated volume's mask may be empty;
    - ``brain``: the boolean brain mask (X, Y, Z);
    - ``spacing``: the isotropic voxel size in mm (a voxel is ``spacing ** 3 / 1000`` ml);

    returning a float, or NaN where the metric is undefined for the volume (then the volume has
    no value for it and is left out of its mean). The aggregate is the mean over the volumes with
    a value. ``direction`` (``"higher"``, ``"lower"`` or ``"signed"``), ``percent`` and
    ``description`` say how tables show it. ``version``: bump it whenever a change of
    ``compute`` changes a value, so that cached cells are evaluated again.
    """

    compute: Callable[..., Any] | None = None
    version: str = "1"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.compute):
            raise UadbenchError(
                f"metric {self.name!r}: compute must be a function (processed, lesion, brain, spacing) -> float, "
                f"got {type(self.compute).__name__}"
            )
        if self.name.startswith(_POOLED) or "@" in self.name:
            raise UadbenchError(
                f"metric {self.name!r}: a volume metric's name may not contain '@' nor start with "
                f"{', '.join(repr(p) for p in _POOLED)} (the protocol's threshold and pooled metrics)"
            )
        if not isinstance(self.version, str) or not self.version:
            raise UadbenchError(f"metric {self.name!r}: version must be a non-empty string, got {self.version!r}")
        # the module that defines the metric, so that worker processes import it when it was
        # registered outside the entry points (``uadbench.registry.runtime_modules``)
        object.__setattr__(self, "__module__", getattr(self.compute, "__module__", type(self).__module__))


def volume_metric(
    name: str,
    *,
    direction: str = "higher",
    description: str | None = None,
    percent: bool = False,
    version: str = "1",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn(processed, lesion, brain, spacing) -> float`` as the per-volume
    metric ``name`` (see :class:`VolumeMetric` for the contract); returns ``fn`` unchanged.

    ``description`` defaults to the first line of the function's docstring.
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (inspect.getdoc(fn) or "").strip()
        text = description or (doc.splitlines()[0].rstrip(".") if doc else name)
        metric = VolumeMetric(name, text, direction=direction, percent=percent, compute=fn, version=version)
        register_metric(name, description=text)(metric)
        return fn

    return decorator


def volume_metrics() -> list[VolumeMetric]:
    """Every registered :class:`VolumeMetric` (entry points loaded), by name."""
    registered = [METRICS.get(name) for name in METRICS.names()]
    return [m for m in registered if isinstance(m, VolumeMetric)]


def _protocol_text(protocol: str) -> str:
    if protocol == "val-bisection":
        return "threshold from the labelled validation split (reference 10-step bisection)"
    if protocol == "val-exact":
        return "threshold from the labelled validation split (exact pooled-Dice optimum)"
    if protocol.startswith("healthy-fpr@"):
        pct = protocol.split("@", 1)[1]
        return f"threshold giving {pct} voxel FPR on healthy validation brains"
    return protocol


def _metric_table() -> list[MetricInfo]:
    table = [
        MetricInfo(
            "auprc",
            "AUPRC over all voxels of a volume, mean over volumes (paper's AUPRC)",
            percent=True,
        ),
        MetricInfo("auroc", "AUROC over all voxels of a volume, mean over volumes", percent=True),
        MetricInfo(
            "auprc_brain",
            "AUPRC over brain-mask voxels of a volume, mean over volumes",
            percent=True,
        ),
        MetricInfo(
            "auroc_brain",
            "AUROC over brain-mask voxels of a volume, mean over volumes",
            percent=True,
        ),
    ]
    for p in FAIR_PROTOCOLS:
        text = _protocol_text(p)
        table.append(
            MetricInfo(f"dice@{p}", f"per-volume Dice, mean over volumes; {text}", percent=True)
        )
        table.append(
            MetricInfo(f"dice_pooled@{p}", f"Dice of all test voxels pooled; {text}", percent=True)
        )
        table.append(
            MetricInfo(
                f"fp_volume_ml@{p}",
                f"predicted anomalous volume (ml) on healthy test scans; {text}",
                direction="lower",
            )
        )
    table.append(
        MetricInfo(
            "dice@oracle",
            "best Dice per test volume over all thresholds, no CC filter (upper bound, not fair)",
            upper_bound=True,
            percent=True,
        )
    )
    table += [
        MetricInfo("l1_lesion", "mean raw |x - x̂| (or raw map) over lesion voxels"),
        MetricInfo(
            "l1_healthy",
            "mean raw |x - x̂| (or raw map) over non-lesion voxels, background included",
            direction="lower",
        ),
        MetricInfo(
            "l1_ratio", "l1_lesion / l1_healthy (aggregate: ratio of the means), paper's l1-ratio"
        ),
    ]
    for name, (lo, hi) in SIZE_BINS_ML.items():
        span = f">= {lo:g} ml" if math.isinf(hi) else f"{lo:g}-{hi:g} ml"
        table.append(
            MetricInfo(
                f"detection_rate_{name}@val-bisection",
                f"fraction of connected lesions of {span} hit by the prediction (pooled); "
                "threshold from val-bisection",
                percent=True,
            )
        )
    quantile = "the 0.99 quantile of the post-processed map over its brain voxels"
    table += [
        MetricInfo("auroc_scan", f"scan-level AUROC: scans with lesions vs the other test scans, each scored by {quantile}",
                   percent=True),
        MetricInfo("auprc_scan", f"scan-level AP (AUPRC): scans with lesions vs the other test scans, each scored by {quantile}",
                   percent=True),
        MetricInfo("auroc_slice", "slice-level AUROC: axial slices with lesion voxels vs the other brain slices of all test "
                   f"scans, each scored by {quantile}", percent=True),
        MetricInfo("auprc_slice", "slice-level AP (AUPRC): axial slices with lesion voxels vs the other brain slices of all "
                   f"test scans, each scored by {quantile}", percent=True),
    ]
    table += [
        MetricInfo("ssim", "SSIM of reconstruction vs input on healthy test scans (data range 1)"),
        MetricInfo("psnr", "PSNR (dB) of reconstruction vs input on healthy test scans"),
        MetricInfo(
            "l1_recon",
            "mean |x - x̂| over all voxels of healthy test scans",
            direction="lower",
        ),
        MetricInfo(
            "entropy_diff",
            "histogram entropy of input minus that of reconstruction, brain voxels (paper's 'KLD'); "
            "signed: positive when the reconstruction's histogram is more concentrated; neither sign is better",
            direction="signed",
        ),
    ]
    return table


#: The catalogue, in display order (aggregates are reported in this order).
METRIC_INFO: dict[str, MetricInfo] = {}
for _info in _metric_table():
    METRIC_INFO[_info.name] = _info
    register_metric(_info.name, description=_info.description)(_info)
del _info


def _crossfit_info(key: str) -> MetricInfo | None:
    """The entry of a cross-fitting metric (``dice@crossfit-bisection@5``): the fair protocol's
    entry with the threshold's provenance said (see :mod:`uadbench.evaluation.crossfit`)."""
    m = re.fullmatch(r"(.+)@crossfit-(bisection|exact)@(\d+)", key)
    base = METRIC_INFO.get(f"{m.group(1)}@val-{m.group(2)}") if m else None
    if m is None or base is None:
        return None
    text = f"threshold from {m.group(3)}-fold cross-fitting over the annotated cases ({m.group(2)})"
    return MetricInfo(key, base.description.rsplit(";", 1)[0] + f"; {text}", base.direction, base.upper_bound, base.percent)


def metric_info(key: str) -> MetricInfo:
    """The catalogue entry of a metric key as it appears in results, e.g. ``"auprc"``,
    ``"dice@val-bisection"``, ``"dice@healthy-fpr@5%"``, ``"fp_volume_ml@val-bisection"``,
    ``"l1_ratio"``, ``"dice@oracle"`` (``upper_bound``).

    Metrics registered by other packages are found when they registered a :class:`MetricInfo`.
    An unknown key raises an error that lists the known ones.
    """
    info = METRIC_INFO.get(key) or _crossfit_info(key)
    if info is not None:
        return info
    registered = METRICS.get(key)  # raises "unknown metric ...; did you mean ...; available: ..."
    if not isinstance(registered, MetricInfo):
        raise UadbenchError(
            f"metric {key!r} is registered as {type(registered).__name__}, not MetricInfo; "
            "register a MetricInfo to give it a direction, upper-bound flag and display unit"
        )
    return registered


__all__ = [
    "ALL_PROTOCOLS",
    "DIRECTIONS",
    "FAIR_PROTOCOLS",
    "METRIC_INFO",
    "MetricInfo",
    "ORACLE",
    "SIZE_BINS_ML",
    "VolumeMetric",
    "metric_info",
    "volume_metric",
    "volume_metrics",
]
