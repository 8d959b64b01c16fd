"""THOR: implicit guidance of the reverse chain towards the input outside the anomalies; the map is
the harmonic mean of the residuals along the chain.

Paper: Bercea, Wiestler, Rueckert, Schnabel, "Diffusion Models with Implicit Guidance for Medical
Anomaly Detection" (arXiv 2403.08464, MICCAI 2024). Original code:
https://github.com/ci-ber/THOR_DDPM (``model_zoo/ddpm.py::sample_from_image_interpol``,
``get_thor_anomaly``, ``get_region_anomaly_mask``; ``projects/thor/configs/thor_simplex.yaml``).
METHOD_SPEC_DIFFUSION.md §1, §3.

THOR trains nothing here: it reuses the grid's fitted ``ddpm`` (``Method.dependencies``), like
``anoddpm`` (:class:`~uadbench.methods.anoddpm.DiffusionChainMethod`). Per batch of slices x in [0, 1]:

1. Draw one noise field n (simplex shared by the batch, or Gaussian) and noise x to index
   ``t_start - 1`` (timesteps counted from 1 like the DDPM's ``t_test``).
2. Reverse chain to index 0: the DDPM's x0 estimate (clamped), an ancestral step with the posterior
   variance and a fresh draw of the same noise kind.
3. At the indices of ``map_at`` and ``harmonise_at``: the residual ``r = |x0_hat - x|`` in [0, 1],
   divided by its maximum over the slice (``normalise = "image"``, the reference since its PR #8),
   is kept as ``m``.
4. At the indices of ``harmonise_at``: the region mask ``m_reg = clip((dilate(close(m)) + m) / 2, 0, 1)``
   (grey closing then grey dilation with a ``kernel`` x ``kernel`` window, edges replicated), the
   blend ``x' = clip(m_reg x0_hat + (1 - m_reg) x, 0, 1)``, and the chain continues from
   ``q_sample(x', n)`` re-noised with the **same** field n.
5. The map is the pixel-wise harmonic mean of the kept ``m`` (a pixel that is 0 at any kept index
   is 0), clipped to [0, 0.999]; the reconstruction is the chain's end.

Deviations from the paper:
- The network is the project's DDPM: an x0 predictor trained with single-step L1 on the cosine
  schedule and simplex noise (THOR: an eps predictor on the linear schedule, MONAI UNet).
- The reference's simplex timesteps (t_s = 250, harmonisation at 200/150/100/50, maps every 50) are
  moved to the cosine indices with the same alpha_bar: 481, 393/300/203/103 and 481/393/300/203/103/0
  (``t_start = 482``, ``harmonise_at = (394, 301, 204, 104)``, ``map_at = (482, 394, 301, 204, 104, 1)``
  counted from 1). With ``sample_steps > 0`` (the ``cpu`` and ``smoke`` presets) each of them snaps to
  the nearest visited index.
- No LPIPS: the reference multiplies the residual by a spatial LPIPS map (SqueezeNet, Gaussian-
  smoothed); its weights would have to be downloaded, so ``m`` is the normalised residual alone.
- Re-noising goes to the level of the index the chain continues from (the reference re-noises at t
  and then steps from t - 1, one level off).
- The blend is done and clamped in [0, 1] (the code of the paper's time; the reference HEAD clamps
  [-1, 1] images to [0, 1], which clips the background).
- ``kernel = 11`` at 96 x 96 stands for the reference's 13 at 128 x 128; the ``cpu`` preset (64 x 64)
  uses 7, ``smoke`` 3.
- ``normalise = "none"`` keeps the raw residuals (comparable between the slices of a volume); not
  in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from uadbench.diffusion.sampling import ChainStep, StepHook
from uadbench.errors import ConfigError
from uadbench.method import AnomalyOutput
from uadbench.methods.anoddpm import AnoDDPMConfig, DiffusionChainMethod
from uadbench.registry import register_method

NORMALISATIONS = ("image", "none")


def grey_dilation(x: Tensor, size: int) -> Tensor:
    """Maximum over a ``size`` x ``size`` window (odd), edges replicated: scipy's ``grey_dilation``
    with ``mode="nearest"`` on each (B, 1, H, W) slice."""
    pad = size // 2
    return F.max_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size, stride=1)


def grey_erosion(x: Tensor, size: int) -> Tensor:
    """Minimum over a ``size`` x ``size`` window (odd), edges replicated."""
    return -grey_dilation(-x, size)


def region_mask(m: Tensor, size: int) -> Tensor:
    """THOR's ``get_region_anomaly_mask``: ``clip((dilate(close(m)) + m) / 2, 0, 1)``."""
    closed = grey_erosion(grey_dilation(m, size), size)
    return ((grey_dilation(closed, size) + m) / 2).clamp(0, 1)


