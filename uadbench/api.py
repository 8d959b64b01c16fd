"""Evaluate a fitted method on your own scans, with the benchmark's pipeline and protocol.

The grid runner does four things per volume, each of them public here:

1. :func:`load_volume`: read a scan and its masks from NIfTI files, every file checked (a brain
   mask file, or ``image != 0`` for skull-stripped scans; a lesion mask for annotated scans);
2. :func:`uadbench.data.pipeline.preprocess`: the volume pipeline (percentile normalisation in the
   brain, RAS, the grid's voxel size and shape, exact affine);
3. :func:`predict_map`: the method's anomaly map, slice batch by slice batch, seeded per subject as
   the runner seeds it (:func:`uadbench.run.maps.predict_volume`);
4. :func:`uadbench.evaluation.evaluate_dataset` (thresholds from a labelled validation split and
   from healthy validation scans) or :func:`uadbench.evaluation.protocol.evaluate_crossfit`
   (thresholds cross-fitted over the annotated cases, for a handful of them).

:func:`evaluate_volumes` chains them; :func:`load_fitted_method` reads a method that ``uadbench
run`` fitted from the run's cache, with the image grid it was trained on. Anomaly maps come back
on the grid and, through :func:`uadbench.data.geometry.to_native`, in each scan's own voxel space
(:meth:`VolumesEvaluation.save_maps`), so they open over the original file in any viewer::

    import uadbench

    fitted = uadbench.load_fitted_method("runs/quickstart", "ae", seed=0)
    scans = [uadbench.load_volume(f"scans/{s}_T1.nii.gz", brain_mask=f"scans/{s}_brainmask.nii.gz",
                                  lesion_mask=f"scans/{s}_lesion.nii.gz") for s in ("p1", "p2", "p3")]
    result = uadbench.evaluate_volumes(fitted, scans, crossfit=3)
    print(result.evaluation.aggregates["auprc"], result.evaluation.thresholds["crossfit-bisection@3"].source)
    result.save_maps("maps/")            # <id>_anomaly_map.nii.gz in native space, <id>_anomaly_map_grid.nii.gz

A method's maps depend only on the method, the prepared image and the seed, so the same scans
prepared the same way give the maps a grid run gives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uadbench.data.pipeline import ImageGrid, get_image_grid, preprocess
from uadbench.data.volume import Volume
from uadbench.errors import UadbenchError
from uadbench.evaluation.results import DatasetEvaluation, EvalVolume

PathLike = str | os.PathLike


def load_volume(image: PathLike, *, brain_mask: PathLike | None = None, lesion_mask: PathLike | None = None,
                subject_id: str | None = None) -> Volume:
    """A scan at its native grid from NIfTI files, each checked (one-line errors naming the file).

    ``brain_mask``: a mask or parcellation file (brain = labels > 0) on the scan's grid; None for
    skull-stripped scans (brain = ``image != 0``). ``lesion_mask``: lesion labels (> 0) for an
    annotated scan; None for a healthy or unannotated one. ``subject_id`` defaults to the image's
    file name without ``.nii.gz``.
    """
    from uadbench.data.scans import check_same_grid, nifti_stem, read_scan

    image_path = Path(image)
    array, affine = read_scan(image_path)
    if brain_mask is not None:
        labels, mask_affine = read_scan(Path(brain_mask), labels=True)
        check_same_grid(image_path, array, affine, Path(brain_mask), labels, mask_affine)
        brain = labels > 0
    else:
        brain = array != 0
    if not brain.any():
        raise UadbenchError(f"{brain_mask or image_path}: empty brain mask ({'labels > 0' if brain_mask else 'image != 0'} selects no voxel)")
    lesion = None
    if lesion_mask is not None:
        labels, lesion_affine = read_scan(Path(lesion_mask), labels=True)
        check_same_grid(image_path, array, affine, Path(lesion_mask), labels, lesion_affine)
        lesion = labels > 0
    sid = subject_id or nifti_stem(image_path)
    return Volume(image=array, affine=affine, brain_mask=brain, subject_id=sid, lesion_mask=lesion,
                  meta={"image_file": str(image_path)})


@dataclass
class FittedMethod:
    """A method fitted by ``uadbench run``, in eval mode, with the image grid it was trained on."""

    method: Any
    grid: ImageGrid
    meta: dict[str, Any] = field(default_factory=dict)  # the fit's meta record (label, seed, config, history)


def load_fitted_method(run_dir: PathLike, method: str, *, seed: int = 0, cache_dir: PathLike | None = None,
                       device: str = "cpu") -> FittedMethod:
    """The fit of ``method`` (its label in the grid, e.g. ``"ae"``) and ``seed`` from a run's cache
    (``<run_dir>/cache`` unless ``cache_dir``), on ``device``."""
    import torch

    from uadbench.files import read_entry
    from uadbench.method import create_method
    from uadbench.run import layout
    from uadbench.run.maps import resolve_device

    cache = Path(cache_dir) if cache_dir is not None else layout.default_cache(Path(run_dir))
    fits = layout.fits_root(cache)
    metas = []
    for meta_path in sorted(fits.glob(f"*/{layout.META}")):
        try:
            metas.append((meta_path.parent, json.loads(meta_path.read_text())))
        except (OSError, ValueError):
            continue
    found = [(d, m) for d, m in metas if method in (m.get("label"), m.get("method")) and m.get("seed") == seed]
    if not found:
        have = sorted({f"{m.get('label')} seed {m.get('seed')}" for _, m in metas})
        raise UadbenchError(f"no fitted {method!r} seed {seed} in {fits}; fitted there: {', '.join(have) or 'none'}")
    if len({m.get("label") for _, m in found}) > 1:
        raise UadbenchError(f"{method!r} names several fits in {fits} ({', '.join(sorted({m['label'] for _, m in found}))}); pass the label")
    folder, meta = max(found, key=lambda dm: (dm[0] / layout.MODEL).stat().st_mtime if (dm[0] / layout.MODEL).is_file() else 0.0)
    grid = get_image_grid(meta["image_grid"])
    dev = resolve_device(device)
    model = create_method(meta["method"], meta.get("preset", "paper"), image_shape=grid.slice_shape, **meta.get("overrides", {}))
    state = folder / layout.MODEL
    if not state.is_file():
        raise UadbenchError(f"{state}: the fit has no checkpoint; rerun `uadbench run` to finish it")
    weights = read_entry(state, lambda p: torch.load(p, map_location=dev, weights_only=True), what="fit checkpoint")
    if weights is None:
        raise UadbenchError(f"{state}: the checkpoint was corrupt and is set aside; rerun `uadbench run` to fit it again")
    model.load_state_dict(weights)
    model.to(dev)
    for module in model.modules().values():
        module.eval()
    return FittedMethod(model, grid, meta)


def predict_map(method: Any, volume: Volume, *, seed: int = 0, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """The anomaly map of a volume on the method's grid (prepared with :func:`preprocess`),
    seeded by ``seed`` and the subject id as in a grid run; float32, same shape as the image."""
    from uadbench.run.maps import predict_volume, resolve_device, subject_seed

    method = method.method if isinstance(method, FittedMethod) else method
    amap, _, _ = predict_volume(method, volume.image, seed=subject_seed("predict", seed, volume.subject_id),
                                batch_size=batch_size, device=resolve_device(device))
    if not np.isfinite(amap).all():
        raise UadbenchError(f"method produced a non-finite anomaly map for volume {volume.subject_id!r}")
    return amap


@dataclass
class VolumesEvaluation:
    """What :func:`evaluate_volumes` returns: the protocol's numbers and every map."""

    evaluation: DatasetEvaluation
    prepared: dict[str, Volume]  # subject id -> the volume on the grid
    maps: dict[str, np.ndarray]  # subject id -> its anomaly map on the grid

    def native_map(self, subject_id: str, *, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(map, affine) of ``subject_id`` 's anomaly map in its scan's own voxel space."""
        from uadbench.data.geometry import native_geometry, to_native

        prepared = self.prepared[subject_id]
        affine, _ = native_geometry(prepared)
        return to_native(self.maps[subject_id], prepared, order=order), affine

    def save_maps(self, folder: PathLike, *, native: bool = True, grid: bool = True) -> list[Path]:
        """Write ``<id>_anomaly_map.nii.gz`` (native space) and ``<id>_anomaly_map_grid.nii.gz``."""
        from uadbench.data.nifti import save_nifti

        out, written = Path(folder), []
        for sid, amap in self.maps.items():
            if grid:
                written.append(out / f"{sid}_anomaly_map_grid.nii.gz")
                save_nifti(written[-1], amap, self.prepared[sid].affine)
            if native:
                array, affine = self.native_map(sid)
                written.append(out / f"{sid}_anomaly_map.nii.gz")
                save_nifti(written[-1], array, affine)
        return written


def evaluate_volumes(method: Any, volumes: Sequence[Volume], *, grid: ImageGrid | str | Mapping | None = None,
                     lesion_val: Sequence[Volume] | None = None, healthy_val: Sequence[Volume] | None = None,
                     crossfit: int | None = None, seed: int = 0, batch_size: int = 64, device: str = "cpu",
                     n_bootstrap: int = 1000) -> VolumesEvaluation:
    """Prepare, predict and evaluate ``volumes`` (native scans from :func:`load_volume` or a
    dataset's ``load``) with the harness's protocol.

    ``method``: a :class:`FittedMethod` (its grid is used) or a Method with ``grid`` given.
    Thresholds: ``lesion_val`` (annotated scans, not among ``volumes``) gives ``val-bisection`` /
    ``val-exact``; ``healthy_val`` (healthy scans) gives ``healthy-fpr@1/5/10%``; ``crossfit=k``
    instead cross-fits the Dice threshold over the annotated ``volumes`` (k folds, each tested
    once; ``lesion_val`` must then be None). Healthy scans among ``volumes`` get the
    false-positive volume. ``seed`` seeds the predictions (and the bootstrap) as a grid run does.
    """
    from uadbench.evaluation.protocol import evaluate_crossfit, evaluate_dataset

    if isinstance(method, FittedMethod):
        image_grid = get_image_grid(grid) if grid is not None else method.grid
        model = method.method
    else:
        if grid is None:
            raise UadbenchError("evaluate_volumes needs grid= (e.g. 'cpu') for a method that is not a FittedMethod")
        image_grid, model = get_image_grid(grid), method
    if crossfit is not None and lesion_val:
        raise UadbenchError("crossfit chooses thresholds on the annotated volumes themselves; pass lesion_val or crossfit, not both")
    volumes = list(volumes)
    if not volumes:
        raise UadbenchError("evaluate_volumes got no volumes")

    def run(split: Sequence[Volume]) -> tuple[list[EvalVolume], dict[str, Volume], dict[str, np.ndarray]]:
        evals, prepared, maps = [], {}, {}
        for vol in split:
            on_grid = preprocess(vol, image_grid)
            amap = predict_map(model, on_grid, seed=seed, batch_size=batch_size, device=device)
            prepared[vol.subject_id], maps[vol.subject_id] = on_grid, amap
            evals.append(EvalVolume(vol.subject_id, amap, on_grid.brain_mask, on_grid.lesion_mask, image_grid.spacing,
                                    image=on_grid.image, affine=on_grid.affine))
        return evals, prepared, maps

    test, prepared, maps = run(volumes)
    lesion = run(lesion_val)[0] if lesion_val else None
    healthy = run(healthy_val)[0] if healthy_val else None
    if crossfit is not None:
        result = evaluate_crossfit(test, k=crossfit, healthy_val=healthy, n_bootstrap=n_bootstrap, seed=seed)
    else:
        result = evaluate_dataset(test, lesion_val=lesion, healthy_val=healthy, n_bootstrap=n_bootstrap, seed=seed)
    return VolumesEvaluation(result, prepared, maps)


__all__ = ["FittedMethod", "VolumesEvaluation", "evaluate_volumes", "load_fitted_method", "load_volume", "predict_map"]
