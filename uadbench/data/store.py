"""Per-volume split storage: a folder per prepared split, each volume readable without the others.

A split is written once, atomically, as a folder::

    index.json          format, count, shape, subject ids, whether lesion masks are kept
    image.npy           (N, X, Y, Z) float32, volume after volume
    brain.npy           (N, X, Y, Z) bool
    lesion.npy          (N, X, Y, Z) bool; only when every volume has a lesion mask
    affine.npy          (N, 4, 4) float64, each volume's affine on the grid
    native_affine.npy   (N, 4, 4) float64, the affine of the scan it was prepared from
    native_shape.npy    (N, 3) int64, that scan's shape

and read back memory-mapped (copy-on-write: a caller may write into a volume's arrays; the file
never changes). Loading costs one small JSON read and three ``mmap`` calls, whatever the number of
subjects; each :class:`~uadbench.data.volume.Volume` holds a view of its own block, read from disk
only when touched. Time and memory grow linearly with the subjects read, not with the split.

Writing streams volume after volume into the arrays (a volume is asked for once and not kept),
so a split never needs to fit in memory twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uadbench.data.geometry import NATIVE_AFFINE, NATIVE_SHAPE
from uadbench.data.volume import Volume
from uadbench.errors import DataError
from uadbench.files import atomic_dir

STORE_FORMAT = 1  # the folder's layout; a store of another format is refused, never misread
INDEX = "index.json"
ARRAYS = {"image": np.float32, "brain": np.bool_, "lesion": np.bool_}  # one block per volume, memory-mapped
GEOMETRY = {"affine": np.float64, "native_affine": np.float64, "native_shape": np.int64}  # small, read whole


def _write_header(f: Any, dtype: type, shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(f, header)


def save_volumes(path: str | os.PathLike, volumes: Sequence[Volume]) -> Path:
    """Write ``volumes`` (one array shape; each with its own affine and native geometry) as a store
    folder at ``path``, atomically; returns ``path``. ``volumes`` may be any sequence (a lazy one
    that builds each volume on access): each item is read once.

    Lesion masks are kept when every volume has one, else none is (as a split is either annotated
    or not). When another process wrote ``path`` first, its store is kept."""
    path = Path(path)
    n = len(volumes)
    if n == 0:
        raise DataError(f"{path}: a split store needs at least one volume")
    index: dict[str, Any] = {"format": STORE_FORMAT, "count": n, "subject_ids": []}
    geometry: dict[str, list] = {name: [] for name in GEOMETRY}
    with atomic_dir(path) as tmp:
        files = {name: open(tmp / f"{name}.npy", "wb") for name in ARRAYS}  # noqa: SIM115  # closed below
        try:
            shape: tuple[int, ...] | None = None
            all_lesions = True
            for i in range(n):
                v = volumes[i]
                if shape is None:
                    shape = v.shape
                    for name, f in files.items():
                        _write_header(f, ARRAYS[name], (n, *shape))
                elif v.shape != shape:
                    raise DataError(f"{path}: volume {v.subject_id!r} has shape {v.shape}, the split's first volume {shape}")
                files["image"].write(np.ascontiguousarray(v.image, dtype=np.float32).tobytes())
                files["brain"].write(np.ascontiguousarray(v.brain_mask, dtype=np.bool_).tobytes())
                if v.lesion_mask is None:
                    all_lesions = False
                if all_lesions:
                    files["lesion"].write(np.ascontiguousarray(v.lesion_mask, dtype=np.bool_).tobytes())
                index["subject_ids"].append(str(v.subject_id))
                geometry["affine"].append(np.asarray(v.affine, dtype=np.float64))
                geometry["native_affine"].append(np.asarray(v.meta.get(NATIVE_AFFINE, v.affine), dtype=np.float64))
                geometry["native_shape"].append(np.asarray(v.meta.get(NATIVE_SHAPE, v.shape), dtype=np.int64))
        finally:
            for f in files.values():
                f.close()
        if not all_lesions:
            (tmp / "lesion.npy").unlink()
        for name, dtype in GEOMETRY.items():
            np.save(tmp / f"{name}.npy", np.stack(geometry[name]).astype(dtype, copy=False), allow_pickle=False)
        index["shape"] = list(shape)  # type: ignore[arg-type]
        index["lesion"] = all_lesions
        (tmp / INDEX).write_text(json.dumps(index) + "\n", encoding="utf-8")
    return path


def is_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a finished store folder (its index is written last)."""
    return (Path(path) / INDEX).is_file()


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """The store's index, checked: a store of another format raises a one-line DataError."""
    path = Path(path)
    try:
        index = json.loads((path / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is not a split store (no {INDEX}); delete it to prepare the split again") from None
    if index.get("format") != STORE_FORMAT:
        raise DataError(f"{path}: split store format {index.get('format')!r}, this uadbench reads format {STORE_FORMAT}; "
                        "delete the folder to prepare the split again")
    return index


def load_volumes(path: str | os.PathLike) -> list[Volume]:
    """The volumes of the store at ``path``, memory-mapped (see the module): float32 images, bool
    masks, each volume's affine, and its native affine and shape in ``meta``."""
    path = Path(path)
    index = read_index(path)
    n, shape = int(index["count"]), tuple(index["shape"])
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="c") for name in ARRAYS if name != "lesion" or index["lesion"]}
    for name, array in arrays.items():
        if array.shape != (n, *shape) or array.dtype != ARRAYS[name]:
            raise DataError(f"{path}/{name}.npy holds {array.dtype} {array.shape}, the index says {np.dtype(ARRAYS[name])} "
                            f"{(n, *shape)}; delete the folder to prepare the split again")
    geometry = {name: np.load(path / f"{name}.npy", allow_pickle=False) for name in GEOMETRY}
    for name, array in geometry.items():
        if len(array) != n or array.dtype != GEOMETRY[name]:
            raise DataError(f"{path}/{name}.npy holds {array.dtype} {array.shape}, the index says {n} volumes of "
                            f"{np.dtype(GEOMETRY[name])}; delete the folder to prepare the split again")
    ids, lesion = index["subject_ids"], arrays.get("lesion")
    affine, native_affine, native_shape = geometry["affine"], geometry["native_affine"], geometry["native_shape"].tolist()
    return [
        Volume(arrays["image"][i], affine[i], arrays["brain"][i], ids[i], None if lesion is None else lesion[i],
               meta={NATIVE_AFFINE: native_affine[i], NATIVE_SHAPE: tuple(native_shape[i])})
        for i in range(n)
    ]


def store_bytes(count: int, shape: Sequence[int], lesion: bool) -> int:
    """Bytes on disk of a store of ``count`` volumes of ``shape`` (arrays only; the index is small)."""
    voxels = count * int(np.prod(shape))
    return voxels * (np.dtype(np.float32).itemsize + 1 + (1 if lesion else 0))


def load_npz_split(path: str | os.PathLike) -> list[Volume]:
    """A split from the npz file earlier versions wrote (one compressed array per field for the
    whole split), each array decompressed once: for migrating an old cache into a store."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    ids = [str(s) for s in arrays["subject_ids"]]
    lesions = arrays.get("lesion")
    return [
        Volume(arrays["image"][i], arrays["affine"][i], arrays["brain"][i], ids[i], None if lesions is None else lesions[i],
               meta={NATIVE_AFFINE: arrays["native_affine"][i], NATIVE_SHAPE: tuple(int(s) for s in arrays["native_shape"][i])})
        for i in range(len(ids))
    ]
