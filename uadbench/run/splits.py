"""Prepared splits: a dataset's split through the volume pipeline on the grid, cached once.

The runner prepares every split a grid reads before any task runs (step 2), so fits and cells only
read the cache; a task started on its own (a test, a Slurm job after a cleared cache) prepares what
it lacks the same way.
"""

from __future__ import annotations

from pathlib import Path

from uadbench.data.cache import data_key, load_split, save_split
from uadbench.data.dataset import create_dataset
from uadbench.data.pipeline import ImageGrid, preprocess
from uadbench.data.volume import Volume
from uadbench.errors import UadbenchError
from uadbench.grid.entries import ShiftSpec
from uadbench.run import layout


def prepare_split(dataset: str, split: str, *, grid: ImageGrid, data_seed: int, cache_dir: Path, data_root: Path | None,
                  shift: ShiftSpec | None = None) -> list[Volume]:
    """Preprocessed volumes of one split on ``grid``, cached as npz; under an acquisition
    ``shift`` (:mod:`uadbench.shifts.acquisition`), the split as the other protocol records it."""
    source = create_dataset(dataset, root=data_root, seed=data_seed)
    source.check_split(split)
    key = data_key(source, split, grid)
    path = layout.split_path(cache_dir, dataset, split, key)
    if shift is not None:
        from uadbench.shifts.acquisition import acquired_split_key

        path = layout.acquired_split_path(cache_dir, dataset, split, shift.name, acquired_split_key(path.stem, shift))
    if path.is_file():
        return load_split(path)
    if shift is None:
        raw = source.load(split)
    else:
        from uadbench.shifts.acquisition import acquire_split

        raw = acquire_split(source, split, shift.name, shift.severity)  # type: ignore[arg-type]
    volumes = [preprocess(v, grid) for v in raw]
    if not volumes:
        raise UadbenchError(f"dataset {dataset!r} split {split!r} has no subjects")
    save_split(path, volumes)
    return volumes
