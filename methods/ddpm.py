"""DDPM: unconditioned x0-predicting diffusion model with simplex noise; anomaly map ``|x - x_hat|``.

Paper: the DDPM baseline of Behrendt et al., "Guided Reconstruction with Conditioned Diffusion
Models for Unsupervised Anomaly Detection in Brain MRIs" (arXiv 2312.04215; Computers in Biology
and Medicine 186, 2025, 109660), adapted from Wyatt et al., "AnoDDPM: Anomaly Detection with
Denoising Diffusion Probabilistic Models using Simplex Noise" (CVPR Workshops 2022).
Original code: https://github.com/FinnBehrendt/Conditioned-Diffusion-Models-UAD
(``configs/experiment/cDDPM/DDPM.yaml``, ``src/models/DDPM_2D.py``).

Method (METHOD_SPEC.md §1.2, §1.5, §1.6, §2.2): an ADM-style UNet (128 channels, multipliers
1/2/2, 3 residual blocks per level, attention in the middle block only, FiLM from the time
embedding) predicts x0 from ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with simplex noise ``eps``
(one field per batch), cosine schedule, T = 1000, mean L1 loss. At test time the slice is noised to
``t_test = 500`` (index 499) and reconstructed in one forward pass; with ``ensemble=True`` the
reconstructions from t = 250, 500 and 750 (fresh noise each) are averaged.

Deviations from the paper:
- The ``paper`` preset follows the reference code, not the paper text: lr 1e-4 (the paper says
  1e-5), batch 32, and a budget of 19,200 optimiser steps, inferred from 1600 epochs of one slice
  per training volume (385 IXI volumes // 32 = 12 steps per epoch, METHOD_SPEC.md §7).
- Checkpoint selection on the validation loss is optional (``val_every``; off in the presets),
  and the validation loss uses one fixed slice, t and noise per volume rather than fresh draws.
- Intensity augmentation (the reference's torchio gamma/bias/blur/ghosting) is not done here.
- ``ddim_steps > 0`` replaces the single-step estimate by a DDIM chain (not in the paper).
- The ``cpu`` and ``smoke`` presets shrink the network and the budget; they are not the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from uadbench.diffusion.method import (
    CPU_PRESET,
    SMOKE_PRESET,
    DiffusionConfig,
    DiffusionReconstruction,
    build_process,
    build_unet,
    check_image_shape,
)
from uadbench.diffusion.model import DiffusionModel
from uadbench.method import ReconstructionMethod
from uadbench.registry import register_method


@dataclass(frozen=True)
class DDPMConfig(DiffusionConfig):
    """DDPM baseline: unconditioned UNet, whole-image simplex noising, no ensemble by default."""


@register_method("ddpm")
class DDPM(DiffusionReconstruction, ReconstructionMethod):
    """Unconditioned DDPM with simplex noise and single-step x0 reconstruction (AnoDDPM-style)."""

    Config: ClassVar[type] = DDPMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu": CPU_PRESET, "smoke": SMOKE_PRESET}

    def __init__(self, config: DDPMConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        check_image_shape(self.image_shape, config)
        self.model = DiffusionModel(build_unet(config), build_process(config))
