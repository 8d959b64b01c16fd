"""Noise schedules: the cumulative signal fraction alpha_bar_t for t = 0 .. T-1.

Behrendt et al. (cDDPM, arXiv 2312.04215) do not state the schedule in the paper; the reference
code uses the cosine schedule of Nichol & Dhariwal (2021) with s = 0.008, betas clipped at 0.999
and T = 1000 (METHOD_SPEC.md §1.5). That gives alpha_bar = 0.847 / 0.494 / 0.144 at the indices
249 / 499 / 749 used by the test-time ensemble.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from uadbench.errors import ConfigError

SCHEDULES = ("cosine", "linear")


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """beta_t = 1 - f(t+1)/f(t) with f(t) = cos^2(((t/T) + s) / (1 + s) * pi/2), float64."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def linear_betas(timesteps: int) -> Tensor:
    """The linear schedule of Ho et al. (2020), rescaled to ``timesteps`` steps, float64."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


@dataclass(frozen=True)
class NoiseSchedule:
    """alpha_bar_t of a discrete diffusion with ``timesteps`` steps (indices 0 .. T-1)."""

    alphas_cumprod: Tensor  # (T,) float64

    @classmethod
    def create(cls, kind: str = "cosine", timesteps: int = 1000) -> NoiseSchedule:
        if timesteps < 1:
            raise ConfigError(f"timesteps must be at least 1, got {timesteps}")
        if kind == "cosine":
            betas = cosine_betas(timesteps)
        elif kind == "linear":
            betas = linear_betas(timesteps)
        else:
            raise ConfigError(f"unknown noise schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
        return cls(torch.cumprod(1 - betas, dim=0))

    @property
    def timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def signal(self, t: Tensor) -> Tensor:
        """sqrt(alpha_bar_t) as float32 on t's device, shape of t."""
        return self.alphas_cumprod.to(t.device)[t].sqrt().float()

    def noise_scale(self, t: Tensor) -> Tensor:
        """sqrt(1 - alpha_bar_t) as float32 on t's device, shape of t."""
        return (1 - self.alphas_cumprod.to(t.device)[t]).sqrt().float()

    def check_index(self, t: int, what: str = "timestep index") -> int:
        if not 0 <= int(t) < self.timesteps:
            raise ConfigError(f"{what} must lie in [0, {self.timesteps - 1}], got {t}")
        return int(t)
