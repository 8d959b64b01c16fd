"""The job graph's nodes and every cache key: a fit, an evaluation cell, the maps they read.

Every key hashes what sets the value it keys: the data term (the dataset's fingerprint, the volume
pipeline version and the image grid), the method's config, the seed, and the versions of the
protocol, metrics and shifts (:func:`uadbench.records.component_versions`). The paths these keys
name on disk are spelled in :mod:`uadbench.run.layout` alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uadbench.config import config_hash, config_to_dict, create_config, stable_hash
from uadbench.data.dataset import create_dataset
from uadbench.data.pipeline import PIPELINE_VERSION, ImageGrid
from uadbench.grid.entries import DatasetSpec, MethodSpec, ShiftSpec
from uadbench.records import component_versions, numeric_versions
from uadbench.registry import METHODS

FIT_FORMAT = "2"  # the layout of a cached fit (model.pt + meta.json)


def data_term(dataset: str, data_seed: int, image_grid: ImageGrid, data_root: str | None = None) -> dict[str, Any]:
    """What sets a prepared split: the dataset's fingerprint (what the data are, wherever they
    lie), the pipeline version and the grid. ``data_root`` only says where to find the data."""
    source = create_dataset(dataset, root=data_root, seed=data_seed)
    return {"fingerprint": source.fingerprint(), "pipeline": PIPELINE_VERSION, "grid": image_grid.to_dict(),
            "dataset_version": type(source).version}


@dataclass(frozen=True)
class FitJob:
    method: MethodSpec
    config: Any
    config_hash: str
    train_dataset: str
    data_seed: int
    seed: int
    image_grid: ImageGrid
    key: str
    depends_on: tuple[FitJob, ...] = ()  # fits this one reuses (Method.dependencies)
    data_root: str | None = None  # where the data lie (not part of the key: the fingerprint is)


@dataclass(frozen=True)
class MapRef:
    """The anomaly maps of one fit on one (dataset, split, shift), by their cache key."""

    dataset: str
    split: str
    shift: ShiftSpec
    key: str


MAP_ROLES = ("test", "lesion_val", "healthy_val", "healthy_test")  # the maps an evaluation cell reads


@dataclass(frozen=True)
class EvalJob:
    fit: FitJob
    dataset: DatasetSpec
    shift: ShiftSpec
    key: str
    maps: tuple[MapRef, ...] = ()  # one per MAP_ROLES entry, in that order

    def map(self, role: str) -> MapRef:
        return self.maps[MAP_ROLES.index(role)]


def make_fit_job(method: MethodSpec, train_dataset: str, data_seed: int, seed: int, image_grid: ImageGrid,
                 runtime: Mapping[str, Any] | None = None, data_root: str | None = None, train_term: dict[str, Any] | None = None) -> FitJob:
    """The fit of ``method`` on ``train_dataset``; its key hashes everything that sets the weights,
    ``runtime`` included (torch threads and device type: both can change the numbers).
    ``train_term``: the training dataset's :func:`data_term`, when the caller has it already."""
    if train_term is None:
        train_term = data_term(train_dataset, data_seed, image_grid, data_root)
    config = create_config(method.name, method.preset, method.overrides_dict)
    cls = METHODS.get(method.name)
    deps = tuple(
        make_fit_job(MethodSpec(name, preset, tuple(sorted(dict(overrides).items())), "", method.precision, method.compile),
                     train_dataset, data_seed, seed, image_grid, runtime, data_root, train_term)
        for name, (preset, overrides) in cls.dependencies(config).items()
    )
    key = stable_hash(
        {
            "format": FIT_FORMAT,
            "method": method.name,
            "config": config_to_dict(config),
            "precision": method.precision,
            "compile": method.compile,
            "train": train_term,
            "seed": seed,
            "depends_on": [d.key for d in deps],
            "runtime": dict(runtime or {}),
            "method_version": cls.version,
            "libraries": numeric_versions(),  # torch, numpy, scipy, monai, scikit-image: each can move a trained model's numbers
        },
        length=16,
    )
    chash = config_hash(method.name, config, method.precision, method.compile)
    return FitJob(method, config, chash, train_dataset, data_seed, seed, image_grid, key, deps, data_root)


def topological(fits: list[FitJob]) -> list[FitJob]:
    """Every fit of ``fits`` and of their dependencies, once each, dependencies first."""
    out: dict[str, FitJob] = {}

    def visit(job: FitJob) -> None:
        for dep in job.depends_on:
            visit(dep)
        out.setdefault(job.key, job)

    for job in fits:
        visit(job)
    return list(out.values())


def map_key(fit: FitJob, dataset: str, split: str, shift: ShiftSpec, batch_size: int, data: dict[str, Any] | None = None) -> str:
    """Key of the anomaly maps of ``fit`` on one (dataset, split, shift); ``data``: the dataset's
    :func:`data_term`, when the caller has it already."""
    return stable_hash(
        {
            "fit": fit.key,
            "data": data if data is not None else data_term(dataset, fit.data_seed, fit.image_grid, fit.data_root),
            "dataset": dataset,
            "split": split,
            "shift": [shift.name, shift.severity],
            "shifts_version": component_versions()["shifts"],
            "batch_size": batch_size,
        },
        length=16,
    )
