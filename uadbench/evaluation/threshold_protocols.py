"""The fair threshold protocols: thresholds chosen on validation splits, each with its provenance.

- ``val-bisection`` / ``val-exact``: on the pooled post-processed maps of the labelled validation
  split (the reference's 10-step bisection, and the exact pooled-Dice optimum);
- ``healthy-fpr@1%/5%/10%``: on the brain voxels of healthy validation scans (no labels needed).

The searches themselves are in :mod:`uadbench.evaluation.thresholds`; this module applies them to
the validation splits and says where each threshold came from (:class:`ThresholdInfo`). The
per-test-volume ``oracle`` is not a threshold protocol: it is the best Dice of each volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uadbench.evaluation.checks import check_validation_splits
from uadbench.evaluation.metrics import pooled_ranked_counts
from uadbench.evaluation.results import EvalVolume, ThresholdInfo
from uadbench.evaluation.thresholds import bisection_threshold, exact_threshold, fpr_threshold
from uadbench.evaluation.volume import SettingsCache, processed_map

HEALTHY_FPRS: dict[str, float] = {
    "healthy-fpr@1%": 0.01,
    "healthy-fpr@5%": 0.05,
    "healthy-fpr@10%": 0.10,
}


def compute_thresholds(
    *,
    lesion_val: Sequence[EvalVolume] | None = None,
    healthy_val: Sequence[EvalVolume] | None = None,
    source_names: Mapping[str, str] | None = None,
    order: str = "code",
) -> dict[str, ThresholdInfo]:
    """Fair thresholds (val-bisection, val-exact, healthy-fpr@k%) with their provenance.

    Protocols whose data is missing (None or empty) are absent from the result.
    """
    lesion, healthy = check_validation_splits(lesion_val, healthy_val)
    return thresholds_checked(lesion, healthy, source_names, order)


def thresholds_checked(
    lesion_val: Sequence[EvalVolume],
    healthy_val: Sequence[EvalVolume],
    source_names: Mapping[str, str] | None,
    order: str,
) -> dict[str, ThresholdInfo]:
    """:func:`compute_thresholds` on checked splits."""
    names = dict(source_names or {})
    settings = SettingsCache(order)
    out: dict[str, ThresholdInfo] = {}
    if lesion_val:
        counts = pooled_ranked_counts(
            (processed_map(v, settings(v.spacing)), v.lesion_mask) for v in lesion_val
        )
        source = f"{names.get('lesion_val', 'lesion validation split')} ({len(lesion_val)} volumes)"
        bis = bisection_threshold(counts)
        ex = exact_threshold(counts)
        out["val-bisection"] = ThresholdInfo(
            "val-bisection",
            bis.value,
            source,
            len(lesion_val),
            {"val_pooled_dice": bis.score},
        )
        out["val-exact"] = ThresholdInfo(
            "val-exact", ex.value, source, len(lesion_val), {"val_pooled_dice": ex.score}
        )
    if healthy_val:
        counts = pooled_ranked_counts(
            (
                processed_map(v, settings(v.spacing))[np.asarray(v.brain_mask, dtype=bool)],
                np.zeros(int(np.count_nonzero(v.brain_mask)), dtype=bool),
            )
            for v in healthy_val
        )
        n_vox = counts.n_neg
        source = (
            f"{names.get('healthy_val', 'healthy validation scans')} ({len(healthy_val)} volumes, "
            f"{n_vox} brain voxels)"
        )
        for protocol, rate in HEALTHY_FPRS.items():
            res = fpr_threshold(counts, rate)
            out[protocol] = ThresholdInfo(
                protocol, res.value, source, len(healthy_val), {"healthy_val_fpr": res.score}
            )
    return out


__all__ = ["HEALTHY_FPRS", "compute_thresholds", "thresholds_checked"]
