"""Slice datasets: what a method's ``fit`` receives (images only, never masks)."""

from __future__ import annotations

import mmap
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


def file_block(array: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset) of ``array``'s data when it is a C-contiguous float32 block of a
    memory-mapped file (a volume of a split store, :mod:`uadbench.data.store`), else None."""
    root: object = array
    while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None or array.dtype != np.float32 or not array.flags.c_contiguous:
        return None
    delta = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return str(root.filename), int(root.offset) + int(delta)


class SliceDataset:
    """Axial slices of preprocessed healthy volumes, (N, Z, 1, H, W) float32.

    Training draws one uniformly random axial slice per volume per visit, volumes in a random
    order each epoch, as the reference implementation does; evaluation iterates every slice.

    Given a list of (H, W, Z) volumes whose float32 size exceeds ``memory_budget`` bytes (default
    :func:`default_memory_budget`), nothing is stacked: each drawn slice is read on demand, from the
    file for memory-mapped volumes (so their pages never stay in this process's memory), else from
    the arrays given. The same seed draws the same slices, batch for batch, whether the volumes
    were stacked or not. An array or tensor of volumes is always held as one tensor.
    """

    volumes: Tensor  # (N, Z, 1, H, W): held when the volumes are stacked, built on each access when lazy

    def __init__(self, images: Tensor | np.ndarray | Sequence[np.ndarray], subject_ids: Sequence[str] = (),
                 memory_budget: int | None = None):
        self._lazy: list[np.ndarray] = []
        self._blocks: list[tuple[str, int] | None] = []
        if isinstance(images, (list, tuple)):
            arrays = [np.asarray(v) for v in images]
            if any(a.ndim != 3 for a in arrays) or len({a.shape for a in arrays}) > 1:
                raise ValueError(f"expected volumes (H, W, Z) of one shape, got shapes {sorted({a.shape for a in arrays})}")
            budget = default_memory_budget() if memory_budget is None else memory_budget
            if arrays and sum(a.size for a in arrays) * 4 > budget:
                self._lazy = arrays
                self._blocks = [file_block(a) for a in arrays]
                h, w, z = arrays[0].shape
                self._shape = (len(arrays), z, 1, h, w)
            elif arrays:  # straight into the (N, Z, 1, H, W) layout: one copy of the volumes, not three
                h, w, z = arrays[0].shape
                stacked = np.empty((len(arrays), z, 1, h, w), dtype=np.float32)
                for i, a in enumerate(arrays):
                    stacked[i, :, 0] = np.moveaxis(np.asarray(a, dtype=np.float32), 2, 0)
                self.volumes = torch.from_numpy(stacked)
            else:
                raise ValueError("expected at least one volume")
        if not self._lazy and "volumes" not in self.__dict__:
            tensor = torch.as_tensor(np.asarray(images, dtype=np.float32) if isinstance(images, np.ndarray) else images)
            if tensor.ndim != 4:
                raise ValueError(f"expected volumes (N, H, W, Z), got shape {tuple(tensor.shape)}")
            # (N, H, W, Z) -> (N, Z, 1, H, W)
            self.volumes = tensor.float().permute(0, 3, 1, 2).unsqueeze(2).contiguous()
        if not self._lazy:
            self._shape = tuple(self.volumes.shape)  # type: ignore[assignment]
        self.subject_ids = list(subject_ids) or [f"vol{i:04d}" for i in range(self.num_volumes)]

    @property
    def lazy(self) -> bool:
        """True when slices are read from the given volumes on demand (none stacked in memory)."""
        return bool(self._lazy)

    def __getattr__(self, name: str) -> Tensor:
        if name == "volumes" and self.__dict__.get("_lazy"):  # every volume, stacked for this call only
            return torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32).transpose(2, 0, 1) for v in self._lazy]))[:, :, None]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        if not self._lazy:
            return self.volumes[volumes, z]
        out = np.empty((len(volumes), 1, *self.image_shape), dtype=np.float32)
        for i, (n, k) in enumerate(zip(volumes.tolist(), z.tolist(), strict=True)):
            out[i, 0] = self._volume(n)[:, :, k]
        return torch.from_numpy(out)

    def _volume(self, n: int) -> np.ndarray:
        """Volume ``n`` of a lazy dataset: read from its file into a buffer dropped after use, or the array."""
        array, block = self._lazy[n], self._blocks[n]
        if block is None:
            return array
        with open(block[0], "rb") as f:
            data = os.pread(f.fileno(), array.nbytes, block[1])
        return np.frombuffer(data, dtype=np.float32).reshape(array.shape)

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
