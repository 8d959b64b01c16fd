"""A grid: what it fits and evaluates, its expansion into jobs, and its hash (the benchmark's identity)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uadbench.config import config_to_dict, create_config, stable_hash
from uadbench.data.dataset import parse_site_selector, site_selection
from uadbench.data.pipeline import ImageGrid
from uadbench.grid.entries import NO_SHIFT_SPEC, DatasetSpec, MethodSpec, ShiftSpec
from uadbench.grid.jobs import MAP_ROLES, EvalJob, FitJob, MapRef, data_term, make_fit_job, map_key, topological
from uadbench.records import component_versions
from uadbench.registry import METHODS


@dataclass
class GridSpec:
    name: str
    image_grid: ImageGrid
    seeds: tuple[int, ...]
    train_dataset: str
    methods: list[MethodSpec]
    datasets: list[DatasetSpec]
    shifts: list[ShiftSpec]
    description: str = ""
    data_seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 64
    source: str = ""
    raw: dict = field(default_factory=dict)
    data_root: str | None = None  # where the runner finds the data (set by run_grid)
    # each dataset's data term (its fingerprint: a file dataset stats every file) and the spec hash,
    # computed once per spec; dataclasses.replace (a new data_root) starts them afresh
    _terms: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def data_term(self, dataset: str) -> dict[str, Any]:
        """:func:`~uadbench.grid.jobs.data_term` of ``dataset``, once per spec."""
        if dataset not in self._terms:
            self._terms[dataset] = data_term(dataset, self.data_seed, self.image_grid, self.data_root)
        return self._terms[dataset]

    def predict_batch_size(self, method: str) -> int:
        """Slices per predict call: a whole volume for methods that declare ``whole_volume``."""
        return self.image_grid.shape[2] if METHODS.get(method).whole_volume else self.eval_batch_size

    @property
    def spec_hash(self) -> str:
        """The benchmark's identity: everything that sets its numbers, nothing presentational (once per spec)."""
        if self._hash is not None:
            return self._hash
        data = self.data_term
        self._hash = stable_hash(
            {
                "train": data(self.train_dataset),
                "seeds": list(self.seeds),
                "methods": [[m.name, config_to_dict(create_config(m.name, m.preset, m.overrides_dict)), m.precision, m.compile]
                            for m in self.methods],
                "datasets": [[d.name, d.val_split, d.test_split, data(d.name)] for d in self.datasets],
                "shifts": [[s.name, s.severity] for s in self.shifts],
                "eval_batch_size": self.eval_batch_size,
                "components": component_versions(),
            }
        )
        return self._hash

    # -- expansion -------------------------------------------------------------------------------
    def splits(self) -> list[tuple[str, str]]:
        """Every (dataset, split) the grid reads: healthy train/val/test, each dataset's val/test, and
        under a held-out site shift that site's healthy test and test splits."""
        needed = {(self.train_dataset, s) for s in ("train", "val", "test")}
        needed |= {(ds.name, s) for ds in self.datasets for s in (ds.val_split, ds.test_split)}
        for site in (shift.site for shift in self.shifts if shift.site is not None):
            needed.add((site_selection(self.train_dataset, site), "test"))
            needed |= {(site_selection(ds.name, site), ds.test_split) for ds in self.datasets if parse_site_selector(ds.name)[1]}
        return sorted(needed)

    def acquired_splits(self) -> list[tuple[str, str, ShiftSpec]]:
        """Every (dataset, split, shift) re-acquired under an acquisition shift: the shifted test splits."""
        from uadbench.shifts.base import is_acquisition

        tests = dict.fromkeys([(self.train_dataset, "test"), *((ds.name, ds.test_split) for ds in self.datasets)])
        return [(name, split, shift) for shift in self.shifts if shift.name != "none" and shift.site is None and is_acquisition(shift.name)
                for name, split in tests]

    def fit_jobs(self, runtime: Mapping[str, Any] | None = None) -> list[FitJob]:
        """The fits the grid lists (one per method and seed), in grid order; ``runtime`` (threads,
        device type) goes into their keys."""
        return [
            make_fit_job(m, self.train_dataset, self.data_seed, seed, self.image_grid, runtime, self.data_root,
                         self.data_term(self.train_dataset))
            for m in self.methods
            for seed in self.seeds
        ]

    def fit_graph(self, fits: list[FitJob] | None = None) -> list[FitJob]:
        """Every fit to run, the listed ones and those they reuse, dependencies first."""
        return topological(fits if fits is not None else self.fit_jobs())

    def eval_jobs(self, fits: list[FitJob] | None = None) -> list[EvalJob]:
        """Every evaluation cell, carrying the keys of the maps it reads (so nothing downstream derives them again)."""
        components = component_versions()
        jobs = []
        for fit in fits if fits is not None else self.fit_jobs():
            batch = self.predict_batch_size(fit.method.name)

            def ref(dataset: str, split: str, shift: ShiftSpec) -> MapRef:
                return MapRef(dataset, split, shift, map_key(fit, dataset, split, shift, batch, self.data_term(dataset)))  # noqa: B023

            for ds in self.datasets:
                for shift in self.shifts:
                    test, healthy, shift_ = ds.name, self.train_dataset, shift
                    if shift.site is not None:  # a held-out site: that site's subjects of the same datasets, unshifted
                        if not parse_site_selector(ds.name)[1]:
                            continue  # a dataset that is not a site selection has no held-out site
                        test, healthy, shift_ = site_selection(ds.name, shift.site), site_selection(healthy, shift.site), NO_SHIFT_SPEC
                    # in MAP_ROLES order: test, lesion_val, healthy_val, healthy_test
                    maps = (ref(test, ds.test_split, shift_), ref(ds.name, ds.val_split, NO_SHIFT_SPEC),
                            ref(self.train_dataset, "val", NO_SHIFT_SPEC), ref(healthy, "test", shift_))
                    key = stable_hash({**{role: m.key for role, m in zip(MAP_ROLES, maps)}, "components": components}, length=16)
                    jobs.append(EvalJob(fit, ds, shift, key, maps))
        return jobs
