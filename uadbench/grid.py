"""Grid specs: a TOML file -> the job graph (FitJobs with dependency edges, EvalJobs). No torch.

A grid file looks like::

    name = "quickstart"
    image_grid = "cpu"                 # "paper" | "cpu" | "smoke" | {shape = [X, Y, Z], spacing = mm}
    seeds = [0]
    train_dataset = "phantom-healthy-t2w"

    [[methods]]
    name = "ae"
    preset = "cpu"
    overrides = { steps = 400 }        # optional: any field of the method's Config
    # a list where the field takes one value sweeps it: one fit per value, labelled ae[steps=300]
    # overrides = { steps = [300, 1000, 3000] }
    # precision = "bf16", compile = true  (optional: GPU arithmetic, part of the fit key)


    [[datasets]]
    name = "phantom-tumour-t2w"        # val_split = "val", test_split = "test" by default

    [[shifts]]
    name = "gamma"
    severities = [0.7, 1.5]            # the shift's own scale, or calibrated levels:
    # ssim = [0.95, 0.9, 0.8]          # mean SSIM of shifted to original healthy scans (uadbench/shift_calibration.py)

    # optional: shift_levels = "table.json" (uadbench calibrate-shifts --out), notes = "..." (what the
    # results can and cannot show; printed by published editions), [executor] (where `uadbench run` runs it)

Every grid is evaluated without a shift too ("none"). Shifts apply to the test split only;
thresholds come from the unshifted validation splits, as in deployment.

The graph is expanded here, once: a fit that reuses another (mhd on cddpm) names that fit in
``FitJob.depends_on``; :meth:`GridSpec.fit_graph` lists every fit, dependencies first. Every key
hashes what sets the value it keys: the data term (the dataset's fingerprint, the volume pipeline
version and the image grid), the method's config, the seed, and the versions of the protocol,
metrics and shifts (:func:`uadbench.records.component_versions`).
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uadbench.config import config_hash, config_to_dict, create_config, stable_hash
from uadbench.data.dataset import create_dataset
from uadbench.data.pipeline import PIPELINE_VERSION, ImageGrid, get_image_grid
from uadbench.errors import ConfigError
from uadbench.records import component_versions, shift_label
from uadbench.registry import DATASETS, METHODS, SHIFTS

GRID_KEYS = {
    "name", "description", "image_grid", "seeds", "train_dataset", "methods", "datasets",
    "shifts", "data_seed", "device", "eval_batch_size", "executor", "shift_levels", "notes",
}
METHOD_KEYS = {"name", "preset", "overrides", "label", "precision", "compile"}
PRECISIONS = ("fp32", "bf16", "fp16")
DATASET_KEYS = {"name", "val_split", "test_split"}
SHIFT_KEYS = {"name", "severities", "ssim"}
FIT_FORMAT = "2"  # the layout of a cached fit (model.pt + meta.json)
SEED_LIMIT = 2**32  # seeds and data_seed lie in [0, 2^32): numpy's seeding range
MAX_VOXELS = 256**3  # per volume on the image grid: a whole head at 1 mm (see _check_image_grid)
MAX_EVAL_BATCH_SIZE = 4096  # slices per predict call


@dataclass(frozen=True)
class MethodSpec:
    name: str
    preset: str = "paper"
    overrides: tuple[tuple[str, Any], ...] = ()
    label: str = ""
    precision: str = "fp32"  # training and prediction arithmetic: fp32, bf16 or fp16 (with a grad scaler)
    compile: bool = False  # torch.compile the networks that dominate a step (methods that support it)
    sweep: tuple[tuple[str, Any], ...] = ()  # the swept config fields and this entry's values (in overrides too)

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    val_split: str = "val"
    test_split: str = "test"


@dataclass(frozen=True)
class ShiftSpec:
    name: str
    severity: float | None = None

    @property
    def label(self) -> str:
        return shift_label(self.name, self.severity)


NO_SHIFT_SPEC = ShiftSpec("none")


def data_term(dataset: str, data_seed: int, image_grid: ImageGrid, data_root: str | None = None) -> dict[str, Any]:
    """What sets a prepared split: the dataset's fingerprint (what the data are, wherever they
    lie), the pipeline version and the grid. ``data_root`` only says where to find the data."""
    source = create_dataset(dataset, root=data_root, seed=data_seed)
    return {"fingerprint": source.fingerprint(), "pipeline": PIPELINE_VERSION, "grid": image_grid.to_dict()}


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
class EvalJob:
    fit: FitJob
    dataset: DatasetSpec
    shift: ShiftSpec
    key: str


def make_fit_job(method: MethodSpec, train_dataset: str, data_seed: int, seed: int, image_grid: ImageGrid,
                 runtime: Mapping[str, Any] | None = None, data_root: str | None = None) -> FitJob:
    """The fit of ``method`` on ``train_dataset``; its key hashes everything that sets the weights,
    ``runtime`` included (torch threads and device type: both can change the numbers)."""
    config = create_config(method.name, method.preset, method.overrides_dict)
    cls = METHODS.get(method.name)
    deps = tuple(
        make_fit_job(MethodSpec(name, preset, tuple(sorted(dict(overrides).items())), "", method.precision, method.compile),
                     train_dataset, data_seed, seed, image_grid, runtime, data_root)
        for name, (preset, overrides) in cls.dependencies(config).items()
    )
    key = stable_hash(
        {
            "format": FIT_FORMAT,
            "method": method.name,
            "config": config_to_dict(config),
            "precision": method.precision,
            "compile": method.compile,
            "train": data_term(train_dataset, data_seed, image_grid, data_root),
            "seed": seed,
            "depends_on": [d.key for d in deps],
            "runtime": dict(runtime or {}),
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

    def predict_batch_size(self, method: str) -> int:
        """Slices per predict call: a whole volume for methods that declare ``whole_volume``."""
        return self.image_grid.shape[2] if METHODS.get(method).whole_volume else self.eval_batch_size

    @property
    def spec_hash(self) -> str:
        """The benchmark's identity: everything that sets its numbers, nothing presentational."""
        def data(name: str) -> dict[str, Any]:
            return data_term(name, self.data_seed, self.image_grid, self.data_root)

        return stable_hash(
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

    # -- expansion -------------------------------------------------------------------------------
    def splits(self) -> list[tuple[str, str]]:
        """Every (dataset, split) the grid reads: healthy train/val/test and each dataset's val/test."""
        needed = {(self.train_dataset, s) for s in ("train", "val", "test")}
        needed |= {(ds.name, s) for ds in self.datasets for s in (ds.val_split, ds.test_split)}
        return sorted(needed)

    def acquired_splits(self) -> list[tuple[str, str, ShiftSpec]]:
        """Every (dataset, split, shift) re-acquired under an acquisition shift: the shifted test splits."""
        from uadbench.shifts import is_acquisition

        tests = dict.fromkeys([(self.train_dataset, "test"), *((ds.name, ds.test_split) for ds in self.datasets)])
        return [(name, split, shift) for shift in self.shifts if shift.name != "none" and is_acquisition(shift.name) for name, split in tests]

    def fit_jobs(self, runtime: Mapping[str, Any] | None = None) -> list[FitJob]:
        """The fits the grid lists (one per method and seed), in grid order; ``runtime`` (threads,
        device type) goes into their keys."""
        return [
            make_fit_job(m, self.train_dataset, self.data_seed, seed, self.image_grid, runtime, self.data_root)
            for m in self.methods
            for seed in self.seeds
        ]

    def fit_graph(self, fits: list[FitJob] | None = None) -> list[FitJob]:
        """Every fit to run, the listed ones and those they reuse, dependencies first."""
        return topological(fits if fits is not None else self.fit_jobs())

    def eval_jobs(self, fits: list[FitJob] | None = None) -> list[EvalJob]:
        components = component_versions()
        # each dataset's fingerprint once (a file dataset's stats every file), not four times a cell
        terms = {name: data_term(name, self.data_seed, self.image_grid, self.data_root)
                 for name in {self.train_dataset, *(ds.name for ds in self.datasets)}}
        jobs = []
        for fit in fits if fits is not None else self.fit_jobs():
            batch = self.predict_batch_size(fit.method.name)
            train = terms[self.train_dataset]
            for ds in self.datasets:
                for shift in self.shifts:
                    key = stable_hash(
                        {
                            "test": map_key(fit, ds.name, ds.test_split, shift, batch, terms[ds.name]),
                            "lesion_val": map_key(fit, ds.name, ds.val_split, NO_SHIFT_SPEC, batch, terms[ds.name]),
                            "healthy_val": map_key(fit, self.train_dataset, "val", NO_SHIFT_SPEC, batch, train),
                            "healthy_test": map_key(fit, self.train_dataset, "test", shift, batch, train),
                            "components": components,
                        },
                        length=16,
                    )
                    jobs.append(EvalJob(fit, ds, shift, key))
        return jobs


def _require_table_list(raw: dict, key: str, source: str, *, required: bool = True) -> list[dict]:
    value = raw.get(key)
    if value is None:
        if not required:
            return []
        raise ConfigError(f"{source}: missing [[{key}]] entries; add at least one")
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: '{key}' must be an array of tables ([[{key}]])")
    if required and not value:
        raise ConfigError(f"{source}: '{key}' is empty; a grid needs at least one [[{key}]] table")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_seeds(seeds: Any, source: str) -> tuple[int, ...]:
    if (not isinstance(seeds, list) or not seeds or not all(_is_int(s) and 0 <= s < SEED_LIMIT for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"{source}: seeds must be a non-empty list of distinct integers in [0, 2^32), got {seeds!r}")
    return tuple(seeds)


def _check_image_grid(spec: Any, source: str) -> ImageGrid:
    """The grid's image grid, refused when a volume on it would be too large to hold in memory.

    The rule: at most MAX_VOXELS voxels per volume (256^3, a whole head at 1 mm; the paper's grid
    has 96 x 96 x 50). The runner holds every prepared split in memory as float32 images plus two
    masks (6 bytes a voxel), so 256^3 is already about 100 MB per volume."""
    try:
        grid = get_image_grid(spec)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if not math.isfinite(grid.spacing):
        raise ConfigError(f"{source}: image grid spacing must be a finite positive number of mm, got {grid.spacing!r}")
    voxels = math.prod(grid.shape)
    if voxels > MAX_VOXELS:
        raise ConfigError(
            f"{source}: image grid shape {list(grid.shape)} has {voxels:,} voxels per volume, more than the {MAX_VOXELS:,} "
            f"(256^3, a whole head at 1 mm) allowed: each prepared volume is held in memory as float32 plus two masks "
            f"({voxels * 6 / 2**30:.1f} GiB a volume); use a coarser spacing or a smaller shape"
        )
    return grid


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"{where}: unknown key{plural} {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(allowed))}")


MAX_SWEEP_ENTRIES = 1000  # method entries one [[methods]] table may expand to


def _swept(default: Any, value: Any) -> bool:
    """Whether an override ``value`` lists values to sweep: a list where the field takes a scalar,
    or a list of lists where it takes a sequence (``channels = [[16, 32], [32, 64]]``)."""
    if not isinstance(value, list):
        return False
    if isinstance(default, (list, tuple)):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def sweep_value_text(value: Any, *, quote: bool = True) -> str:
    """A swept value as labels write it: ``(8,16)`` for a sequence, ``'gaussian'`` for text (unquoted
    with ``quote=False``), ``300`` for a number."""
    if isinstance(value, (list, tuple)):
        return f"({','.join(map(str, value))})"
    return repr(value) if quote and isinstance(value, str) else str(value)


def sweep_label(base: str, sweep: tuple[tuple[str, Any], ...]) -> str:
    """``ae[steps=300]``, ``cddpm[lr=0.001,steps=900]``: a swept entry's label."""
    return f"{base}[{','.join(f'{k}={sweep_value_text(v)}' for k, v in sweep)}]" if sweep else base


def expand_sweep(name: str, preset: str, overrides: dict[str, Any], label: str, precision: str, compile_: bool,
                 where: str) -> list[MethodSpec]:
    """One :class:`MethodSpec` per combination of the swept override values, in the grid's order
    (the first swept field varies slowest); a table without a sweep gives one spec."""

    try:
        defaults = config_to_dict(create_config(name, preset))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    swept = [k for k, v in overrides.items() if k in defaults and _swept(defaults[k], v)]
    for key in swept:
        values = overrides[key]
        if not values:
            raise ConfigError(f"{where}: overrides.{key} sweeps no value; give a non-empty list such as [300, 1000, 3000]")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: overrides.{key} lists a value twice: {values!r}")
    combos = list(itertools.product(*(overrides[k] for k in swept)))
    if len(combos) > MAX_SWEEP_ENTRIES:
        raise ConfigError(f"{where}: the sweep over {', '.join(swept)} expands to {len(combos):,} fits; at most {MAX_SWEEP_ENTRIES} a table")
    specs = []
    for combo in combos:
        sweep = tuple(zip(swept, (tuple(v) if isinstance(v, list) else v for v in combo), strict=True))
        merged = {**overrides, **dict(sweep)}
        specs.append(MethodSpec(name, preset, tuple(sorted(merged.items())), sweep_label(label or name, sweep) if sweep else label,
                                precision, compile_, sweep))
    return specs


def _shift_severities(s: dict, where: str, levels: Any) -> list[Any]:
    """A shift table's severities: listed (``severities``) or calibrated (``ssim`` levels)."""
    if ("severities" in s) == ("ssim" in s):
        raise ConfigError(f"{where}: give either severities (the shift's own scale) or ssim (calibrated levels, e.g. [0.95, 0.9, 0.8])")
    key = "severities" if "severities" in s else "ssim"
    values = s[key]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {key} must be a non-empty list of numbers, got {values!r}")
    if key == "severities":
        return values
    out = []
    for level in values:
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise ConfigError(f"{where}: ssim levels must be numbers in (0, 1), got {level!r}")
        try:
            out.append(levels(s["name"], float(level)))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return out


def _parse_shifts(raw: dict, source: str, train: str, datasets: list[str], image_grid: ImageGrid, data_seed: int) -> list[ShiftSpec]:
    from uadbench.shifts import check_severity, is_acquisition

    table_path = raw.get("shift_levels")
    if table_path is not None and not isinstance(table_path, str):
        raise ConfigError(f"{source}: shift_levels must name a calibration table file (uadbench calibrate-shifts --out FILE)")

    def levels(name: str, level: float) -> float:
        from uadbench import shift_calibration as cal

        path = table_path if table_path is None or Path(table_path).is_absolute() else Path(source).parent / table_path
        return cal.severity_for(name, level, dataset=train, grid=image_grid.to_dict(), table=cal.read_table(path),
                                fingerprint=create_dataset(train, seed=data_seed).fingerprint())

    shifts = [ShiftSpec("none", None)]
    for i, s in enumerate(_require_table_list(raw, "shifts", source, required=False)):
        where = f"{source}: shifts[{i}]"
        _check_keys(s, SHIFT_KEYS, where)
        if not isinstance(s.get("name"), str):
            raise ConfigError(f"{where}: 'name' is required; available shifts: {', '.join(SHIFTS.names())}")
        SHIFTS.get(s["name"])
        if s["name"] == "none":
            continue
        if is_acquisition(s["name"]):
            from uadbench.acquisition import check_datasets

            check_datasets(s["name"], [train, *datasets], where)
        for v in _shift_severities(s, where, levels):
            try:
                spec = ShiftSpec(s["name"], check_severity(s["name"], v))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            if spec in shifts:
                raise ConfigError(f"{where}: shift {spec.label} is listed twice")
            shifts.append(spec)
    return shifts


def parse_grid(raw: dict, source: str = "<grid>") -> GridSpec:
    """Validate a grid mapping (as read from TOML) and resolve every name against the registries."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a grid must be a TOML table")
    _check_keys(raw, GRID_KEYS, source)
    name = raw.get("name") or Path(source).stem
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{source}: name must be letters, digits, '-' or '_', got {name!r}")
    image_grid = _check_image_grid(raw.get("image_grid", "paper"), source)
    seeds = _check_seeds(raw.get("seeds", [0]), source)
    for key in ("description", "notes"):  # notes: what the grid's results can and cannot show (its published edition prints them)
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(f"{source}: {key} must be a string")
    train = raw.get("train_dataset")
    if not isinstance(train, str):
        raise ConfigError(f"{source}: train_dataset must name a healthy dataset; available: {', '.join(DATASETS.names())}")
    train_cls = DATASETS.get(train)
    lacking = [s for s in ("train", "val", "test") if s not in train_cls.splits]
    if lacking:
        raise ConfigError(
            f"{source}: training dataset {train!r} has no {', '.join(map(repr, lacking))} split; the runner needs "
            f"healthy train, val and test splits (it has: {', '.join(train_cls.splits)})"
        )

    methods = []
    for i, m in enumerate(_require_table_list(raw, "methods", source)):
        where = f"{source}: methods[{i}]"
        _check_keys(m, METHOD_KEYS, where)
        if not isinstance(m.get("name"), str):
            raise ConfigError(f"{where}: 'name' is required; available methods: {', '.join(METHODS.names())}")
        METHODS.get(m["name"])  # an unknown name fails here, with suggestions
        overrides = m.get("overrides", {})
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: overrides must be a table of config keys")
        for key in ("preset", "label"):
            if not isinstance(m.get(key, ""), str):
                raise ConfigError(f"{where}: {key} must be a string, got {m[key]!r}")
        precision, compile_ = m.get("precision", "fp32"), m.get("compile", False)
        if precision not in PRECISIONS:
            raise ConfigError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if not isinstance(compile_, bool):
            raise ConfigError(f"{where}: compile must be true or false, got {compile_!r}")
        for method_spec in expand_sweep(m["name"], m.get("preset", "paper"), overrides, m.get("label", ""), precision, compile_, where):
            try:
                create_config(method_spec.name, method_spec.preset, method_spec.overrides_dict)  # every value checked here
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            methods.append(method_spec)
    labels = [m.display for m in methods]
    dup = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if dup:
        raise ConfigError(f"{source}: methods listed twice: {', '.join(dup)}; give each a distinct 'label'")
    seen: dict[str, str] = {}
    for spec in methods:  # two entries with one config would be one fit and one set of cells under two labels
        key = config_hash(spec.name, create_config(spec.name, spec.preset, spec.overrides_dict), spec.precision, spec.compile)
        if key in seen:
            raise ConfigError(f"{source}: methods {seen[key]!r} and {spec.display!r} have the same config (one fit, one set of cells); "
                              "drop one, or change a field")
        seen[key] = spec.display

    datasets = []
    for i, d in enumerate(_require_table_list(raw, "datasets", source)):
        where = f"{source}: datasets[{i}]"
        _check_keys(d, DATASET_KEYS, where)
        if not isinstance(d.get("name"), str):
            raise ConfigError(f"{where}: 'name' is required; available datasets: {', '.join(DATASETS.names())}")
        cls = DATASETS.get(d["name"])
        for key in ("val_split", "test_split"):
            if not isinstance(d.get(key, ""), str):
                raise ConfigError(f"{where}: {key} must name a split of {d['name']!r} ({', '.join(cls.splits)}), got {d[key]!r}")
        dataset_spec = DatasetSpec(d["name"], d.get("val_split", "val"), d.get("test_split", "test"))
        for split in (dataset_spec.val_split, dataset_spec.test_split):
            if split not in cls.splits:
                raise ConfigError(f"{where}: dataset {dataset_spec.name!r} has no split {split!r}; available: {', '.join(cls.splits)}")
        if dataset_spec.val_split == dataset_spec.test_split:
            raise ConfigError(f"{where}: val_split and test_split are both {dataset_spec.val_split!r}; thresholds must come from another split")
        if dataset_spec in datasets:
            raise ConfigError(f"{where}: dataset {dataset_spec.name!r} with these splits is listed twice")
        datasets.append(dataset_spec)

    data_seed = raw.get("data_seed", 0)
    if not _is_int(data_seed) or not 0 <= data_seed < SEED_LIMIT:
        raise ConfigError(f"{source}: data_seed must be an integer in [0, 2^32), got {data_seed!r}")
    shifts = _parse_shifts(raw, source, train, [d.name for d in datasets], image_grid, data_seed)
    device = raw.get("device", "cpu")
    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"{source}: device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    ebs = raw.get("eval_batch_size", 64)
    if not _is_int(ebs) or not 1 <= ebs <= MAX_EVAL_BATCH_SIZE:
        raise ConfigError(f"{source}: eval_batch_size (slices per predict call) must be an integer in [1, {MAX_EVAL_BATCH_SIZE}], got {ebs!r}")
    executor_table(raw, source)  # checked when the grid is read, used by `uadbench run`
    return GridSpec(
        name=name,
        image_grid=image_grid,
        seeds=seeds,
        train_dataset=train,
        methods=methods,
        datasets=datasets,
        shifts=shifts,
        description=str(raw.get("description", "")),
        data_seed=data_seed,
        device=device,
        eval_batch_size=ebs,
        source=source,
        raw=raw,
    )


# [executor]: where `uadbench run` runs the grid unless its flags say otherwise (not part of the
# spec hash: the numbers do not depend on it). Values are checked by create_executor.
EXECUTOR_KEYS: dict[str, tuple[type, ...]] = {
    "kind": (str,), "partition": (str,), "time": (str, int), "mem": (str, int), "gpus": (int,), "cpus": (int,), "address": (str,),
}


def executor_table(raw: dict, source: str = "<grid>") -> dict[str, Any]:
    """The grid's optional ``[executor]`` table, e.g. ``kind = "slurm"``, ``partition``, ``time``,
    ``mem``, ``gpus``, ``cpus`` (Slurm) or ``address`` (Ray); its keys and value types checked."""
    table = raw.get("executor", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'executor' must be a table ([executor]) with keys {', '.join(EXECUTOR_KEYS)}")
    _check_keys(table, set(EXECUTOR_KEYS), f"{source}: [executor]")
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, EXECUTOR_KEYS[key]):
            kinds = " or ".join("a string" if t is str else "an integer" for t in EXECUTOR_KEYS[key])
            raise ConfigError(f"{source}: [executor] {key} must be {kinds}, got {value!r}")
    if table.get("kind", "local") not in ("local", "slurm", "ray"):
        raise ConfigError(f"{source}: [executor] kind must be 'local', 'slurm' or 'ray', got {table['kind']!r}")
    return dict(table)


def load_grid(path: str | os.PathLike) -> GridSpec:
    """Read and validate a grid TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"grid file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"grid path {path} is a directory; pass a grid TOML file, e.g. leaderboard/quickstart.toml") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file") from exc
    except OSError as exc:
        what = "a symlink loop" if exc.errno == errno.ELOOP else exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot read grid file {path}: {what}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_grid(raw, str(path))
