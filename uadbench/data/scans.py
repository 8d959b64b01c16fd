"""File-backed datasets: scans found on disk, paired with their masks, checked, split and fingerprinted.

:class:`FileDataset` is the base of every dataset read from NIfTI files (the real datasets in
``datasets/`` and the datasets of folder cards). A subclass finds its subjects
(:meth:`FileDataset.discover` returns one :class:`ScanFiles` per subject); the base class does the
rest, the same way for every dataset:

- **Where.** ``directory=`` if given, else ``$UADBENCH_<FAMILY>_DIR`` (``$UADBENCH_IXI_DIR``,
  ``$UADBENCH_BRATS21_DIR``, ...), else ``<data root>/<family>/`` (the data root is
  ``$UADBENCH_DATA`` or ``~/.cache/uadbench/data``, see :func:`default_data_root`).
- **Reading.** Every file is checked as it is read (:func:`read_scan`): an empty or unreadable
  file, a 4D file, NaN or infinite voxels, a mask whose shape or affine differs from its image
  and an empty brain mask are each a one-line :class:`~uadbench.errors.DataError` naming the file
  and the expected layout. A trailing axis of length 1 (``X,Y,Z,1``) is dropped.
- **Masks.** The brain mask is ``labels > 0`` of a mask file when the layout has one, else
  ``image != 0`` for skull-stripped data. The lesion mask is ``labels > 0`` or the labels in
  ``lesion_labels``; labels in ``ignore_labels`` (WMH's "other pathology") are neither lesion nor
  healthy: they come as ``volume.meta["ignore_mask"]`` (boolean, same grid), see
  :data:`IGNORE_MASK`.
- **Splits** (:mod:`uadbench.data.splits`): computed from the subject ids, checked, and written
  as ``splits-<name>-seed<seed>[-fold<k>].csv`` in the sidecar folder.
- **Fingerprint.** sha256 over the adapter, its options, the manifest of the files it reads
  (relative path and sha256 of each) and the split lists. The checksums are cached in
  ``checksums.json`` in the sidecar folder by path, size and modification time, so a repeated
  call only stats the files.
- **Sidecar folder.** ``<directory>/uadbench/`` when the data folder is writable, else
  ``$XDG_CACHE_HOME/uadbench/sidecars/<hash of the folder path>/`` (read-only data stay
  untouched); a dataset card's is always in the user cache (:mod:`uadbench.run.layout`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from uadbench.data.dataset import DatasetSource
from uadbench.data.nifti import check_header
from uadbench.data.splits import SplitPlan, assign_splits, write_splits_csv
from uadbench.data.volume import Volume
from uadbench.errors import DataError
from uadbench.files import sha256_file, write_text_atomic

if TYPE_CHECKING:
    from nibabel.spatialimages import SpatialImage

IGNORE_MASK = "ignore_mask"
"""``Volume.meta`` key of the voxels to leave out of every metric (boolean array, image grid)."""

NIFTI_SUFFIXES = (".nii.gz", ".nii")
AFFINE_TOLERANCE_MM = 1e-3
CHECKSUMS_VERSION = 1


def nifti_stem(path: Path) -> str:
    """``name`` of ``name.nii.gz`` or ``name.nii``."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def find_nifti(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists."""
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def read_scan(path: Path, *, layout: str = "", labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of one 3D NIfTI file, checked; every problem is a one-line DataError.

    ``labels=True`` reads a label map (integers, no NaN check on the rounded values).
    """
    import nibabel as nib

    expected = f"; expected {layout}" if layout else ""
    if not path.is_file():
        raise DataError(f"{path}: file not found{expected}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes){expected}")
    try:
        img = cast("SpatialImage", nib.load(str(path)))  # the header only
        affine = np.asarray(img.affine, dtype=np.float64)
        shape = tuple(int(s) for s in img.shape)
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise DataError(f"{path}: a {len(img.shape)}D image of shape {tuple(img.shape)}; expected one 3D volume")
        check_header(img, path)  # size, voxel sizes and affine, before any voxel is read
        data = np.asarray(img.dataobj).reshape(shape)
    except DataError:
        raise
    except Exception as exc:  # nibabel raises several types for corrupt or truncated files
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {_one_line(exc)}){expected}") from None
    if not np.isfinite(affine).all():
        raise DataError(f"{path}: the affine holds NaN or infinite values")
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise DataError(f"{path}: {bad} NaN or infinite voxel(s); expected finite intensities")
    if labels:
        data = np.rint(data).astype(np.int64) if data.dtype.kind == "f" else data.astype(np.int64)
    else:
        data = data.astype(np.float32)
    return data, affine


def check_same_grid(image_path: Path, image: np.ndarray, affine: np.ndarray, mask_path: Path, mask: np.ndarray, mask_affine: np.ndarray) -> None:
    """A mask must share its image's shape and affine (within 1e-3 mm)."""
    if mask.shape != image.shape:
        raise DataError(f"{mask_path}: shape {mask.shape} differs from its image {image_path.name} {image.shape}")
    if not np.allclose(mask_affine, affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        worst = float(np.abs(mask_affine - affine).max())
        raise DataError(f"{mask_path}: affine differs from its image {image_path.name} by up to {worst:.4g} mm; masks must lie on the image grid")


@dataclass(frozen=True)
class ScanFiles:
    """The files of one subject. ``brain_mask=None``: no mask file (the brain is ``image != 0``,
    skull-stripped scans, or a mask ``uadbench prepare`` computes); ``lesion_mask=None``: none (healthy)."""

    subject_id: str
    image: Path
    brain_mask: Path | None = None
    lesion_mask: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.image, self.brain_mask, self.lesion_mask) if p is not None]


