"""Prepared splits on disk: one npz per (dataset, split, grid), keyed by what sets its content."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uadbench.config import stable_hash
from uadbench.data.dataset import DatasetSource
from uadbench.data.pipeline import PIPELINE_VERSION, ImageGrid
from uadbench.data.volume import Volume
from uadbench.io_utils import atomic_path


def data_key(source: DatasetSource, split: str, grid: ImageGrid) -> str:
    """The dataset's fingerprint, the split, the image grid and the pipeline version."""
    return stable_hash({"fp": source.fingerprint(), "split": split, "grid": grid.to_dict(), "pipeline": PIPELINE_VERSION}, 16)


def load_split(path: Path) -> list[Volume]:
    with np.load(path, allow_pickle=False) as z:
        ids = [str(s) for s in z["subject_ids"]]
        lesions = z["lesion"] if "lesion" in z else None
        affine = z["affine"]
        return [
            Volume(z["image"][i], affine, z["brain"][i], ids[i], None if lesions is None else lesions[i])
            for i in range(len(ids))
        ]


def save_split(path: Path, volumes: list[Volume]) -> None:
    arrays: dict[str, np.ndarray] = {
        "image": np.stack([v.image for v in volumes]),
        "brain": np.stack([v.brain_mask for v in volumes]),
        "subject_ids": np.array([v.subject_id for v in volumes]),
        "affine": volumes[0].affine,
    }
    if all(v.lesion_mask is not None for v in volumes):
        arrays["lesion"] = np.stack([v.lesion_mask for v in volumes])  # type: ignore[misc]
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds may bind allow_pickle
