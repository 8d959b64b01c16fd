"""pDDPM: patched DDPM; one box of a grid is noised and reconstructed at a time.

Paper: Behrendt et al., "Patched Diffusion Models for Unsupervised Anomaly Detection in Brain MRI"
(MIDL 2023, PMLR 227), the pDDPM baseline of Behrendt et al., "Guided Reconstruction with
Conditioned Diffusion Models for Unsupervised Anomaly Detection in Brain MRIs" (arXiv 2312.04215).
Original code: https://github.com/FinnBehrendt/patched-Diffusion-Models-UAD and, as configured for
the cDDPM paper, https://github.com/FinnBehrendt/Conditioned-Diffusion-Models-UAD
(``configs/experiment/cDDPM/DDPM_patched.yaml``, ``src/models/DDPM_2D_patched.py``).

Method (METHOD_SPEC.md §2.3): the DDPM of :mod:`uadbench.methods.ddpm` with a patch noising
strategy. The slice is split into a 2x2 grid of non-overlapping boxes (48x48 at 96x96). In
training one random box per slice is noised, the rest stays clean, and the network's output outside
the box is replaced by the clean image, so the L1 loss (a mean over all pixels) comes from the box
only. At test time each box is noised in turn with the same noise field at index 499 and
reconstructed in its own forward pass; the predicted boxes are pasted together.

Deviations from the paper:
- The ``paper`` preset follows the reference code: lr 1e-4 (the paper says 1e-5), batch 32, and
  19,200 optimiser steps inferred from 1600 epochs (METHOD_SPEC.md §7).
- The box size is given as a grid (``patch_grid=2``), so it scales with the image (48 px at 96 px,
  32 px on the 64x64 cpu grid) instead of a fixed 48 px.
- ``ensemble=True`` (the paper's pDDPM+ENS row) averages the patched reconstructions from
  t = 250/500/750; the released code has no pDDPM ensemble.
- No checkpoint selection by default (``val_every``), no intensity augmentation; ``ddim_steps > 0``
  is an extension; the ``cpu``/``smoke`` presets are small.
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
from uadbench.diffusion.regions import GridPatches
from uadbench.errors import ConfigError
from uadbench.method import ReconstructionMethod
from uadbench.registry import register_method


@dataclass(frozen=True)
class PDDPMConfig(DiffusionConfig):
    patch_grid: int = 2  # boxes per side; a 2x2 grid of 48-pixel boxes at 96x96

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_grid < 1:
            raise ConfigError(f"patch_grid must be a positive integer, got {self.patch_grid}")


@register_method("pddpm")
class PatchedDDPM(DiffusionReconstruction, ReconstructionMethod):
    """DDPM that noises and reconstructs one box of a 2x2 grid at a time (pDDPM)."""

    Config: ClassVar[type] = PDDPMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu": CPU_PRESET, "smoke": SMOKE_PRESET}

    def __init__(self, config: PDDPMConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        check_image_shape(self.image_shape, config)
        strategy = GridPatches(config.patch_grid)
        strategy.boxes(*self.image_shape)  # validates the grid against the image size
        self.model = DiffusionModel(build_unet(config), build_process(config, strategy))
