"""Prepared splits on disk: one npz per (dataset, split, grid), keyed by what sets its content.

Each volume keeps its own affine (scans differ in position and orientation) and the affine and
shape of the scan it was prepared from, so a map can be written back in native space
(:func:`uadbench.data.geometry.to_native`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uadbench.config import stable_hash
from uadbench.data.dataset import DatasetSource
from uadbench.data.geometry import NATIVE_AFFINE, NATIVE_SHAPE
from uadbench.data.pipeline import PIPELINE_VERSION, ImageGrid
from uadbench.data.volume import Volume
from uadbench.files import atomic_path


def data_key(source: DatasetSource, split: str, grid: ImageGrid) -> str:
    """The dataset's fingerprint, the split, the image grid and the pipeline version."""
    return stable_hash({"fp": source.fingerprint(), "split": split, "grid": grid.to_dict(), "pipeline": PIPELINE_VERSION}, 16)


def load_split(path: Path) -> list[Volume]:
    with np.load(path, allow_pickle=False) as z:
        ids = [str(s) for s in z["subject_ids"]]
        lesions = z["lesion"] if "lesion" in z else None
        affines, native_affines, native_shapes = z["affine"], z["native_affine"], z["native_shape"]
        return [
            Volume(z["image"][i], affines[i], z["brain"][i], ids[i], None if lesions is None else lesions[i],
                   meta={NATIVE_AFFINE: native_affines[i], NATIVE_SHAPE: tuple(int(n) for n in native_shapes[i])})
            for i in range(len(ids))
        ]


def save_split(path: Path, volumes: list[Volume]) -> None:
    """Write prepared volumes (one grid shape; each with its own affine and native geometry)."""
    arrays: dict[str, np.ndarray] = {
        "image": np.stack([v.image for v in volumes]),
        "brain": np.stack([v.brain_mask for v in volumes]),
        "subject_ids": np.array([v.subject_id for v in volumes]),
        "affine": np.stack([v.affine for v in volumes]),
        "native_affine": np.stack([np.asarray(v.meta.get(NATIVE_AFFINE, v.affine), dtype=np.float64) for v in volumes]),
        "native_shape": np.array([v.meta.get(NATIVE_SHAPE, v.shape) for v in volumes], dtype=np.int64),
    }
    if all(v.lesion_mask is not None for v in volumes):
        arrays["lesion"] = np.stack([v.lesion_mask for v in volumes])  # type: ignore[misc]
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds may bind allow_pickle
