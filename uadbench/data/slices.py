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

    def batches(self, batch_size: int, generator: torch.Generator) -> BatchStream:
        """An endless stream of (batch_size, 1, H, W) batches drawn epoch after epoch."""
        return BatchStream(self, batch_size, generator)


class BatchStream(Iterator[Tensor]):
    """Batches drawn epoch after epoch; its state (the slices drawn but not yet used) can be saved
    and restored, so that a resumed training loop sees the same batches."""

    def __init__(self, data: SliceDataset, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.rest = data.volumes.new_zeros((0, *data.volumes.shape[2:]))

    def __next__(self) -> Tensor:
        parts = [self.rest]
        have = self.rest.shape[0]
        while have < self.batch_size:
            ep = self.data.epoch(self.generator)
            parts.append(ep)
            have += ep.shape[0]
        stacked = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.rest = stacked[self.batch_size:]
        return stacked[: self.batch_size]

    def state_dict(self) -> dict[str, Tensor]:
        return {"rest": self.rest.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.rest = state["rest"].to(self.data.volumes.dtype)
