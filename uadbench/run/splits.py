"""Prepared splits: a dataset's split through the volume pipeline on the grid, cached once.

The runner prepares every split a grid reads before any task runs (step 2), so fits and cells only
read the cache; a task started on its own (a test, a Slurm job after a cleared cache) prepares what
it lacks the same way. A split is stored per volume and read memory-mapped
(:mod:`uadbench.data.store`); an npz an earlier version wrote under the same key is converted.
"""

from __future__ import annotations

from pathlib import Path

from uadbench.data.cache import data_key, load_split, migrate_npz, save_split
from uadbench.data.dataset import create_dataset
from uadbench.data.pipeline import ImageGrid, preprocess
from uadbench.data.store import is_store
from uadbench.data.volume import Volume
from uadbench.errors import UadbenchError
from uadbench.grid.entries import ShiftSpec
from uadbench.run import layout


def split_paths(dataset: str, split: str, key: str, cache_dir: Path, shift: ShiftSpec | None = None) -> tuple[Path, Path]:
    """Where the split with data key ``key`` is stored, and the npz an earlier version wrote for it."""
    paths = [layout.split_path(cache_dir, dataset, split, key, suffix) for suffix in (layout.SPLIT_STORE, layout.OLD_SPLIT)]
    if shift is not None:
        from uadbench.shifts.acquisition import acquired_split_key

        acquired = acquired_split_key(paths[0].name.removesuffix(layout.SPLIT_STORE), shift)
        paths = [layout.acquired_split_path(cache_dir, dataset, split, shift.name, acquired, suffix)
                 for suffix in (layout.SPLIT_STORE, layout.OLD_SPLIT)]
    return paths[0], paths[1]


def prepare_split(dataset: str, split: str, *, grid: ImageGrid, data_seed: int, cache_dir: Path, data_root: Path | None,
                  shift: ShiftSpec | None = None) -> list[Volume]:
    """Preprocessed volumes of one split on ``grid``, cached as a store and read memory-mapped;
    under an acquisition ``shift`` (:mod:`uadbench.shifts.acquisition`), the split as the other
    protocol records it."""
    source = create_dataset(dataset, root=data_root, seed=data_seed)
    source.check_split(split)
    path, npz = split_paths(dataset, split, data_key(source, split, grid), cache_dir, shift)
    if is_store(path) or migrate_npz(npz, path):
        return load_split(path)
    if shift is None:
        raw = source.load(split)
    else:
        from uadbench.shifts.acquisition import acquire_split

        raw = acquire_split(source, split, shift.name, shift.severity)  # type: ignore[arg-type]
    volumes = [preprocess(v, grid) for v in raw]
    if not volumes:
        raise UadbenchError(f"dataset {dataset!r} split {split!r} has no subjects")
    del raw
    save_split(path, volumes)
    return load_split(path)
