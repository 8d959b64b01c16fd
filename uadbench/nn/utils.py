"""Small helpers shared by the networks and the methods that run them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (the CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def padded_shape(image_shape: tuple[int, int], levels: int) -> tuple[int, int]:
    """The smallest (H, W) >= ``image_shape`` divisible by ``2**levels``."""
    m = 2**levels
    return tuple(int(math.ceil(s / m) * m) for s in image_shape)  # type: ignore[return-value]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode, then restore its train/eval state."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