def _writable(folder: Path) -> bool:
    """Writable by us, and not marked read-only (no write bit at all), which root would ignore."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def sidecar_dir(directory: Path) -> Path:
    """Where splits and checksums of ``directory`` are written (see the module docstring)."""
    beside = directory / "uadbench"
    if beside.is_dir() and _writable(beside) and _writable(directory):
        return beside
    if not beside.exists() and _writable(directory):
        return beside
    from uadbench.run.layout import sidecar_cache

    return sidecar_cache(hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16])


class ChecksumCache:
    """sha256 of files, remembered in a JSON file by path, size and modification time."""

    def __init__(self, path: Path, base: Path) -> None:
        self.path, self.base = path, base
        self._entries: dict[str, list] | None = None
        self._dirty = False

    def _key(self, file: Path) -> str:
        try:
            return file.relative_to(self.base).as_posix()
        except ValueError:
            return str(file)

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            self._entries = {}
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                if raw.get("version") == CHECKSUMS_VERSION and isinstance(raw.get("files"), dict):
                    self._entries = raw["files"]
            except (OSError, ValueError, AttributeError):
                pass  # a missing or damaged cache is rebuilt
        return self._entries

    def sha256(self, file: Path) -> str:
        entries = self._load()
        key = self._key(file)
        st = file.stat()
        known = entries.get(key)
        if isinstance(known, list) and len(known) == 3 and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return str(known[2])
        digest = sha256_file(file)
        entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self._dirty = True
        return digest

    def save(self) -> None:
        if not self._dirty or self._entries is None:
            return
        try:
            write_text_atomic(self.path, json.dumps({"version": CHECKSUMS_VERSION, "files": self._entries}, sort_keys=True) + "\n")
        except OSError:
            pass  # checksums are a cache: an unwritable folder only costs time
        self._dirty = False


class FileDataset(DatasetSource):
    """A dataset read from NIfTI files; subclasses implement :meth:`discover` (see the module)."""

    family: ClassVar[str] = ""          # folder name under the data root, e.g. "ixi"
    layout: ClassVar[str] = ""          # the expected layout, for error messages
    split_plan: ClassVar[SplitPlan]
    lesion_labels: ClassVar[tuple[int, ...] | None] = None  # None: every label > 0 is lesion
    ignore_labels: ClassVar[tuple[int, ...]] = ()
    adapter_version: ClassVar[int] = 1  # bump when the adapter reads the same files differently

    def __init__(self, root: str | os.PathLike | None = None, seed: int = 0, *, directory: str | os.PathLike | None = None) -> None:
        super().__init__(root=root, seed=seed)
        self._directory = Path(directory).expanduser() if directory is not None else None
        self._scans: dict[str, ScanFiles] | None = None
        self._splits: dict[str, list[str]] | None = None
        self._fingerprint: str | None = None

    # -- where --------------------------------------------------------------------------------
    @classmethod
    def directory_env(cls) -> str:
        return f"UADBENCH_{re.sub(r'[^A-Za-z0-9]', '_', cls.family).upper()}_DIR"

    @property
    def directory(self) -> Path:
        """The dataset's folder: ``directory=``, else ``$UADBENCH_<FAMILY>_DIR``, else ``<root>/<family>``."""
        if self._directory is not None:
            return self._directory
        env = os.environ.get(self.directory_env())
        if env:
            return Path(env).expanduser()
        return self.root / self.family

    def available(self) -> bool:
        return self.directory.is_dir()

    def missing_folder_error(self) -> DataError:
        return DataError(
            f"{self.name}: data folder {self.directory} not found; expected {self.layout} "
            f"(put the download there, set ${self.directory_env()} or pass directory=)"
        )

    @property
    def sidecar(self) -> Path:
        return sidecar_dir(self.directory)

    # -- subjects -----------------------------------------------------------------------------
    @abstractmethod
    def discover(self) -> list[ScanFiles]:
        """Every subject's files (any order). Raise DataError for a wrong or incomplete layout."""

    def scans(self) -> dict[str, ScanFiles]:
        """subject id -> files, sorted by id (discovered once per instance)."""
        if self._scans is None:
            if not self.directory.is_dir():
                raise self.missing_folder_error()
            found = self.discover()
            if not found:
                raise DataError(f"{self.directory}: no {self.name} subjects found; expected {self.layout}")
            by_id: dict[str, ScanFiles] = {}
            for scan in found:
                if scan.subject_id in by_id:
                    raise DataError(
                        f"{scan.image}: subject {scan.subject_id!r} also has {by_id[scan.subject_id].image}; expected one scan per subject"
                    )
                by_id[scan.subject_id] = scan
            if self.lesion_splits:
                for scan in by_id.values():
                    if scan.lesion_mask is None:
                        raise DataError(f"{scan.image}: no lesion mask for subject {scan.subject_id!r}; expected {self.layout}")
            self._scans = dict(sorted(by_id.items()))
        return self._scans

    def options(self) -> dict[str, Any]:
        """Constructor options that change the splits or volumes (part of the fingerprint)."""
        return {"seed": self.seed}

    def split_csv_path(self) -> Path:
        return self.sidecar / f"splits-{self.name}-seed{self.seed}.csv"

    def assign(self, subject_ids: Sequence[str]) -> dict[str, list[str]]:
        return assign_splits(subject_ids, self.split_plan, seed=self.seed, where=str(self.directory))

    def split_lists(self) -> dict[str, list[str]]:
        """split -> subject ids, computed from the subjects found, checked and written as CSV."""
        if self._splits is None:
            splits = self.assign(list(self.scans()))
            missing = [s for s in self.splits if s not in splits]
            if missing:  # pragma: no cover - a subclass whose plan and splits disagree
                raise DataError(f"{self.name}: split plan lacks {missing}")
            self._splits = {s: splits[s] for s in self.splits}
            try:
                write_splits_csv(self.split_csv_path(), self._splits)
            except OSError:
                pass  # the split is computed, not read back: an unwritable folder loses only the copy
        return self._splits

    def subjects(self, split: str) -> list[str]:
        self.check_split(split)
        return list(self.split_lists()[split])

    def participants(self) -> dict[str, dict[str, Any]]:
        """subject id -> demographic facts (age, sex, ...) where the layout has them."""
        return {}

    def subject_info(self, split: str) -> dict[str, dict[str, Any]]:
        info = self.participants()
        return {sid: dict(info[sid]) for sid in self.subjects(split) if sid in info}

    def extra_files(self) -> list[Path]:
        """Files besides the scans that feed the dataset (a participants table): fingerprinted too."""
        return []

    # -- reading ------------------------------------------------------------------------------
    def _lesion(self, labels: np.ndarray) -> np.ndarray:
        if self.lesion_labels is None:
            return labels > 0 if not self.ignore_labels else (labels > 0) & ~np.isin(labels, self.ignore_labels)
        return np.isin(labels, self.lesion_labels)

    def read_volume(self, scan: ScanFiles) -> Volume:
        """One subject's Volume at its native grid, every file checked."""
        image, affine = read_scan(scan.image, layout=self.layout)
        if scan.brain_mask is not None:
            labels, mask_affine = read_scan(scan.brain_mask, layout=self.layout, labels=True)
            check_same_grid(scan.image, image, affine, scan.brain_mask, labels, mask_affine)
            brain = labels > 0
            brain_source = str(scan.brain_mask)
        else:
            brain = image != 0
            brain_source = "image != 0"
        if not brain.any():
            where = scan.brain_mask if scan.brain_mask is not None else scan.image
            raise DataError(f"{where}: empty brain mask ({brain_source} selects no voxel)")
        lesion = None
        meta: dict[str, Any] = {}
        if scan.lesion_mask is not None and self.lesion_splits:
            labels, mask_affine = read_scan(scan.lesion_mask, layout=self.layout, labels=True)
            check_same_grid(scan.image, image, affine, scan.lesion_mask, labels, mask_affine)
            lesion = self._lesion(labels)
            if self.ignore_labels:
                meta[IGNORE_MASK] = np.isin(labels, self.ignore_labels)
        meta.update(
            {
                "dataset": self.name,
                "modality": self.modality,
                "image_file": str(scan.image),
                "brain_mask_source": brain_source,
            }
        )
        if scan.lesion_mask is not None:
            meta["lesion_file"] = str(scan.lesion_mask)
        return Volume(image=image, affine=affine, brain_mask=brain, subject_id=scan.subject_id, lesion_mask=lesion, meta=meta)

    def load(self, split: str) -> list[Volume]:
        self.check_split(split)
        scans = self.scans()
        info = self.participants()
        volumes = []
        for sid in self.subjects(split):
            volume = self.read_volume(scans[sid])
            volume.meta["split"] = split
            if sid in info:
                volume.meta["subject_info"] = dict(info[sid])
            volumes.append(volume)
        return volumes

    # -- fingerprint --------------------------------------------------------------------------
    def manifest(self) -> list[tuple[str, int, str]]:
        """(path relative to the data folder, size, sha256) of every file the dataset reads."""
        files: list[Path] = []
        for scan in self.scans().values():
            files.extend(scan.files)
        files.extend(self.extra_files())
        cache = ChecksumCache(self.sidecar / "checksums.json", self.directory)
        rows = []
        for f in sorted(set(files)):
            rows.append((cache._key(f), f.stat().st_size, cache.sha256(f)))
        cache.save()
        return rows

    def fingerprint(self) -> str:
        """sha256 of the adapter, its options, the file manifest and the split lists."""
        if self._fingerprint is None:
            payload = {
                "dataset": self.name,
                "adapter": f"{type(self).__module__}.{type(self).__qualname__}/v{self.adapter_version}",
                "options": self.options(),
                "files": [[rel, sha] for rel, _, sha in self.manifest()],
                "splits": self.split_lists(),
            }
            digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
            self._fingerprint = f"{self.name}:{digest[:24]}"
        return self._fingerprint


# -- helpers for adapters -------------------------------------------------------------------------
def match_files(folders: Iterable[Path], pattern: re.Pattern[str]) -> list[tuple[Path, re.Match[str]]]:
    """Files directly in ``folders`` whose name matches ``pattern`` (full match), sorted."""
    out = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            m = pattern.fullmatch(path.name)
            if m and path.is_file():
                out.append((path, m))
    return out


def nifti_names(folder: Path, limit: int = 3) -> str:
    """A few NIfTI file names found in ``folder`` (for 'nothing matched' errors)."""
    names = sorted(p.name for p in folder.rglob("*.nii*"))[:limit] if folder.is_dir() else []
    return ", ".join(names) if names else "no NIfTI files"
