"""Intensity-threshold baseline ("Thresh").

Paper: Meissen et al., "Challenging current semi-supervised anomaly segmentation methods for brain
MRI", BrainLes 2021 (arXiv 2109.06023); used as the "Thresh" row of Behrendt et al. 2023.
Original code: https://github.com/FeliMe/brain_sas_baseline

The anomaly map is the normalised intensity itself: on T2-weighted and FLAIR images many lesions
are hyperintense, so the image is already an anomaly score. On T1-weighted images lesions are
mostly dark: ``invert = true`` scores ``1 - x`` inside the brain.

Deviations from the paper:
- None in the map itself; the harness's common post-processing and thresholds apply as for every
  method (the original tunes its own threshold on a validation set, which the harness's
  ``val-bisection`` protocol does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from uadbench.method import AnomalyOutput, FitContext, Method
from uadbench.registry import register_method


@dataclass(frozen=True)
class ThreshConfig:
    """The threshold baseline has nothing to learn; ``invert`` flips the score for hypointense lesions."""

    invert: bool = False


@register_method("thresh")
class IntensityThreshold(Method):
    """Intensity-threshold baseline: the map is the normalised intensity (bright lesions); invert = true flags dark ones (T1)

    On T1-weighted images lesions are mostly hypointense: set ``overrides = { invert = true }`` on
    the method in a grid (or ``create_method("thresh", invert=True, ...)``) to score ``1 - x``
    inside the brain instead.
    """

    Config = ThreshConfig
    presets = {"paper": {}, "cpu": {}, "smoke": {}}

    def fit(self, train, val, ctx: FitContext) -> None:
        ctx.progress("thresh: nothing to train")

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        amap = (1.0 - images) * (images > 0) if self.config.invert else images.clone()
        return AnomalyOutput(anomaly_map=amap)

    def state_dict(self) -> dict[str, Any]:
        return {"invert": self.config.invert}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if bool(state.get("invert", False)) != self.config.invert:
            raise ValueError("checkpoint was made with a different 'invert' setting")
