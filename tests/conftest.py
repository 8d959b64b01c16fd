from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One phantom data root for the whole test session (generated once)."""
    root = tmp_path_factory.mktemp("uadbench-data")
    old = os.environ.get("UADBENCH_DATA")
    os.environ["UADBENCH_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("UADBENCH_DATA", None)
    else:
        os.environ["UADBENCH_DATA"] = old


def brainlike_volumes(n: int, shape=(32, 32, 8), seed: int = 0, lesion: bool = False):
    """Small synthetic volumes: a bright ellipsoid 'brain' with texture, optional bright blob."""
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
