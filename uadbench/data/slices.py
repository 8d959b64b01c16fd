"""Slice datasets: what a method's ``fit`` receives (images only, never masks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor


class SliceDataset:
    """Axial slices of preprocessed healthy volumes, as a (N, Z, 1, H, W) float32 tensor.

    Training draws one uniformly random axial slice per volume per visit, volumes in a random
    order each epoch, as the reference implementation does; evaluation iterates every slice.
    """

    def __init__(self, images: Tensor | np.ndarray | Sequence[np.ndarray], subject_ids: Sequence[str] = ()):
        if isinstance(images, (list, tuple)):
            images = np.stack([np.asarray(v, dtype=np.float32) for v in images])
        tensor = torch.as_tensor(np.asarray(images, dtype=np.float32) if isinstance(images, np.ndarray) else images)
        if tensor.ndim != 4:
            raise ValueError(f"expected volumes (N, H, W, Z), got shape {tuple(tensor.shape)}")
        # (N, H, W, Z) -> (N, Z, 1, H, W)
        self.volumes = tensor.float().permute(0, 3, 1, 2).unsqueeze(2).contiguous()
        self.subject_ids = list(subject_ids) or [f"vol{i:04d}" for i in range(len(self.volumes))]

    @property
    def num_volumes(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def slices_per_volume(self) -> int:
        return int(self.volumes.shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.volumes.shape[-2:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.num_volumes

    def all_slices(self) -> Tensor:
        """Every slice of every volume, (N*Z, 1, H, W)."""
        return self.volumes.reshape(-1, 1, *self.image_shape)

    def epoch(self, generator: torch.Generator) -> Tensor:
        """One epoch: every volume once, in random order, one random slice each (N, 1, H, W)."""
        order = torch.randperm(self.num_volumes, generator=generator)
        z = torch.randint(self.slices_per_volume, (self.num_volumes,), generator=generator)
        return self.volumes[order, z[order]]

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
        """An endless stream of (batch_size, 1, H, W) batches drawn epoch after epoch."""
        buffer: list[Tensor] = []
        have = 0
        while True:
            while have < batch_size:
                ep = self.epoch(generator)
                buffer.append(ep)
                have += ep.shape[0]
            stacked = torch.cat(buffer)
            yield stacked[:batch_size]
            rest = stacked[batch_size:]
            buffer = [rest] if rest.shape[0] else []
            have = rest.shape[0]
