"""The evaluation protocol: one call turns a method's anomaly maps into every reported number.

:func:`evaluate_dataset` follows the paper's protocol (Behrendt et al., arXiv 2312.04215, as
implemented in the reference code, METHOD_SPEC §4) for every method alike:

1. post-process each map (steps 2-3 of :mod:`uadbench.evaluation.postprocess`: erosion-masking,
   median filter);
2. choose thresholds, each with its provenance (:mod:`uadbench.evaluation.threshold_protocols`):
   ``val-bisection`` / ``val-exact`` on the labelled validation split, ``healthy-fpr@k%`` on
   healthy validation scans, and ``oracle`` (per test volume; an upper bound, never fair);
3. per test volume (:mod:`uadbench.evaluation.volume`): AUPRC / AUROC over all voxels (the paper)
   and over brain voxels, Dice per protocol after the small-component filter (step 4 of the
   post-processing), l1 of the raw residual on lesion vs other voxels, detection rate by lesion
   size; on healthy scans the false-positive volume and the reconstruction quality;
4. aggregate over volumes with per-subject bootstrap 95 % confidence intervals
   (:mod:`uadbench.evaluation.evaluator`, whose :class:`DatasetEvaluator` takes the test volumes
   one at a time), and rank all test scans and their slices by a per-scan and per-slice score for
   the scan- and slice-level detection AUROC / AP (:mod:`uadbench.evaluation.detection`: lesion
   scans and slices with lesion voxels are the positives; the score is the 0.99 quantile of the
   post-processed map over brain voxels).

With few annotated cases, :func:`evaluate_crossfit` (:mod:`uadbench.evaluation.crossfit`) offers
threshold cross-fitting instead of a labelled validation split.

Conventions: a volume "has lesions" when its lesion mask is given and non-empty. Per-volume
metrics that are undefined for a volume (AUPRC without lesions, Dice with empty prediction and
empty target) are left out of that volume's entry and out of the mean.

Maps and masks may be numpy arrays or torch tensors. A map that is a CUDA tensor is post-processed
on its device (:mod:`uadbench.evaluation.torch_postprocess`, same values); everything else runs on
the host.

This module is the protocol's face: the data types (:class:`EvalVolume`, :class:`ThresholdInfo`,
:class:`VolumeResult`, :class:`DatasetEvaluation`, from :mod:`uadbench.evaluation.results`) and
the entry points of the rooms above are re-exported here; the input checks live in
:mod:`uadbench.evaluation.checks`. Each public entry point checks its splits once and works on the
checked copies afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from uadbench.errors import UadbenchError
from uadbench.evaluation.checks import (
    check_disjoint,
    check_n_bootstrap,
    check_order,
    check_split,
    check_validation_splits,
)
from uadbench.evaluation.crossfit import (
    CROSSFIT_SEARCHES,
    crossfit_protocol,
    crossfit_thresholds,
    evaluate_crossfit,
)
from uadbench.evaluation.evaluator import DatasetEvaluator
from uadbench.evaluation.results import DatasetEvaluation, EvalVolume, ThresholdInfo, VolumeResult
from uadbench.evaluation.threshold_protocols import HEALTHY_FPRS, compute_thresholds
from uadbench.evaluation.volume import DETECTION_PROTOCOL, evaluate_volume

#: Version of the protocol's numbers. Bump it with any change that changes a number
#: :func:`evaluate_dataset` produces for some input (here or in post-processing, thresholds,
#: statistics or image quality; the metric functions have ``metrics.METRICS_VERSION``), so that
#: cached evaluations keyed on it are recomputed. Refactors that keep every number do not bump it.
PROTOCOL_VERSION = "1"


def evaluate_dataset(
    test: Sequence[EvalVolume],
    *,
    lesion_val: Sequence[EvalVolume] | None = None,
    healthy_val: Sequence[EvalVolume] | None = None,
    source_names: Mapping[str, str] | None = None,
    order: str = "code",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> DatasetEvaluation:
    """Evaluate a method's maps on one dataset with the harness's protocol.

    ``test``: the test split. ``lesion_val``: labelled validation split of the same dataset
    (enables ``val-bisection`` and ``val-exact``). ``healthy_val``: healthy validation scans
    (enables ``healthy-fpr@1%/5%/10%``). Validation subjects must not appear in ``test``.
    ``source_names`` names the two validation sources in the provenance text. ``order``:
    ``"code"`` (erode, then median; the reference) or ``"paper"`` (median, then erode).
    ``n_bootstrap`` resamples of the test subjects give the 95 % CIs (0: none), drawn with
    ``seed``.
    """
    # 1. check the arguments and each split, once, before any map is processed
    check_order(order)
    check_n_bootstrap(n_bootstrap)
    test = list(test)
    if not test:
        raise UadbenchError("the test split is empty; nothing to evaluate")
    test = check_split(test, "test")
    lesion, healthy = check_validation_splits(lesion_val, healthy_val)
    test_ids = [v.subject_id for v in test]
    check_disjoint(test_ids, [v.subject_id for v in lesion], "lesion_val")
    check_disjoint(test_ids, [v.subject_id for v in healthy], "healthy_val")
    # 2. thresholds from the validation splits
    evaluator = DatasetEvaluator.from_checked(lesion, healthy, source_names, order, n_bootstrap, seed)
    # 3. per-volume metrics, 4. aggregates and confidence intervals
    for vol in test:
        evaluator.add_checked(vol)
    return evaluator.aggregate()


__all__ = [
    "CROSSFIT_SEARCHES",
    "DETECTION_PROTOCOL",
    "DatasetEvaluation",
    "DatasetEvaluator",
    "EvalVolume",
    "HEALTHY_FPRS",
    "PROTOCOL_VERSION",
    "ThresholdInfo",
    "VolumeResult",
    "compute_thresholds",
    "crossfit_protocol",
    "crossfit_thresholds",
    "evaluate_crossfit",
    "evaluate_dataset",
    "evaluate_volume",
]
