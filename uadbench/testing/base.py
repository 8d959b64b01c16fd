"""What every check of :mod:`uadbench.testing` shares: small synthetic volumes and the failure."""

from __future__ import annotations

import numpy as np


def fail(message: str) -> AssertionError:
    """The AssertionError a check raises, its message on one line."""
    return AssertionError(" ".join(message.split()))


def brainlike_volumes(n: int, shape: tuple[int, int, int] = (32, 32, 8), seed: int = 0,
                      lesion: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """``n`` small synthetic volumes in [0, 1] (float32): a bright textured ellipsoid "brain"
    (the boolean brain masks) with, if ``lesion``, a bright blob inside (the lesion masks)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vols, brains, lesions = [], [], []
    for _ in range(n):
        brain = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.2) ** 2 < 1
        img = (0.5 + 0.2 * np.sin(6 * x + rng.uniform(0, 3)) * np.cos(5 * y)) * brain
        img = img + 0.02 * rng.standard_normal(shape) * brain
        les = np.zeros(shape, bool)
        if lesion:
            c = rng.uniform(-0.3, 0.3, 3)
            les = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < 0.08) & brain
            img[les] = 0.95
        vols.append(np.clip(img, 0, 1).astype(np.float32))
        brains.append(brain)
        lesions.append(les)
    return vols, brains, lesions
