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
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from uadbench.config import require_positive
from uadbench.data.synthetic import NSASettings, nsa_anomalies
from uadbench.errors import ConfigError
from uadbench.method import AnomalyOutput, FitContext, Method
from uadbench.nn.dae_unet import DenoisingUNet
from uadbench.nn.utils import module_device
from uadbench.registry import register_method
from uadbench.training import train_loop


@dataclass(frozen=True)
class NSAConfig:
    depth: int = 4
    base_channels: int = 64
    # the anomaly generator (part of the config hash; see uadbench.data.synthetic.NSASettings)
    num_patches: int = 3
    width_min: float = 0.03
    width_max: float = 0.4
    gamma_shape: int = 2
    gamma_scale: float = 0.03
    gamma_offset: float = 0.05
    resize_min: float = 0.7
    resize_max: float = 1.3
    min_object: float = 0.7
    min_overlap: float = 0.7
    object_threshold: float = 0.0
    mixed: bool = True
    label_tol: float = 1 / 255
    logistic_k: float = 0.5 * 255
    logistic_x0: float = 4 / 255
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
        names = {f.name for f in fields(NSASettings)}
        return NSASettings(**{k: v for k, v in vars(self).items() if k in names})


@register_method("nsa")
class NaturalSyntheticAnomalies(Method):
    """UNet trained to segment Poisson-blended, resized and shifted patches of other healthy slices (Schlüter et al. 2022)."""

    Config: ClassVar[type] = NSAConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # 64x64 grid: the DAE cpu preset's network and budget
        "cpu": {"base_channels": 8, "batch_size": 16, "steps": 600},
        "smoke": {"depth": 3, "base_channels": 4, "batch_size": 4, "steps": 3},
    }

    def __init__(self, config: NSAConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        if min(self.image_shape) < 2**config.depth:
            raise ConfigError(f"image_shape {self.image_shape} is too small for a depth-{config.depth} UNet; "
                              f"both sides must be >= {2**config.depth}")
        self.model = DenoisingUNet(config.depth, config.base_channels)

    def anomalies(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Training pairs (blended, target) for healthy ``images``; ``generator`` is a CPU generator."""
        return nsa_anomalies(images, generator, self.config.settings())

    def fit(self, train, val, ctx: FitContext) -> None:
        cfg = self.config
        self.model.to(ctx.device).train()
        # the generator runs its per-patch draws on the CPU, as the reference's data loader does
        synth_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=ctx.generator)))
        steps = int(ctx.max_steps if ctx.max_steps is not None else cfg.steps)

        def lr_at(step: int) -> float:  # cosine annealing from lr to final_lr over the run
            return cfg.final_lr + (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * (step - 1) / max(steps, 1))) / 2

        def loss_fn(batch: Tensor, step: int) -> Tensor:
            blended, target = self.anomalies(batch, synth_gen)
            return F.binary_cross_entropy_with_logits(self.model(blended), target)

        train_loop(parameters=self.model.parameters(), loss_fn=loss_fn, train=train, ctx=ctx, steps=cfg.steps,
                   batch_size=cfg.batch_size, lr=cfg.lr, name="nsa", lr_at=lr_at, generators=[synth_gen])
        self.model.eval()
        if val is not None:
            x = val.epoch(ctx.generator).to(ctx.device)
            with torch.no_grad():
                blended, target = self.anomalies(x, synth_gen)
                ctx.log_metrics({"nsa/val_loss": float(F.binary_cross_entropy_with_logits(self.model(blended), target))}, 0)

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
