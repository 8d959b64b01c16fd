"""Anomaly maps of a fitted method: one volume, one split under a shift, and the map cache.

Predictions are deterministic: each volume is predicted with a generator seeded from the fit's
seed and the subject id, and a shift draws its randomness from the shift, the severity, the seed
and the subject. So the maps of one (fit, dataset, split, shift) are the same whichever cell asks
for them, and they are cached once under the key the evaluation job carries
(:func:`uadbench.grid.jobs.map_key`, at ``layout.map_path``): a new metric or threshold protocol
recomputes from cached maps without predicting again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uadbench.data.volume import Volume
from uadbench.errors import UadbenchError
from uadbench.evaluation.results import EvalVolume
from uadbench.files import atomic_path, entry_intact, read_entry, record_digest, write_json_atomic
from uadbench.grid.entries import ShiftSpec
from uadbench.grid.jobs import FitJob, MapRef
from uadbench.run import layout
from uadbench.run.splits import prepare_split
from uadbench.shifts.base import NO_SHIFT, is_acquisition, shifted_image, subject_seed


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


def predict_split(method, volumes: list[Volume], images: list[np.ndarray], *, seed: int, batch_size: int, device,
                  precision: str = "fp32") -> SplitMaps:
    """Predict every volume of a split from its ``images`` (the volumes' images as the method sees
    them, shifted or not), seeded per subject."""
    maps, recons, seconds = [], [], []
    for v, image in zip(volumes, images, strict=True):
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
    """Anomaly maps on disk, one npz per key, written atomically with its sha256 beside it."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def path(self, key: str) -> Path:
        return layout.map_path(self.cache_dir, key)

    def load(self, key: str) -> SplitMaps | None:
        """The maps cached under ``key``; None when there are none or they were corrupt (then moved
        aside, to be predicted again)."""
        return read_entry(self.path(key), _read_maps, what="anomaly maps")

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
        record_digest(self.path(key))


def _read_maps(path: Path) -> SplitMaps:
    with np.load(path, allow_pickle=False) as z:
        recons = list(z["reconstruction"]) if "reconstruction" in z else None
        return SplitMaps([str(s) for s in z["subject_ids"]], list(z["anomaly_map"]), recons, [float(s) for s in z["seconds"]])


# -- fitted methods -------------------------------------------------------------------------------
def fit_dir(cache_dir: Path, job: FitJob) -> Path:
    return layout.fit_dir(cache_dir, job.key)


