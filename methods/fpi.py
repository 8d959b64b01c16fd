"""FPI: foreign patch interpolation (Tan et al.); a UNet predicts the share of foreign content per pixel.

Paper: Tan, Hou, Batten, Qiu and Kainz, "Detecting outliers with foreign patch interpolation",
MELBA 2022 (arXiv 2011.04197); the MOOD 2020 challenge entry. Original code (TensorFlow 2):
https://github.com/jemtan/FPI (``self_sup_task.py``, ``fpiSubmit.py``). METHOD_SPEC_FEATURES.md §3.

Training, self-supervised on healthy slices only (:mod:`uadbench.data.synthetic`):

1. pair each slice ``x`` of a batch with another slice ``y`` of the batch (a random cyclic shift);
2. draw one axis-aligned square per slice: integer half-width uniform in ``[round(0.05 W),
   round(0.2 W))`` (sides 10-40 % of the image), centre uniform in the central 50 % of each axis
   (the reference's ``core_percent`` for brain);
3. draw the foreign share ``a ~ U(0.05, 0.95)`` per slice and replace the square by ``(1 - a) x + a y``;
4. the target is ``a`` at square pixels where ``x != y`` and 0 elsewhere (the reference's label
   ``1 - alpha`` with its ``alpha`` weighting the original);
5. a network maps the blended slice to one logit per pixel, trained with per-pixel binary
   cross-entropy against the target (Adam, lr 1e-3).

Test time: the sigmoid of the network's output on the clean slice is the anomaly map.

The network, the training loop and the map are :class:`SyntheticAnomalySegmentation`'s, which ``nsa``
shares with its own anomalies.

Why FPI rather than PII (Poisson image interpolation, MICCAI 2021, jemtan/PII): FPI's blend is
closed-form, so a training step costs what a DAE step costs on the CPU (PII solves one sparse
Poisson system per slice and step, the cost its README warns about), and its target is exactly the
blend factor. The gradient-domain (Poisson, mixed-gradient) blend is built and used by ``nsa``.

Deviations from the reference:
- Network: the harness's DAE UNet (:class:`uadbench.nn.dae_unet.DenoisingUNet`, depth 4, 64 filters,
  GroupNorm, skip connections) with a 1x1 logit head, instead of the Wide-ResNet encoder-decoder
  (depth 16, k 4, no skips, L2 5e-4 on the kernels). No weight decay.
- Partners are other slices of the same training batch (each batch holds one random axial slice
  per training volume, so partners come from other subjects, at any slice position); the reference
  exchanges the same box both ways between the same slice of two subjects' volumes.
- Budget: batch 32 for 10,000 steps (UPD's budget for PII on brain MRI, iolag/UPD_study) instead of
  the reference's 50 epochs of 256x256 MOOD slices; the last weights are kept (the reference keeps
  the weights with the lowest loss on one held-out batch).
- The anomaly map is the per-slice network output; the reference's per-volume score (slice means,
  Savitzky-Golay filter, top quartile) is not used (scores are the harness's business).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from uadbench.config import require_positive
from uadbench.data.synthetic import fpi_anomalies
from uadbench.errors import ConfigError
from uadbench.method import AnomalyOutput, FitContext, Method
from uadbench.nn.dae_unet import DenoisingUNet
from uadbench.nn.utils import module_device
from uadbench.registry import register_method
from uadbench.training import train_loop


@dataclass(frozen=True)
class SegmentationNetFields:
    """The network fields of a :class:`SyntheticAnomalySegmentation` config: the DAE UNet's depth and width."""

    depth: int = 4
    base_channels: int = 64


