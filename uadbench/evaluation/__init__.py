"""The evaluation protocol, owned by the harness and identical for every method.

- :mod:`~uadbench.evaluation.postprocess`: erosion-masking, median filter, component filter;
- :mod:`~uadbench.evaluation.metrics`: AUPRC / AUROC / Dice and the registered metric names;
- :mod:`~uadbench.evaluation.thresholds`: validation bisection, exact optimum, healthy FPR;
- :mod:`~uadbench.evaluation.protocol`: :func:`evaluate_dataset`, the one call the runner makes;
- :mod:`~uadbench.evaluation.stats`: bootstrap CIs and the paired permutation test;
- :mod:`~uadbench.evaluation.reconstruction`: SSIM / PSNR / l1 and the histogram entropy difference.
"""

from __future__ import annotations

from uadbench.evaluation.metrics import (
    ALL_PROTOCOLS,
    FAIR_PROTOCOLS,
    METRIC_INFO,
    compute_auprc,
    compute_auroc,
    compute_dice,
)
from uadbench.evaluation.postprocess import PostprocessSettings, binarize, postprocess_map
from uadbench.evaluation.protocol import (
    DatasetEvaluation,
    DatasetEvaluator,
    EvalVolume,
    ThresholdInfo,
    compute_thresholds,
    evaluate_dataset,
    evaluate_volume,
)
from uadbench.evaluation.reconstruction import reconstruction_quality
from uadbench.evaluation.stats import bootstrap_mean_ci, paired_permutation_test

__all__ = [
    "ALL_PROTOCOLS",
    "DatasetEvaluation",
    "DatasetEvaluator",
    "EvalVolume",
    "FAIR_PROTOCOLS",
    "METRIC_INFO",
    "PostprocessSettings",
    "ThresholdInfo",
    "binarize",
    "bootstrap_mean_ci",
    "compute_auprc",
    "compute_auroc",
    "compute_dice",
    "compute_thresholds",
    "evaluate_dataset",
    "evaluate_volume",
    "paired_permutation_test",
    "postprocess_map",
    "reconstruction_quality",
]
