"""check_dataset: the dataset contract (see :mod:`uadbench.testing`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from uadbench.testing.base import fail

if TYPE_CHECKING:
    from uadbench.data.dataset import DatasetSource
    from uadbench.data.volume import Volume


def _dataset_factory(dataset: str | type | Callable[[], DatasetSource], options: dict[str, Any]) -> Callable[[], DatasetSource]:
    from uadbench.data.dataset import create_dataset

    if isinstance(dataset, str):
        return lambda: create_dataset(dataset, **options)
    if callable(dataset):
        return lambda: dataset(**options)
    raise fail(f"check_dataset takes a registered dataset name, a DatasetSource subclass or a factory, got {type(dataset).__name__}")


def _check_splits(name: str, ds: DatasetSource, volumes: dict[str, list[Volume]]) -> None:
    from uadbench.errors import DataError

    if not ds.splits or len(set(ds.splits)) != len(ds.splits):
        raise fail(f"dataset {name!r}: splits must be distinct names, got {ds.splits!r}")
    if not set(ds.lesion_splits) <= set(ds.splits):
        raise fail(f"dataset {name!r}: lesion_splits {ds.lesion_splits!r} are not all among its splits {ds.splits!r}")
    ids = {}
    for split in ds.splits:
        ids[split] = ds.subjects(split)
        if not ids[split]:
            raise fail(f"dataset {name!r}: split {split!r} is empty")
        if len(set(ids[split])) != len(ids[split]):
            raise fail(f"dataset {name!r}: split {split!r} repeats a subject")
        if [v.subject_id for v in volumes[split]] != ids[split]:
            raise fail(f"dataset {name!r}: load({split!r}) gives subjects in another order than subjects({split!r})")
    for a, b in itertools.combinations(ds.splits, 2):
        shared = set(ids[a]) & set(ids[b])
        if shared:
            raise fail(f"dataset {name!r}: splits {a!r} and {b!r} share subjects {sorted(shared)}")
    try:
        ds.load("no-such-split")
    except DataError:
        pass
    except Exception as exc:
        raise fail(f"dataset {name!r}: load('no-such-split') raised {type(exc).__name__}; expected uadbench.errors.DataError "
                   "(DatasetSource.check_split raises it)") from exc
    else:
        raise fail(f"dataset {name!r}: load('no-such-split') returned; an unknown split must raise DataError (call self.check_split)")


def _check_volume(name: str, ds: DatasetSource, split: str, v: Volume) -> None:
    where = f"dataset {name!r} {split}/{v.subject_id}"
    if v.image.ndim != 3 or v.image.dtype != np.float32:
        raise fail(f"{where}: image must be a 3D float32 array, got {v.image.ndim}D {v.image.dtype}")
    if not np.isfinite(v.image).all():
        raise fail(f"{where}: image holds NaN or infinite values")
    if v.brain_mask.shape != v.image.shape or v.brain_mask.dtype != bool or not v.brain_mask.any():
        raise fail(f"{where}: brain_mask must be a non-empty boolean array of the image's shape {v.image.shape}")
    if v.affine.shape != (4, 4) or not np.isfinite(v.affine).all():
        raise fail(f"{where}: affine must be a finite 4x4 matrix")
    if split in ds.lesion_splits:
        if v.lesion_mask is None or v.lesion_mask.dtype != bool or v.lesion_mask.shape != v.image.shape:
            raise fail(f"{where}: a lesion split needs a boolean lesion_mask of the image's shape on every volume")
    elif v.lesion_mask is not None:
        raise fail(f"{where}: a healthy split (not in lesion_splits) with a lesion_mask; set it to None")


def check_dataset(dataset: str | type | Callable[[], DatasetSource], /, **options: Any) -> None:
    """Check a dataset against the contract: a registered name (built with
    ``create_dataset(name, **options)``), a :class:`~uadbench.data.dataset.DatasetSource` subclass
    (``cls(**options)``) or a factory returning one. Every split is loaded twice, from two instances.

    Point it at data (``root=``, ``directory=``): a dataset with no data where it looks fails."""
    from uadbench.data.dataset import DatasetSource

    make = _dataset_factory(dataset, options)
    ds = make()
    if not isinstance(ds, DatasetSource):
        raise fail(f"{dataset!r} built a {type(ds).__name__}, not a uadbench.data.dataset.DatasetSource")
    name = ds.name
    if not ds.available():
        raise fail(f"dataset {name!r}: no data where it looks ({getattr(ds, 'directory', ds.root)}); pass root= or directory=")
    volumes = {split: ds.load(split) for split in ds.splits}
    _check_splits(name, ds, volumes)
    for split in ds.splits:
        if ds.has_lesions(split) != (split in ds.lesion_splits):
            raise fail(f"dataset {name!r}: has_lesions({split!r}) disagrees with lesion_splits")
        for v in volumes[split]:
            _check_volume(name, ds, split, v)
        if split in ds.lesion_splits and not any(v.lesion_mask is not None and v.lesion_mask.any() for v in volumes[split]):
            raise fail(f"dataset {name!r}: every lesion mask of lesion split {split!r} is empty")
    again = make()  # a fresh instance reads what the first one prepared
    if not isinstance(ds.fingerprint(), str) or not ds.fingerprint() or again.fingerprint() != ds.fingerprint():
        raise fail(f"dataset {name!r}: fingerprint {ds.fingerprint()!r} differs from a fresh instance's {again.fingerprint()!r}")
    for split in ds.splits:
        second = again.load(split)
        if [v.subject_id for v in second] != [v.subject_id for v in volumes[split]]:
            raise fail(f"dataset {name!r}: a fresh instance loads split {split!r} in another order")
        for v, w in zip(volumes[split], second):
            if v.image.tobytes() != w.image.tobytes() or not np.array_equal(v.brain_mask, w.brain_mask) or not np.array_equal(v.affine, w.affine):
                raise fail(f"dataset {name!r} {split}/{v.subject_id}: a fresh instance loads another image, brain mask or affine")