@dataclass(frozen=True)
class FPIConfig(SegmentationNetFields):
    # the anomaly generator (part of the config hash)
    half_width_min: float = 0.05  # patch half-width, fraction of the image side
    half_width_max: float = 0.2
    core: float = 0.5  # patch centres lie in this central fraction of each axis
    alpha_min: float = 0.05  # foreign share a ~ U(alpha_min, alpha_max)
    alpha_max: float = 0.95
    lr: float = 1e-3
    batch_size: int = 32
    steps: int = 10000

    def __post_init__(self) -> None:
        require_positive(self, "depth", "base_channels", "batch_size", "steps")
        if not 0 < self.half_width_min <= self.half_width_max <= 0.5:
            raise ConfigError(f"half_width_min and half_width_max must satisfy 0 < min <= max <= 0.5, "
                              f"got {self.half_width_min} and {self.half_width_max}")
        if not 0 < self.core <= 1:
            raise ConfigError(f"core must be in (0, 1], got {self.core}")
        if not 0 <= self.alpha_min <= self.alpha_max <= 1:
            raise ConfigError(f"alpha_min and alpha_max must satisfy 0 <= min <= max <= 1, got {self.alpha_min} and {self.alpha_max}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def segmentation_loss(model: torch.nn.Module, images: Tensor, target: Tensor) -> Tensor:
    """Per-pixel binary cross-entropy of the network's logits against a soft target, averaged."""
    return F.binary_cross_entropy_with_logits(model(images), target)


class SyntheticAnomalySegmentation(Method):
    """A UNet trained on healthy slices with synthetic anomalies blended in to predict a per-pixel target
    (:func:`segmentation_loss`); the anomaly map is the sigmoid of its output on the clean slice.

    Subclasses define :meth:`anomalies` (the training pairs) and may set ``cpu_anomalies`` (draw the
    anomalies from a CPU generator instead of one on the fit's device) and :meth:`lr_schedule`. The
    Config holds ``depth``, ``base_channels`` (:class:`SegmentationNetFields`), ``lr``, ``batch_size``
    and ``steps``.
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # 64x64 grid: the DAE cpu preset's network and budget
        "cpu": {"base_channels": 8, "batch_size": 16, "steps": 600},
        "smoke": {"depth": 3, "base_channels": 4, "batch_size": 4, "steps": 3},
    }
    # True: the anomaly generator's random draws come from a CPU generator (per-patch draws on the host)
    cpu_anomalies: ClassVar[bool] = False

    def __init__(self, config: Any, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        if min(self.image_shape) < 2**config.depth:
            raise ConfigError(f"image_shape {self.image_shape} is too small for a depth-{config.depth} UNet; "
                              f"both sides must be >= {2**config.depth}")
        self.model = DenoisingUNet(config.depth, config.base_channels)

    @abstractmethod
    def anomalies(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Training pairs (blended, target) for healthy ``images``."""

    def lr_schedule(self, steps: int) -> Callable[[int], float] | None:
        """The learning rate per step (from 1) of a run of ``steps`` steps; None: the constant ``lr``."""
        return None

    def fit(self, train, val, ctx: FitContext) -> None:
        cfg, name = self.config, self.registered_name
        self.model.to(ctx.device).train()
        seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
        synth_gen = (torch.Generator() if self.cpu_anomalies else torch.Generator(device=ctx.device)).manual_seed(seed)
        steps = int(ctx.max_steps if ctx.max_steps is not None else cfg.steps)

        def loss_fn(batch: Tensor, step: int) -> Tensor:
            blended, target = self.anomalies(batch, synth_gen)
            return segmentation_loss(self.model, blended, target)

        train_loop(parameters=self.model.parameters(), loss_fn=loss_fn, train=train, ctx=ctx, steps=cfg.steps,
                   batch_size=cfg.batch_size, lr=cfg.lr, name=name, lr_at=self.lr_schedule(steps), generators=[synth_gen])
        self.model.eval()
        if val is not None:
            x = val.epoch(ctx.generator).to(ctx.device)
            with torch.no_grad():
                blended, target = self.anomalies(x, synth_gen)
                ctx.log_metrics({f"{name}/val_loss": float(segmentation_loss(self.model, blended, target))}, 0)

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        self.model.eval()
        logits = self.model(images.to(module_device(self.model)))
        return AnomalyOutput(anomaly_map=torch.sigmoid(logits).to(images.device))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "image_shape": list(self.image_shape)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.model.eval()


@register_method("fpi")
class ForeignPatchInterpolation(SyntheticAnomalySegmentation):
    """UNet trained to predict the blend factor of foreign patches interpolated into healthy slices (Tan et al. 2022)."""

    Config: ClassVar[type] = FPIConfig

    def anomalies(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Training pairs (blended, target) for healthy ``images`` with this config's generator settings."""
        cfg = self.config
        return fpi_anomalies(images, generator, half_width=(cfg.half_width_min, cfg.half_width_max), core=cfg.core,
                             alpha_range=(cfg.alpha_min, cfg.alpha_max))
