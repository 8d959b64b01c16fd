"""NSA: natural synthetic anomalies (Schlüter et al.); a UNet predicts where Poisson-blended patches changed a slice.

Paper: Schlüter, Tan, Hou and Kainz, "Natural Synthetic Anomalies for Self-Supervised Anomaly
Detection and Localization", ECCV 2022 (arXiv 2109.15222). Original code:
https://github.com/hmsch/natural-synthetic-anomalies (``self_sup_data/self_sup_tasks.py``,
``train_chest_xray.py``, ``model/resnet.py``). METHOD_SPEC_FEATURES.md §4. The paper evaluates on
MVTec AD and chest X-rays; this follows the chest-X-ray setting, which MedIAnomaly
(caiyu6666/MedIAnomaly) also runs on brain MRI (``Shift-Intensity-M``).

Training, self-supervised on healthy slices only (:func:`uadbench.data.synthetic.nsa_anomalies`):

1. pair each slice with another slice of the batch (the source);
2. up to 3 patches (the first always, each further one with probability 1/2): half-widths per axis
   ``(0.05 + Gamma(2, 0.03)) * side`` clipped to 3-40 % of the side; the source box must be more
   than 70 % object (the brain); the patch is resized by ``N(1, 0.5)`` clipped to [0.7, 1.3];
   its destination is random, with more than 70 % of the patch's object on the slice's object;
3. the patch is Poisson-blended into the slice with mixed gradients (``cv2.MIXED_CLONE``'s rule);
4. the target is the logistic-intensity label: pixels whose intensity changed by more than 1/255
   (5x5 median), ``1 / (1 + exp(-k (d - x0)))`` of the disk-median-filtered change ``d``, with the
   chest-X-ray ``(k, x0) = (1/2, 4)`` in uint8 units (127.5 and 4/255 here);
5. a network maps the blended slice to one logit per pixel, trained with per-pixel binary
   cross-entropy (Adam, lr 1e-3 with cosine annealing to 1e-6).

Test time: the sigmoid of the network's output on the clean slice is the anomaly map.

Deviations from the reference:
- Network: the harness's DAE UNet (:class:`uadbench.nn.dae_unet.DenoisingUNet`, depth 4, 64 filters,
  skip connections) with a 1x1 logit head, instead of the from-scratch ResNet-18 encoder with a
  transposed-convolution decoder and no skip connections.
- Object: ``x > 0`` (the brain after the harness's normalisation, which zeroes the background),
  cleaned by the same 7x7 median, instead of ``|I - 0| > 20`` on uint8 chest X-rays.
- Blending: a conjugate-gradient solve of the 5-point Poisson equation on the patch box without its
  outer pixel ring, in float intensities clipped to [0, 1], instead of OpenCV's ``seamlessClone`` on
  uint8 images (same guidance rule, no quantisation).
- Partners are other slices of the same training batch (other subjects, any slice position).
- Resizing is bilinear without antialiasing (``cv2.resize``'s default is bilinear as well); the
  object mask is resized by nearest neighbour.
- Budget and augmentation: batch 64 (the reference's) for 10,000 steps, no rotation or crops (the
  harness's slices are registered); the reference trains 240 epochs of 224x224 crops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor

from uadbench.config import require_positive
from uadbench.data.synthetic import NSAPatchSettings, NSASettings, nsa_anomalies
from uadbench.errors import ConfigError
from uadbench.methods.fpi import SegmentationNetFields, SyntheticAnomalySegmentation
from uadbench.registry import register_method


@dataclass(frozen=True)
class NSAConfig(NSAPatchSettings, SegmentationNetFields):
    """The network (depth, base_channels), the anomaly generator's fields (part of the config hash; see
    :class:`uadbench.data.synthetic.NSASettings`) and the training budget."""

    lr: float = 1e-3
    final_lr: float = 1e-6
    batch_size: int = 64
    steps: int = 10000

    def __post_init__(self) -> None:
        require_positive(self, "depth", "base_channels", "batch_size", "steps")
        if not 0 <= self.final_lr <= self.lr:
            raise ConfigError(f"lr and final_lr must satisfy 0 <= final_lr <= lr, got {self.lr} and {self.final_lr}")
        self.settings()  # validates the generator fields

    def settings(self) -> NSASettings:
        names = {f.name for f in fields(NSAPatchSettings)}
        return NSASettings(**{k: v for k, v in vars(self).items() if k in names})


@register_method("nsa")
class NaturalSyntheticAnomalies(SyntheticAnomalySegmentation):
    """UNet trained to segment Poisson-blended, resized and shifted patches of other healthy slices (Schlüter et al. 2022)."""

    Config: ClassVar[type] = NSAConfig
    # the generator runs its per-patch draws on the CPU, as the reference's data loader does
    cpu_anomalies: ClassVar[bool] = True

    def anomalies(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Training pairs (blended, target) for healthy ``images``; ``generator`` is a CPU generator."""
        return nsa_anomalies(images, generator, self.config.settings())

    def lr_schedule(self, steps: int) -> Callable[[int], float]:
        """Cosine annealing from ``lr`` to ``final_lr`` over the run."""
        cfg = self.config

        def lr_at(step: int) -> float:
            return cfg.final_lr + (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * (step - 1) / max(steps, 1))) / 2

        return lr_at
