"""Noise for the forward diffusion: Gaussian, and the structured simplex noise of AnoDDPM.

Behrendt et al. (cDDPM, arXiv 2312.04215, METHOD_SPEC.md §1.5) noise with the 2D simplex noise of
Wyatt et al. (AnoDDPM, CVPR-W 2022): OpenSimplex gradient noise summed over 6 octaves, amplitude
multiplied by the persistence 0.8 per octave, sampling coordinates ``pixel / 64``, ``/ 32``, ...,
``/ 2``. It is deliberately not normalised (per-image std about 0.5-0.66 at 96x96), and the
reference draws **one field per call, shared by every slice of the batch**.

:func:`opensimplex2d` evaluates OpenSimplex 2D (K. Spencer, 2014) for all points at once: the value
at a point is the sum, over the lattice vertices near it, of ``max(0, 2 - |d|^2)^4 * <g, d>`` with
``g`` one of eight gradients picked by hashing the vertex through a random permutation. Summing over
a fixed neighbourhood of vertices gives exactly the values of the scalar branchy algorithm (only the
vertices it enumerates have a non-zero kernel), with no Python loop over pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from uadbench.errors import ConfigError

NOISE_KINDS = ("simplex", "gaussian")

STRETCH_2D = (1 / math.sqrt(3) - 1) / 2  # -0.2113...: skews (x, y) onto the square lattice
SQUISH_2D = (math.sqrt(3) - 1) / 2  # 0.3660...: maps a lattice vertex back to (x, y)
NORM_2D = 47.0
_GRADIENTS_2D = torch.tensor(
    [[5, 2], [2, 5], [-5, 2], [-2, 5], [5, -2], [2, -5], [-5, -2], [-2, -5]], dtype=torch.float64
)
# Lattice offsets, relative to the skewed cell's base vertex, that can lie within the kernel radius
# of a point of the cell (the four cell corners and the four "extra" vertices of OpenSimplex).
_OFFSETS_2D = ((0, 0), (1, 0), (0, 1), (1, 1), (1, -1), (-1, 1), (2, 0), (0, 2))


def random_permutation(generator: torch.Generator) -> Tensor:
    """A random permutation of 0..255 (the hash table of one noise field)."""
    return torch.randperm(256, generator=generator)


def opensimplex2d(x: Tensor, y: Tensor, perm: Tensor) -> Tensor:
    """OpenSimplex 2D noise at the points ``(x, y)`` (broadcastable float tensors), in float64."""
    x, y = torch.broadcast_tensors(x.double(), y.double())
    perm = perm.to(device=x.device, dtype=torch.long)
    grads = _GRADIENTS_2D.to(x.device)
    offset = (x + y) * STRETCH_2D
    xsb = torch.floor(x + offset).long()
    ysb = torch.floor(y + offset).long()
    value = torch.zeros_like(x)
    for i, j in _OFFSETS_2D:
        xv, yv = xsb + i, ysb + j
        squish = (xv + yv).double() * SQUISH_2D
        dx = x - (xv.double() + squish)
        dy = y - (yv.double() + squish)
        attn = (2 - dx * dx - dy * dy).clamp(min=0)
        g = grads[(perm[(perm[xv & 0xFF] + yv) & 0xFF] & 0x0E) // 2]
        value += attn**4 * (g[..., 0] * dx + g[..., 1] * dy)
    return value / NORM_2D


def simplex_octaves(
    height: int,
    width: int,
    perm: Tensor,
    *,
    octaves: int = 6,
    persistence: float = 0.8,
    frequency: float = 64.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Octave sum of OpenSimplex noise on a (height, width) pixel grid, float64, computed on
    ``device`` (the same values on every device: the permutation decides them).

    Octave k samples at ``pixel / (frequency / 2**k)`` with amplitude ``persistence**k``, as in
    AnoDDPM's ``rand_2D_octaves``; the sum is not rescaled.
    """
    ys = torch.arange(height, dtype=torch.float64, device=device)[:, None]
    xs = torch.arange(width, dtype=torch.float64, device=device)[None, :]
    field = torch.zeros(height, width, dtype=torch.float64, device=device)
    amplitude, freq = 1.0, float(frequency)
    for _ in range(octaves):
        field += amplitude * opensimplex2d(xs / freq, ys / freq, perm)
        freq /= 2
        amplitude *= persistence
    return field


class NoiseSampler(Protocol):
    def __call__(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str | None = None) -> Tensor: ...


@dataclass(frozen=True)
class GaussianNoise:
    """Independent standard normal noise per pixel and sample."""

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        # drawn from the (CPU) generator, so that every device sees the same noise
        return torch.randn(shape, generator=generator).to(device or "cpu")


@dataclass(frozen=True)
class SimplexNoise:
    """Structured simplex noise (AnoDDPM); one field shared by the batch unless ``shared=False``."""

    octaves: int = 6
    persistence: float = 0.8
    frequency: float = 64.0
    shared: bool = True

    def __post_init__(self) -> None:
        if self.octaves < 1 or self.frequency <= 0 or self.persistence <= 0:
            raise ConfigError(
                "simplex noise needs octaves >= 1, frequency > 0 and persistence > 0, got "
                f"octaves={self.octaves}, frequency={self.frequency}, persistence={self.persistence}"
            )

    def field(self, height: int, width: int, generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """One (height, width) float32 field from a fresh random permutation, computed on ``device``."""
        perm = random_permutation(generator)
        return simplex_octaves(
            height, width, perm, octaves=self.octaves, persistence=self.persistence, frequency=self.frequency, device=device
        ).float()

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        *lead, h, w = shape
        if self.shared:
            return self.field(h, w, generator, device).expand(*shape).contiguous()
        n = math.prod(lead)
        return torch.stack([self.field(h, w, generator, device) for _ in range(n)]).reshape(shape)


def create_noise(
    kind: str = "simplex",
    *,
    octaves: int = 6,
    persistence: float = 0.8,
    frequency: float = 64.0,
    shared: bool = True,
) -> NoiseSampler:
    """The noise sampler named ``kind`` ("simplex" or "gaussian")."""
    if kind == "simplex":
        return SimplexNoise(octaves=octaves, persistence=persistence, frequency=frequency, shared=shared)
    if kind == "gaussian":
        return GaussianNoise()
    raise ConfigError(f"unknown noise {kind!r}; valid: {', '.join(NOISE_KINDS)}")
