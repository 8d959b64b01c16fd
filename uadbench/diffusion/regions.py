"""Noised regions: the noising strategy says which part of an image the forward diffusion noises.

A strategy answers two questions. In training: which region of each slice is noised (the rest stays
clean, the network's output outside it is replaced by the clean image, so the loss comes from the
region only). At test time: which regions are denoised in turn, each pass pasting its region into the
reconstruction. ``WholeImage`` is the plain DDPM / cDDPM; ``GridPatches`` is the patched DDPM
(pDDPM, Behrendt et al., MIDL 2023; METHOD_SPEC.md §2.3), whose regions are the boxes of a
``grid x grid`` partition of the slice (a 2x2 grid of 48-pixel boxes at 96x96).

Regions are float masks of shape (B, 1, H, W) (1 = noised); ``None`` means the whole image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from uadbench.errors import ConfigError


def box_masks(boxes: list[tuple[int, int, int, int]], height: int, width: int) -> Tensor:
    """(len(boxes), 1, H, W) float masks, 1 inside each (top, bottom, left, right) box."""
    masks = torch.zeros(len(boxes), 1, height, width)
    for k, (top, bottom, left, right) in enumerate(boxes):
        masks[k, :, top:bottom, left:right] = 1
    return masks


def composite(inside: Tensor, outside: Tensor, region: Tensor | None) -> Tensor:
    """``inside`` where ``region`` is 1, ``outside`` elsewhere (``inside`` when region is None)."""
    if region is None:
        return inside
    return region * inside + (1 - region) * outside


class NoisingStrategy(ABC):
    @abstractmethod
    def train_region(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor | None:
        """The region noised for each sample of a training batch of ``shape``."""

    @abstractmethod
    def test_regions(self, shape: tuple[int, ...]) -> list[Tensor | None]:
        """Non-overlapping regions, covering the image, denoised one pass each at test time."""


@dataclass(frozen=True)
class WholeImage(NoisingStrategy):
    """Noise and reconstruct the whole slice in one pass."""

    def train_region(self, shape, generator):
        return None

    def test_regions(self, shape):
        return [None]


@dataclass(frozen=True)
class GridPatches(NoisingStrategy):
    """Noise one box of a ``grid x grid`` partition; reconstruct box by box (pDDPM)."""

    grid: int = 2

    def __post_init__(self) -> None:
        if self.grid < 1:
            raise ConfigError(f"patch grid must be a positive integer, got {self.grid}")

    def _edges(self, size: int) -> list[int]:
        if size < self.grid:
            raise ConfigError(f"image side {size} is smaller than the patch grid {self.grid}")
        return [round(k * size / self.grid) for k in range(self.grid + 1)]

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(top, bottom, left, right) of every box, row by row."""
        ys, xs = self._edges(height), self._edges(width)
        return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(self.grid) for j in range(self.grid)]

    def box_masks(self, height: int, width: int) -> Tensor:
        """(grid*grid, 1, H, W) float masks, one per box."""
        return box_masks(self.boxes(height, width), height, width)

    def train_region(self, shape, generator):
        b, _, h, w = shape
        which = torch.randint(self.grid * self.grid, (b,), generator=generator)
        return self.box_masks(h, w)[which]

    def test_regions(self, shape):
        b, _, h, w = shape
        return [m.expand(b, 1, h, w) for m in self.box_masks(h, w)]