def resolve_device(device):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UadbenchError("device 'cuda' requested but no CUDA device is available; use device = 'cpu'")
    return torch.device(device)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_state(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def read_fit_record(cache_dir: Path, job: FitJob) -> dict | None:
    """The meta record of ``job``'s fit in the cache, checked against its sha256; None when there
    is none or it was corrupt (then moved aside)."""
    return read_entry(layout.meta_path(cache_dir, job.key), _read_json, what="fit record")


def read_fit(cache_dir: Path, job: FitJob) -> dict | None:
    """The meta record of ``job``'s finished fit in the cache, it and the checkpoint checked against
    their sha256; None when the fit is not there or was corrupt (then moved aside, to be fitted again)."""
    meta = read_fit_record(cache_dir, job)
    if meta is None or not entry_intact(layout.model_path(cache_dir, job.key), _read_state, what="fit checkpoint"):
        return None
    return meta


def save_fit(cache_dir: Path, job: FitJob, state: dict, meta: dict) -> None:
    """Write a finished fit: its checkpoint, then its meta record, each with its sha256 beside it."""
    import torch

    model = layout.model_path(cache_dir, job.key)
    with atomic_path(model, suffix=".pt") as tmp:
        torch.save(state, tmp)
    record_digest(model)
    write_json_atomic(layout.meta_path(cache_dir, job.key), meta)
    record_digest(layout.meta_path(cache_dir, job.key))


def load_fitted(job: FitJob, cache_dir: Path, device="cpu"):
    """The fitted method of ``job`` from the cache, in eval mode on ``device``."""
    import torch

    from uadbench.method import create_method

    path = layout.model_path(cache_dir, job.key)
    if not path.is_file():
        raise UadbenchError(f"no checkpoint for {job.method.display} seed {job.seed} at {path}")
    dev = resolve_device(device)
    state = read_entry(path, lambda p: torch.load(p, map_location=dev, weights_only=True), what="fit checkpoint")
    if state is None:
        raise UadbenchError(f"the checkpoint of {job.method.display} seed {job.seed} was corrupt and is set aside; rerun to fit it again")
    method = create_method(job.method.name, config=job.config, image_shape=job.image_grid.slice_shape)
    method.load_state_dict(state)
    method.to(dev)
    for module in method.modules().values():
        module.eval()
    return method


class MapSource:
    """The evaluation volumes of one fit: maps from the cache, or predicted (and then cached).

    Each :class:`~uadbench.grid.jobs.MapRef` names the maps' key, computed once with the grid's
    jobs. The fitted method is loaded on first need. Maps, prepared splits and shifted images
    already asked for in this process are kept in memory, so a split shared by several cells (the
    healthy test split under one shift) is predicted once and each shift is applied to a volume once.
    """

    def __init__(self, fit: FitJob, *, batch_size: int, cache_dir: Path, data_root: Path | None, device) -> None:
        self.fit, self.batch_size, self.cache_dir, self.data_root, self.device = fit, batch_size, cache_dir, data_root, device
        self.cache = MapCache(cache_dir)
        self._method = None
        self._maps: dict[str, SplitMaps] = {}
        self._splits: dict[tuple, list[Volume]] = {}
        self._images: dict[tuple, list[np.ndarray]] = {}

    def _split(self, dataset: str, split: str, shift: ShiftSpec) -> tuple[list[Volume], str]:
        """The split's volumes as the method sees them under ``shift``, and the pixel shift still to
        apply to them: an acquisition shift gives re-acquired volumes and leaves nothing to apply."""
        acquired = shift.name != NO_SHIFT and is_acquisition(shift.name)
        mem = (dataset, split, shift.name, shift.severity) if acquired else (dataset, split)
        if mem not in self._splits:
            self._splits[mem] = prepare_split(dataset, split, grid=self.fit.image_grid, data_seed=self.fit.data_seed,
                                              cache_dir=self.cache_dir, data_root=self.data_root, shift=shift if acquired else None)
        return self._splits[mem], (NO_SHIFT if acquired else shift.name)

    def split_volumes(self, dataset: str, split: str, shift: ShiftSpec) -> list[Volume]:
        return self._split(dataset, split, shift)[0]

    def images(self, dataset: str, split: str, shift: ShiftSpec) -> list[np.ndarray]:
        """The images of a split as the method sees them under a shift (shifted once; nothing is predicted)."""
        mem = (dataset, split, shift.name, shift.severity)
        if mem not in self._images:
            volumes, pixel_shift = self._split(dataset, split, shift)
            self._images[mem] = [shifted_image(v, pixel_shift, shift.severity, self.fit.seed) for v in volumes]
        return self._images[mem]

    def maps(self, ref: MapRef) -> SplitMaps:
        if ref.key in self._maps:
            return self._maps[ref.key]
        maps = self.cache.load(ref.key)
        if maps is None:
            if self._method is None:
                self._method = load_fitted(self.fit, self.cache_dir, self.device)
            volumes = self.split_volumes(ref.dataset, ref.split, ref.shift)
            maps = predict_split(self._method, volumes, self.images(ref.dataset, ref.split, ref.shift), seed=self.fit.seed,
                                 batch_size=self.batch_size, device=self.device, precision=self.fit.method.precision)
            self.cache.save(ref.key, maps)
        self._maps[ref.key] = maps
        return maps

    def volumes(self, ref: MapRef) -> list[EvalVolume]:
        """:class:`EvalVolume` s of a split under a shift: shifted image, map, masks."""
        maps = self.maps(ref)
        volumes, images = self.split_volumes(ref.dataset, ref.split, ref.shift), self.images(ref.dataset, ref.split, ref.shift)
        out = []
        for i, (v, image) in enumerate(zip(volumes, images, strict=True)):
            if maps.subject_ids[i] != v.subject_id:
                raise UadbenchError(f"cached maps of {ref.dataset}/{ref.split} do not match its subjects; delete {self.cache.path(ref.key)}")
            recon = maps.reconstructions[i] if maps.reconstructions is not None else None
            out.append(EvalVolume(v.subject_id, maps.maps[i], v.brain_mask, v.lesion_mask, self.fit.image_grid.spacing,
                                  image=image, reconstruction=recon, affine=v.affine))
        return out
