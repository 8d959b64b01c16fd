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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

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
    "metric_info",
]
