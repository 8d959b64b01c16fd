"""Reading a grid file: every table and value checked, every name resolved against the registries."""

from __future__ import annotations

import errno
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from uadbench.config import config_hash, create_config
from uadbench.data.dataset import DatasetSource, create_dataset, dataset_class, parse_site_selector, site_selection
from uadbench.data.pipeline import ImageGrid, get_image_grid
from uadbench.errors import ConfigError
from uadbench.grid.entries import PRECISIONS, SITE_SHIFT, DatasetSpec, ShiftSpec
from uadbench.grid.spec import GridSpec
from uadbench.grid.sweep import expand_sweep
from uadbench.registry import DATASETS, EXECUTORS, METHODS, SHIFTS, RegistryError

GRID_KEYS = {
    "name", "description", "image_grid", "seeds", "train_dataset", "methods", "datasets",
    "shifts", "data_seed", "device", "eval_batch_size", "executor", "shift_levels", "notes",
}
METHOD_KEYS = {"name", "preset", "overrides", "label", "precision", "compile"}
DATASET_KEYS = {"name", "val_split", "test_split"}
SHIFT_KEYS = {"name", "severities", "ssim"}
SEED_LIMIT = 2**32  # seeds and data_seed lie in [0, 2^32): numpy's seeding range
MAX_VOXELS = 256**3  # per volume on the image grid: a whole head at 1 mm (see _check_image_grid)
MAX_EVAL_BATCH_SIZE = 4096  # slices per predict call

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


def _dataset_class(name: str, where: str) -> type[DatasetSource]:
    """The class of dataset ``name`` (``<dataset>@<site>[+<site>...]``: the dataset's, the selector checked)."""
    from uadbench.errors import DataError

    try:
        parse_site_selector(name)
    except DataError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return dataset_class(name)


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"{where}: unknown key{plural} {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(allowed))}")



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
    from uadbench.shifts.base import check_severity, is_acquisition

    table_path = raw.get("shift_levels")
    if table_path is not None and not isinstance(table_path, str):
        raise ConfigError(f"{source}: shift_levels must name a calibration table file (uadbench calibrate-shifts --out FILE)")

    def levels(name: str, level: float) -> float:
        from uadbench.shifts import calibration as cal

        path = table_path if table_path is None or Path(table_path).is_absolute() else Path(source).parent / table_path
        return cal.severity_for(name, level, dataset=train, grid=image_grid.to_dict(), table=cal.read_table(path),
                                fingerprint=create_dataset(train, seed=data_seed).fingerprint())

    shifts = [ShiftSpec("none", None)]
    for i, s in enumerate(_require_table_list(raw, "shifts", source, required=False)):
        where = f"{source}: shifts[{i}]"
        if s.get("name") == SITE_SHIFT:
            shifts += [spec for spec in _site_shifts(s, where, train) if spec not in shifts]
            continue
        _check_keys(s, SHIFT_KEYS, where)
        if not isinstance(s.get("name"), str):
            raise ConfigError(f"{where}: 'name' is required; available shifts: {', '.join(SHIFTS.names())}")
        SHIFTS.get(s["name"])
        if s["name"] == "none":
            continue
        if is_acquisition(s["name"]):
            from uadbench.shifts.acquisition import check_datasets

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


def _site_shifts(s: dict, where: str, train: str) -> list[ShiftSpec]:
    """``{name = "site", sites = ["IOP"]}``: one held-out site shift per site, which the training selection leaves out."""
    _check_keys(s, {"name", "sites"}, where)
    sites = s.get("sites")
    if not isinstance(sites, list) or not sites or not all(isinstance(x, str) and x for x in sites):
        raise ConfigError(f"{where}: shift 'site' needs sites = [...], the held-out sites to evaluate on, e.g. sites = [\"IOP\"]")
    trained = parse_site_selector(train)[1]
    if not trained:
        raise ConfigError(f"{where}: shift 'site' evaluates on sites the fits never saw; train on a site selection, e.g. "
                          f"train_dataset = \"{train}@<site>[+<site>]\", and list the other sites here")
    seen = [x for x in sites if x in trained]
    if seen:
        raise ConfigError(f"{where}: site {', '.join(map(repr, seen))} is in the training selection {train!r}; "
                          "a held-out site must be one the training leaves out")
    for site in sites:
        _dataset_class(site_selection(train, site), where)  # the name is checked here
    return [ShiftSpec(f"{SITE_SHIFT}@{site}") for site in sites]


LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@\[\]=,()+-]{0,127}")  # a plain name: no '/', no spaces, no markup
MAX_CELLS = 10_000  # evaluation cells a grid may expand to unless the user raises the cap (--max-cells)


def check_size(n_fits: int, n_cells: int, source: str, max_cells: int | None) -> None:
    """Refuse a grid whose seeds, sweeps, datasets and shifts multiply past ``max_cells`` cells."""
    limit = MAX_CELLS if max_cells is None else max_cells
    if n_cells > limit:
        raise ConfigError(f"{source}: the grid expands to {n_cells:,} evaluation cells ({n_fits:,} fits), more than the cap of {limit:,}; "
                          f"check its seeds, sweeps and shifts, or pass --max-cells {n_cells} to run it")


def parse_grid(raw: dict, source: str = "<grid>", *, max_cells: int | None = None) -> GridSpec:
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
    train_cls = _dataset_class(train, f"{source}: train_dataset")
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
        label = m.get("label", "")
        if label and (not LABEL.fullmatch(label) or ".." in label or label == "floor"):
            raise ConfigError(f"{where}: label {label!r} is not allowed; a label is letters, digits and . _ - @ [ ] = , ( ) + "
                              "(it names files and table rows; no '/', spaces or '..'), and 'floor' is the floor row's")
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
        cls = _dataset_class(d["name"], where)
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
    n_fits = len(methods) * len(seeds)
    check_size(n_fits, n_fits * len(datasets) * len(shifts), source, max_cells)
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


# [executor]: where the grid's author suggests running it (not part of the spec hash: the numbers
# do not depend on it). Only a suggestion: `uadbench run` follows a kind other than local only with
# --executor, and never connects to an address from a grid file. Values are checked by create_executor.
EXECUTOR_KEYS: dict[str, tuple[type, ...]] = {
    "kind": (str,), "partition": (str,), "time": (str, int), "mem": (str, int), "gpus": (int,), "cpus": (int,), "address": (str,),
}


def executor_table(raw: dict, source: str = "<grid>") -> dict[str, Any]:
    """The grid's optional ``[executor]`` table, e.g. ``kind = "slurm"``, ``partition``, ``time``,
    ``mem``, ``gpus``, ``cpus`` (Slurm) or ``address`` (Ray); its keys and value types checked, and
    ``kind`` against the registered executors."""
    table = raw.get("executor", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'executor' must be a table ([executor]) with keys {', '.join(EXECUTOR_KEYS)}")
    _check_keys(table, set(EXECUTOR_KEYS), f"{source}: [executor]")
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, EXECUTOR_KEYS[key]):
            kinds = " or ".join("a string" if t is str else "an integer" for t in EXECUTOR_KEYS[key])
            raise ConfigError(f"{source}: [executor] {key} must be {kinds}, got {value!r}")
    if "kind" in table:
        try:
            EXECUTORS.get(table["kind"])
        except RegistryError as exc:
            raise ConfigError(f"{source}: [executor] kind: {exc}") from None
    return dict(table)


def load_grid(path: str | os.PathLike, *, max_cells: int | None = None) -> GridSpec:
    """Read and validate a grid TOML file (refused past ``max_cells`` evaluation cells; default MAX_CELLS)."""
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
    return parse_grid(raw, str(path), max_cells=max_cells)
