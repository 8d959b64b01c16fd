"""Which metrics the tables show, their titles, and which of them are ranked.

The leaderboard's metric columns (:data:`TABLE_METRICS`) are the fair ones, then the upper bound
(never bold, never ranked); the shift tables show :data:`SHIFT_METRICS` and place methods by
:data:`PLACE_METRICS`. A metric's direction, unit and arrow come from the evaluation catalogue
(:func:`uadbench.evaluation.metrics.metric_info`).
"""

from __future__ import annotations

from uadbench.errors import UadbenchError
from uadbench.evaluation.metrics import MetricInfo, metric_info

__all__ = ["COST", "PLACE_METRICS", "RATIOS", "SHIFT_METRICS", "TABLE_METRICS", "UNRANKED", "describe", "metric_title"]

_TITLES = {
    "auprc": "AUPRC",
    "auroc": "AUROC",
    "dice@val-bisection": "Dice@val-bisection",
    "dice@val-exact": "Dice@val-exact",
    "dice@healthy-fpr@5%": "Dice@healthy-fpr@5%",
    "fp_volume_ml@val-bisection": "FP ml on healthy@val-bisection",
    "l1_ratio": "l1-ratio",
    "dice@oracle": "Dice@oracle (upper bound)",
}
#: The leaderboard's metric columns: the fair ones, then the upper bound (never bold, never ranked).
TABLE_METRICS = tuple(_TITLES)
#: The metrics of the shift tables.
SHIFT_METRICS = ("auprc", "auroc", "dice@val-bisection", "dice@healthy-fpr@5%", "fp_volume_ml@val-bisection", "entropy_diff")
#: The shift tables' metrics that set a method's place (the lesion metrics; the healthy false
#: positives and the entropy difference are shown beside them, not ranked).
PLACE_METRICS = SHIFT_METRICS[:4]
# titles of shift-table and subgroup metrics the leaderboard does not show
_SHIFT_TITLES = {"entropy_diff": "Entropy diff", "fp_volume_ml@healthy-fpr@5%": "FP ml on healthy@healthy-fpr@5%"}
#: Shown without a best: the entropy difference is signed, and neither sign is better.
UNRANKED = ("entropy_diff",)
#: Metrics aggregated as a ratio of sums over subjects: (numerator, denominator) per-volume metrics.
RATIOS = {"l1_ratio": ("l1_lesion", "l1_healthy")}
#: The cost a record carries, shown as cell metrics ``cost.<name>`` in the tidy frame.
COST = ("num_parameters", "train_seconds", "seconds_per_volume")


def metric_title(key: str) -> str:
    """A metric's column title (``dice@oracle`` says it is an upper bound)."""
    return _TITLES.get(key, _SHIFT_TITLES.get(key, key))


def describe(key: str) -> MetricInfo:
    """The catalogue entry of ``key``; a metric the catalogue does not know is higher-is-better."""
    try:
        return metric_info(key)
    except UadbenchError:
        return MetricInfo(key, key)
