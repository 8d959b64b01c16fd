"""The evaluation protocol, owned by the harness and identical for every method.

- :mod:`~uadbench.evaluation.protocol`: :func:`evaluate_dataset`, the one call the runner makes
  (and the face that re-exports the rooms below);
- :mod:`~uadbench.evaluation.postprocess`: erosion-masking, median filter, component filter;
- :mod:`~uadbench.evaluation.metrics`: AUPRC / AUROC / Dice from ranked counts;
- :mod:`~uadbench.evaluation.catalogue`: every reported metric, its direction and unit (registered);
- :mod:`~uadbench.evaluation.thresholds`: validation bisection, exact optimum, healthy FPR searches;
- :mod:`~uadbench.evaluation.threshold_protocols`: the fair thresholds of the validation splits;
- :mod:`~uadbench.evaluation.volume`: every metric of one test volume;
- :mod:`~uadbench.evaluation.detection`: scan- and slice-level AUROC / AP of a per-scan score;
- :mod:`~uadbench.evaluation.evaluator`: :class:`DatasetEvaluator`, aggregates and their CIs;
- :mod:`~uadbench.evaluation.crossfit`: threshold cross-fitting over a few annotated cases;
- :mod:`~uadbench.evaluation.results`: the data types (:class:`EvalVolume`, ...) and their JSON form;
- :mod:`~uadbench.evaluation.checks`: the input checks (volumes, splits, disjointness);
- :mod:`~uadbench.evaluation.stats`: bootstrap CIs and the paired permutation test;
- :mod:`~uadbench.evaluation.image_quality`: SSIM / PSNR / l1 and the histogram entropy difference;
- :mod:`~uadbench.evaluation.torch_postprocess`: post-processing of maps still on a GPU (torch).
"""

from __future__ import annotations

from uadbench.evaluation.catalogue import VolumeMetric, volume_metric, volume_metrics
from uadbench.evaluation.image_quality import reconstruction_quality
from uadbench.evaluation.metrics import (
    ALL_PROTOCOLS,
    FAIR_PROTOCOLS,
    METRIC_INFO,
    METRICS_VERSION,
    MetricInfo,
    compute_auprc,
    compute_auroc,
    compute_dice,
    metric_info,
)
from uadbench.evaluation.postprocess import PostprocessSettings, binarize, postprocess_map
from uadbench.evaluation.protocol import (
    PROTOCOL_VERSION,
    DatasetEvaluator,
    compute_thresholds,
    evaluate_dataset,
    evaluate_volume,
)
from uadbench.evaluation.results import DatasetEvaluation, EvalVolume, ThresholdInfo, VolumeResult
from uadbench.evaluation.stats import bootstrap_mean_ci, paired_permutation_test

__all__ = [
    "ALL_PROTOCOLS",
    "DatasetEvaluation",
    "DatasetEvaluator",
    "EvalVolume",
    "FAIR_PROTOCOLS",
    "METRICS_VERSION",
    "METRIC_INFO",
    "MetricInfo",
    "PROTOCOL_VERSION",
    "PostprocessSettings",
    "ThresholdInfo",
    "VolumeMetric",
    "VolumeResult",
    "binarize",
    "bootstrap_mean_ci",
    "compute_auprc",
    "compute_auroc",
    "compute_dice",
    "compute_thresholds",
    "evaluate_dataset",
    "evaluate_volume",
    "metric_info",
    "paired_permutation_test",
    "postprocess_map",
    "reconstruction_quality",
    "volume_metric",
    "volume_metrics",
]
