"""Prepared splits on disk: one store per (dataset, split, grid), keyed by what sets its content.

A split is kept as a per-volume store (:mod:`uadbench.data.store`): a folder whose volumes are
memory-mapped and read only when touched, so loading a split costs the same whatever its size.
Each volume keeps its own affine (scans differ in position and orientation) and the affine and
shape of the scan it was prepared from, so a map can be written back in native space
(:func:`uadbench.data.geometry.to_native`).

Earlier versions wrote one npz per split under the same key; :func:`migrate_npz` converts such a
file into a store (reading each of its arrays once) instead of preparing the split again. An npz
is never read in place of a store.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from uadbench.config import stable_hash
from uadbench.data.dataset import DatasetSource
from uadbench.data.pipeline import PIPELINE_VERSION, ImageGrid
from uadbench.data.store import is_store, load_npz_split, load_volumes, save_volumes
from uadbench.data.volume import Volume


def data_key(source: DatasetSource, split: str, grid: ImageGrid) -> str:
    """The dataset's fingerprint, the split, the image grid and the pipeline version."""
    return stable_hash({"fp": source.fingerprint(), "split": split, "grid": grid.to_dict(), "pipeline": PIPELINE_VERSION}, 16)


def load_split(path: Path) -> list[Volume]:
    """The volumes of the split stored at ``path`` (memory-mapped; see :mod:`uadbench.data.store`)."""
    return load_volumes(path)


def save_split(path: Path, volumes: list[Volume]) -> None:
    """Write prepared volumes (one grid shape; each with its own affine and native geometry)."""
    save_volumes(path, volumes)


def migrate_npz(npz: Path, path: Path) -> bool:
    """Convert the npz an earlier version wrote for this split into the store at ``path``; removes
    the npz. False when there is no npz (or the store exists already)."""
    if is_store(path) or not npz.is_file():
        return False
    try:
        volumes = load_npz_split(npz)
    except FileNotFoundError:  # another process migrated it meanwhile
        return is_store(path)
    save_volumes(path, volumes)
    with contextlib.suppress(FileNotFoundError):
        npz.unlink()
    return True
