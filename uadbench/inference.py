"""Anomaly maps of a fitted method: one volume, one split under a shift, and the map cache.

Predictions are deterministic: each volume is predicted with a generator seeded from the fit's
seed and the subject id, and a shift draws its randomness from the shift, the severity, the seed
and the subject. So the maps of one (fit, dataset, split, shift) are the same whichever cell asks
for them, and they are cached once under :func:`uadbench.grid.map_key`: a new metric or threshold
protocol recomputes from cached maps without predicting again.

    <cache>/maps/<key>.npz     anomaly maps (and reconstructions) of one split, float32
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uadbench.data.volume import Volume
from uadbench.errors import UadbenchError
from uadbench.evaluation.protocol import EvalVolume
from uadbench.grid import FitJob, map_key
from uadbench.io_utils import atomic_path
from uadbench.shifts import NO_SHIFT, is_acquisition, shifted_image, subject_seed


def predict_volume(method, image: np.ndarray, *, seed: int, batch_size: int, device,
                   precision: str = "fp32") -> tuple[np.ndarray, np.ndarray | None, float]:
    """The method's anomaly map (and reconstruction) of one (X, Y, Z) volume, axial slice batch by
    slice batch, under ``precision`` (``bf16``/``fp16``: autocast); returns (map, reconstruction or
    None, seconds)."""
    import contextlib

    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))[:, None].float()  # (Z,1,X,Y)
    generator = torch.Generator().manual_seed(seed)
    maps, recons = [], []
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        for i in range(0, x.shape[0], batch_size):
            batch = x[i : i + batch_size]
            out = method.predict(batch.to(device), generator=generator)
            if tuple(out.anomaly_map.shape) != tuple(batch.shape):
                raise UadbenchError(
                    f"method {type(method).__name__} returned a map of shape {tuple(out.anomaly_map.shape)} "
                    f"for input {tuple(batch.shape)}"
                )
            maps.append(out.anomaly_map.float().cpu())
            if out.reconstruction is not None:
                recons.append(out.reconstruction.float().cpu())
    seconds = time.perf_counter() - start
    amap = np.moveaxis(torch.cat(maps)[:, 0].numpy(), 0, -1).astype(np.float32)
    recon = np.moveaxis(torch.cat(recons)[:, 0].numpy(), 0, -1).astype(np.float32) if recons else None
    return amap, recon, seconds


@dataclass
class SplitMaps:
    """The maps of one split under one shift, in the split's subject order."""

    subject_ids: list[str]
    maps: list[np.ndarray]
    reconstructions: list[np.ndarray] | None
    seconds: list[float]


def predict_split(method, volumes: list[Volume], *, shift_name: str, severity: float | None, seed: int,
                  batch_size: int, device, precision: str = "fp32") -> SplitMaps:
    """Predict every volume of a split under a shift (seeded per subject)."""
    maps, recons, seconds = [], [], []
    for v in volumes:
        image = shifted_image(v, shift_name, severity, seed)
        amap, recon, sec = predict_volume(method, image, seed=subject_seed("predict", seed, v.subject_id),
                                          batch_size=batch_size, device=device, precision=precision)
        if not np.isfinite(amap).all():
            raise UadbenchError(f"method produced a non-finite anomaly map for volume {v.subject_id!r}")
        maps.append(amap)
        recons.append(recon)
        seconds.append(sec)
    has_recon = all(r is not None for r in recons)
    return SplitMaps([v.subject_id for v in volumes], maps, recons if has_recon else None, seconds)  # type: ignore[arg-type]


