"""Slice datasets: what a method's ``fit`` receives (images only, never masks)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

MEMORY_BUDGET_ENV = "UADBENCH_SLICE_MEMORY_MB"
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of images held as one tensor; beyond it, slices are read on demand


def default_memory_budget() -> int:
    """Bytes of volumes a :class:`SliceDataset` stacks in memory: ``$UADBENCH_SLICE_MEMORY_MB``
    (mebibytes) or 1 GiB."""
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env is None:
        return DEFAULT_MEMORY_BUDGET
    try:
        mb = float(env)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise ValueError(f"${MEMORY_BUDGET_ENV} must be a non-negative number of mebibytes, got {env!r}")
    return int(mb * (1 << 20))


class SliceDataset:
    """Axial slices of preprocessed healthy volumes, (N, Z, 1, H, W) float32.

    Training draws one uniformly random axial slice per volume per visit, volumes in a random
    order each epoch, as the reference implementation does; evaluation iterates every slice.

    Given a list of (H, W, Z) volumes whose float32 size exceeds ``memory_budget`` bytes (default
    :func:`default_memory_budget`), the volumes are kept as given (memory-mapped ones stay on disk) and each
    drawn slice is read on demand: the same seed draws the same slices, batch for batch, whether the
    volumes were stacked or not. An array or tensor of volumes is always held as one tensor.
    """

    def __init__(self, images: Tensor | np.ndarray | Sequence[np.ndarray], subject_ids: Sequence[str] = (),
                 memory_budget: int | None = None):
        self._stacked: Tensor | None = None
        self._lazy: list[np.ndarray] = []
        if isinstance(images, (list, tuple)):
            arrays = [np.asarray(v) for v in images]
            if any(a.ndim != 3 for a in arrays) or len({a.shape for a in arrays}) > 1:
                raise ValueError(f"expected volumes (H, W, Z) of one shape, got shapes {sorted({a.shape for a in arrays})}")
            budget = default_memory_budget() if memory_budget is None else memory_budget
            if arrays and sum(a.size for a in arrays) * 4 > budget:
                self._lazy = arrays
                h, w, z = arrays[0].shape
                self._shape = (len(arrays), z, 1, h, w)
            else:
                images = np.stack([np.asarray(v, dtype=np.float32) for v in arrays])
        if not self._lazy:
            tensor = torch.as_tensor(np.asarray(images, dtype=np.float32) if isinstance(images, np.ndarray) else images)
            if tensor.ndim != 4:
                raise ValueError(f"expected volumes (N, H, W, Z), got shape {tuple(tensor.shape)}")
            # (N, H, W, Z) -> (N, Z, 1, H, W)
            self._stacked = tensor.float().permute(0, 3, 1, 2).unsqueeze(2).contiguous()
            self._shape = tuple(self._stacked.shape)  # type: ignore[assignment]
        self.subject_ids = list(subject_ids) or [f"vol{i:04d}" for i in range(self.num_volumes)]

    @property
    def lazy(self) -> bool:
        """True when slices are read from the given volumes on demand (none stacked in memory)."""
        return self._stacked is None

    @property
    def volumes(self) -> Tensor:
        """Every volume as one (N, Z, 1, H, W) tensor (built on each access when :attr:`lazy`)."""
        if self._stacked is not None:
            return self._stacked
        return torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32).transpose(2, 0, 1) for v in self._lazy]))[:, :, None]

    @property
    def num_volumes(self) -> int:
        return int(self._shape[0])

    @property
    def slices_per_volume(self) -> int:
        return int(self._shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self._shape[3]), int(self._shape[4]))

    def __len__(self) -> int:
        return self.num_volumes

    def all_slices(self) -> Tensor:
        """Every slice of every volume, (N*Z, 1, H, W)."""
        return self.volumes.reshape(-1, 1, *self.image_shape)

    def slices(self, volumes: Tensor, z: Tensor) -> Tensor:
        """Slice ``z[i]`` of volume ``volumes[i]`` for each i, (len(volumes), 1, H, W)."""
        if self._stacked is not None:
            return self._stacked[volumes, z]
        picked = [self._lazy[int(n)][:, :, int(k)] for n, k in zip(volumes.tolist(), z.tolist(), strict=True)]
        out = np.empty((len(picked), 1, *self.image_shape), dtype=np.float32)
        for i, s in enumerate(picked):
            out[i, 0] = s
        return torch.from_numpy(out)

    def epoch(self, generator: torch.Generator) -> Tensor:
        """One epoch: every volume once, in random order, one random slice each (N, 1, H, W)."""
        order = torch.randperm(self.num_volumes, generator=generator)
        z = torch.randint(self.slices_per_volume, (self.num_volumes,), generator=generator)
        return self.slices(order, z[order])

    def batches(self, batch_size: int, generator: torch.Generator) -> BatchStream:
        """An endless stream of (batch_size, 1, H, W) batches drawn epoch after epoch."""
        return BatchStream(self, batch_size, generator)


class BatchStream(Iterator[Tensor]):
    """Batches drawn epoch after epoch; its state (the slices drawn but not yet used) can be saved
    and restored, so that a resumed training loop sees the same batches."""

    def __init__(self, data: SliceDataset, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.rest = torch.zeros((0, 1, *data.image_shape), dtype=torch.float32)

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
        self.rest = state["rest"].to(torch.float32)
