"""The manifest of a prepared dataset: one fingerprint per prepared volume, so that two labs can
compare their preparation file by file, and a rerun knows what is done.

``<out>/<family>/prepare-manifest.json`` holds one entry per (dataset, subject)::

    "ixi-t1/IXI002-Guys-0828": {
      "recipe":   sha256 of the settings, the template and the input files' checksums,
      "inputs":   {"image": {"path", "sha256"}, "brain_mask": ..., "lesion_mask": ...},
      "steps":    what each step did ("mask (..._DLMUSE.nii.gz > 0)", "affine to MNI152 ...", "n4"),
      "files":    {"image": {"path", "sha256", "data_sha256"}, "brain_mask": ..., "lesion_mask": ...},
      "fingerprint": {
        "shape", "spacing_mm", "affine",
        "intensity_percentiles": {"p1", "p5", "p25", "p50", "p75", "p95", "p99"}   (brain voxels),
        "brain_volume_ml", "lesion_volume_ml" (label maps: voxels > 0),
        "registration": {"registered", "ncc", "nmi", "transform"}
      },
      "seconds", "prepared" (UTC time), "versions"
    }

``sha256`` is the file's checksum (what a rerun checks); ``data_sha256`` hashes the voxels, their
type and shape and the affine, which stays the same when two labs' gzip compress the same voxels
differently. The registration similarity compares the prepared image with the template brain on
the image's grid, over the image's brain mask: ``ncc`` is Pearson's correlation of the
intensities, ``nmi`` the normalised mutual information (H(A) + H(B)) / H(A, B) of a 32-bin joint
histogram (1: independent, 2: one determines the other). A scan that was not registered (data
registered already) still gets both, against the template resampled onto its grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uadbench.errors import DataError
from uadbench.files import sha256_file, write_json_atomic

MANIFEST_NAME = "prepare-manifest.json"
MANIFEST_FORMAT = "uadbench-prepare-manifest"
MANIFEST_VERSION = 1
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
NMI_BINS = 32


def _round(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits (manifests compare across machines)."""
    return float(f"{float(value):.{digits}g}")


def similarity(image: np.ndarray, template: np.ndarray, brain: np.ndarray) -> dict[str, float | None]:
    """``ncc`` and ``nmi`` of ``image`` and ``template`` over ``brain`` (see the module); None
    where undefined (a constant image or template over the brain)."""
    a = np.asarray(image, dtype=np.float64)[brain]
    b = np.asarray(template, dtype=np.float64)[brain]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return {"ncc": None, "nmi": None}
    ncc = float(np.corrcoef(a, b)[0, 1])
    joint, _, _ = np.histogram2d(a, b, bins=NMI_BINS)
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    nmi = (entropy(p.sum(axis=1)) + entropy(p.sum(axis=0))) / entropy(p.ravel())
    return {"ncc": _round(ncc), "nmi": _round(nmi)}


def fingerprint(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, *, template: np.ndarray,
                labels: dict[str, np.ndarray] | None = None, registered: bool, transform: list[float] | None = None) -> dict[str, Any]:
    """The numbers two preparations of one scan should share (see the module)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    values = np.asarray(image, dtype=np.float64)[brain]
    out: dict[str, Any] = {
        "shape": [int(s) for s in image.shape],
        "spacing_mm": [_round(s) for s in spacing],
        "affine": [[_round(v, 9) for v in row] for row in np.asarray(affine, dtype=np.float64).tolist()],
        "intensity_percentiles": {f"p{q}": _round(v) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))},
        "brain_volume_ml": _round(int(np.count_nonzero(brain)) * voxel_ml),
    }
    for name, arr in (labels or {}).items():
        out[f"{name.removesuffix('_mask')}_volume_ml"] = _round(int(np.count_nonzero(arr > 0)) * voxel_ml)
    registration: dict[str, Any] = {"registered": registered, **similarity(image, template, brain)}
    if transform is not None:
        registration["transform"] = [_round(v, 9) for v in transform]
    out["registration"] = registration
    return out


@dataclass
class Manifest:
    """The entries of one manifest file; :meth:`save` writes it atomically."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.is_file():
            return cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable manifest ({exc}); move it away to prepare again from scratch") from None
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT or not isinstance(raw.get("entries"), dict):
            raise DataError(f"{path}: not a uadbench prepare manifest; move it away or choose another --out")
        if raw.get("version") != MANIFEST_VERSION:
            return cls(path)  # an older format: everything is prepared again
        return cls(path, dict(raw["entries"]))

    def save(self) -> None:
        write_json_atomic(self.path, {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "entries": dict(sorted(self.entries.items()))})

    def is_done(self, key: str, recipe: str) -> bool:
        """Whether ``key`` was prepared with ``recipe`` and every file it wrote is there unchanged."""
        entry = self.entries.get(key)
        if not entry or entry.get("recipe") != recipe:
            return False
        base = self.path.parent
        for info in entry.get("files", {}).values():
            path = base / info["path"]
            if not path.is_file() or sha256_file(path) != info["sha256"]:
                return False
        return True

    def owner(self, relpath: str, *, other_than: str) -> tuple[str, dict[str, Any]] | None:
        """The entry (other than ``other_than``) that wrote the file ``relpath``, if any."""
        for key, entry in self.entries.items():
            if key == other_than:
                continue
            for info in entry.get("files", {}).values():
                if info.get("path") == relpath:
                    return key, info
        return None