class MapCache:
    """Anomaly maps on disk, one npz per key, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> SplitMaps | None:
        path = self.path(key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            recons = list(z["reconstruction"]) if "reconstruction" in z else None
            return SplitMaps([str(s) for s in z["subject_ids"]], list(z["anomaly_map"]), recons,
                             [float(s) for s in z["seconds"]])

    def save(self, key: str, maps: SplitMaps) -> None:
        arrays = {
            "subject_ids": np.array(maps.subject_ids),
            "anomaly_map": np.stack(maps.maps),
            "seconds": np.array(maps.seconds, dtype=np.float64),
        }
        if maps.reconstructions is not None:
            arrays["reconstruction"] = np.stack(maps.reconstructions)
        with atomic_path(self.path(key), suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds may bind allow_pickle


# -- fitted methods -------------------------------------------------------------------------------
def fit_dir(cache_dir: Path, job: FitJob) -> Path:
    return cache_dir / "fits" / job.key


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UadbenchError("device 'cuda' requested but no CUDA device is available; use device = 'cpu'")
    return torch.device(device)


def load_fitted(job: FitJob, cache_dir: Path, device: str = "cpu"):
    """The fitted method of ``job`` from the cache, in eval mode on ``device``."""
    import torch

    from uadbench.method import create_method

    path = fit_dir(cache_dir, job) / "model.pt"
    if not path.is_file():
        raise UadbenchError(f"no checkpoint for {job.method.display} seed {job.seed} at {path}")
    dev = resolve_device(device)
    method = create_method(job.method.name, config=job.config, image_shape=job.image_grid.slice_shape)
    method.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    method.to(dev)
    for module in method.modules().values():
        module.eval()
    return method


class MapSource:
    """The evaluation volumes of one fit: maps from the cache, or predicted (and then cached).

    ``load_method`` builds the fitted method on first need; ``prepare`` returns a prepared split
    (``prepare(dataset, split, grid=, data_seed=, cache_dir=, data_root=)``). Maps already asked for
    in this process are kept in memory, so a split shared by several cells (the healthy test split
    under one shift) is predicted once.
    """

    def __init__(self, fit, *, spec, cache_dir: Path, data_root: Path | None, device, load_method, prepare) -> None:
        self.fit, self.spec, self.cache_dir, self.data_root, self.device = fit, spec, cache_dir, data_root, device
        self.cache = MapCache(cache_dir / "maps")
        self._load_method, self._prepare = load_method, prepare
        self._method = None
        self._maps: dict[tuple, SplitMaps] = {}
        self._splits: dict[tuple, list[Volume]] = {}

    def _split(self, dataset: str, split: str, shift=None) -> tuple[list[Volume], str]:
        """The split's volumes as the method sees them under ``shift``, and the pixel shift still to
        apply to them: an acquisition shift gives re-acquired volumes and leaves nothing to apply."""
        acquired = shift is not None and is_acquisition(shift.name)
        mem = (dataset, split, shift.name, shift.severity) if acquired else (dataset, split)
        if mem not in self._splits:
            self._splits[mem] = self._prepare(dataset, split, grid=self.fit.image_grid, data_seed=self.fit.data_seed,
                                              cache_dir=self.cache_dir, data_root=self.data_root,
                                              **({"shift": shift} if acquired else {}))
        return self._splits[mem], (NO_SHIFT if acquired or shift is None else shift.name)

    def maps(self, dataset: str, split: str, shift) -> SplitMaps:
        mem = (dataset, split, shift.name, shift.severity)
        if mem in self._maps:
            return self._maps[mem]
        batch = self.spec.predict_batch_size(self.fit.method.name)
        key = map_key(self.fit, dataset, split, shift, batch)
        maps = self.cache.load(key)
        if maps is None:
            if self._method is None:
                self._method = self._load_method()
            volumes, pixel_shift = self._split(dataset, split, shift)
            maps = predict_split(self._method, volumes, shift_name=pixel_shift, severity=shift.severity,
                                 seed=self.fit.seed, batch_size=batch, device=self.device, precision=self.fit.method.precision)
            self.cache.save(key, maps)
        self._maps[mem] = maps
        return maps

    def images(self, dataset: str, split: str, shift) -> list[np.ndarray]:
        """The images of a split as the method sees them under a shift (nothing is predicted)."""
        volumes, pixel_shift = self._split(dataset, split, shift)
        return [shifted_image(v, pixel_shift, shift.severity, self.fit.seed) for v in volumes]

    def seconds(self, dataset: str, split: str, shift) -> list[float]:
        return self.maps(dataset, split, shift).seconds

    def volumes(self, dataset: str, split: str, shift) -> list:
        """:class:`EvalVolume` s of a split under a shift: shifted image, map, masks."""
        maps = self.maps(dataset, split, shift)
        out = []
        volumes, pixel_shift = self._split(dataset, split, shift)
        for i, v in enumerate(volumes):
            if maps.subject_ids[i] != v.subject_id:
                raise UadbenchError(f"cached maps of {dataset}/{split} do not match its subjects; delete {self.cache.directory}")
            recon = maps.reconstructions[i] if maps.reconstructions is not None else None
            out.append(EvalVolume(v.subject_id, maps.maps[i], v.brain_mask, v.lesion_mask, self.fit.image_grid.spacing,
                                  image=shifted_image(v, pixel_shift, shift.severity, self.fit.seed), reconstruction=recon,
                                  affine=v.affine))
        return out