def harmonic_mean(maps: list[Tensor]) -> Tensor:
    """Pixel-wise harmonic mean of non-negative maps; 0 wherever any map is 0 (scipy's ``hmean``)."""
    stacked = torch.stack(maps).double()
    zero = (stacked <= 0).any(dim=0)
    mean = len(maps) / (1 / stacked.clamp(min=1e-300)).sum(dim=0)
    return torch.where(zero, torch.zeros_like(mean), mean).to(maps[0].dtype)


def _normalised(r: Tensor, how: str) -> Tensor:
    if how == "none":
        return r
    peak = r.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(peak > 0, r / peak.clamp(min=1e-12), torch.zeros_like(r))


def _snap(wanted: tuple[int, ...], visited: tuple[int, ...]) -> set[int]:
    """The visited index nearest to each wanted index (ties to the larger one)."""
    return {min(visited, key=lambda v: (abs(v - w), -v)) for w in wanted}


@dataclass(frozen=True)
class THORConfig(AnoDDPMConfig):
    """THOR's simplex brain settings moved to the cosine schedule (timesteps counted from 1)."""

    t_start: int = 482
    variance: str = "small"
    harmonise_at: tuple[int, ...] = (394, 301, 204, 104)
    map_at: tuple[int, ...] = (482, 394, 301, 204, 104, 1)
    kernel: int = 11
    normalise: str = "image"

    def __post_init__(self) -> None:
        object.__setattr__(self, "harmonise_at", tuple(int(t) for t in self.harmonise_at))
        object.__setattr__(self, "map_at", tuple(int(t) for t in self.map_at))
        super().__post_init__()
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"kernel must be a positive odd integer, got {self.kernel}")
        if self.normalise not in NORMALISATIONS:
            raise ConfigError(f"unknown normalise {self.normalise!r}; valid: {', '.join(NORMALISATIONS)}")
        for name in ("harmonise_at", "map_at"):
            bad = [t for t in getattr(self, name) if not 1 <= t <= self.t_start]
            if bad:
                raise ConfigError(f"{name} must hold timesteps in [1, t_start={self.t_start}], got {bad}")
        if not self.map_at and not self.harmonise_at:
            raise ConfigError("THOR needs at least one timestep in map_at or harmonise_at to build its map")

    def kept_indices(self) -> tuple[set[int], set[int]]:
        """(indices whose residual is kept, indices where the chain is harmonised), on the visited indices."""
        visited = self.indices
        harmonise = _snap(tuple(t - 1 for t in self.harmonise_at), visited) - {0}
        return _snap(tuple(t - 1 for t in (*self.map_at, *self.harmonise_at)), visited), harmonise


@register_method("thor")
class THOR(DiffusionChainMethod):
    """Implicitly guided reverse chain on a fitted DDPM; harmonic mean of the residuals (Bercea et al. 2024)."""

    Config: ClassVar[type] = THORConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {"base_preset": "cpu", "sample_steps": 8, "kernel": 7},
        "smoke": {"base_preset": "smoke", "sample_steps": 3, "kernel": 3},
    }
    config: THORConfig

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        cfg = self.config
        x = images.float()
        keep, harmonise = cfg.kept_indices()
        maps: list[Tensor] = []

        def make_hook(noise: Tensor) -> StepHook:
            clean = x.to(noise.device)

            def guide(step: ChainStep, x_prev: Tensor, x0_hat: Tensor) -> Tensor:
                if step.index not in keep:
                    return x_prev
                restored = (x0_hat + 1) / 2
                m = _normalised((restored - clean).abs(), cfg.normalise)
                maps.append(m)
                if step.index not in harmonise or step.prev_index is None:
                    return x_prev
                m_reg = region_mask(m.clamp(0, 1), cfg.kernel)
                blended = (m_reg * restored + (1 - m_reg) * clean).clamp(0, 1) * 2 - 1
                a = step.alpha_bar_prev  # re-noise with the first field to the level the chain continues from
                return math.sqrt(a) * blended + math.sqrt(1 - a) * noise

            return guide

        recon = self.run_chain(x, generator, make_hook)
        amap = harmonic_mean(maps).clamp(0, 0.999)  # maps is never empty: map_at or harmonise_at is not
        return AnomalyOutput(anomaly_map=amap.to(x.device, x.dtype), reconstruction=recon)
