"""Shift severities on one scale: the similarity between shifted and original healthy volumes.

Each shift family has its own severity (an exponent, a noise level, an echo-time factor), so
``gibbs@0.5`` and ``rician@0.05`` say nothing about which change is larger. The calibration puts
them on a common scale: for each shift, the severity at which the mean similarity between the
shifted and the original healthy volume is 0.95, 0.90 and 0.80.

The declared similarity is SSIM (:func:`uadbench.evaluation.image_quality.ssim`: scikit-image,
7-voxel uniform window, data range 1) of the whole preprocessed volume, averaged over the
volumes of a healthy split. A pixel shift draws its randomness exactly as in an evaluation (grid
seed 0, per subject); an acquisition shift re-acquires the subjects and preprocesses them. The
severity for each level is found by bisection along the shift's ``calibration_range``.

The table shipped with uadbench (``levels.json`` beside this module) is calibrated on the
phantom's healthy T2-weighted validation split (6 volumes) on the ``cpu`` image grid; a grid asks
for a level with ``[[shifts]] name = "gibbs"`` and ``ssim = [0.95, 0.9, 0.8]``. Recalibrate (for
another dataset or grid) with ``uadbench calibrate-shifts``; ``--out`` writes a table a grid can
name with ``shift_levels = "FILE"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uadbench.errors import ConfigError

LEVELS: tuple[float, ...] = (0.95, 0.90, 0.80)
TABLE_PATH = Path(__file__).with_name("levels.json")
SIMILARITY = "SSIM (scikit-image, 7-voxel window, data range 1) of the whole preprocessed volume, mean over the split"
TOLERANCE = 0.002  # bisection stops when the mean similarity is this close to the level
MISS = 0.01  # a level no severity comes this close to is "not reached", never a wrong severity
SEED = 0  # the grid seed the pixel shifts' randomness is drawn with


def calibration_key(dataset: str, split: str, grid_name: str) -> str:
    return f"{dataset}/{split}@{grid_name}"


class Reference:
    """The original preprocessed volumes of a healthy split, and the similarity of a shift to them."""

    def __init__(self, dataset: str, split: str, grid: Any, *, data_seed: int = 0, data_root: str | os.PathLike | None = None) -> None:
        from uadbench.data.dataset import create_dataset
        from uadbench.data.pipeline import preprocess

        self.dataset, self.split, self.grid = dataset, split, grid
        self.source = create_dataset(dataset, root=data_root, seed=data_seed)
        self.volumes = [preprocess(v, grid) for v in self.source.load(split)]

    def shifted(self, shift: str, severity: float) -> list[np.ndarray]:
        from uadbench.data.pipeline import preprocess
        from uadbench.shifts.base import is_acquisition, shifted_image

        if is_acquisition(shift):
            from uadbench.shifts.acquisition import acquire_split

            return [preprocess(v, self.grid).image for v in acquire_split(self.source, self.split, shift, severity)]
        return [shifted_image(v, shift, severity, SEED) for v in self.volumes]

    def similarity(self, shift: str, severity: float) -> float:
        from uadbench.evaluation.image_quality import ssim

        return float(np.mean([ssim(v.image, s) for v, s in zip(self.volumes, self.shifted(shift, severity), strict=True)]))


def calibrate_shift(ref: Reference, shift: str, levels: Sequence[float] = LEVELS, *, iterations: int = 30) -> dict[str, dict[str, float]]:
    """``{level: {"severity": s, "similarity": measured}}`` for one shift, by bisection along its
    ``calibration_range`` (the similarity must fall from about 1 at its start to below the lowest level)."""
    from uadbench.registry import SHIFTS

    fn = SHIFTS.get(shift)
    span: tuple[float, float] | None = getattr(fn, "calibration", None)
    if span is None:
        raise ConfigError(f"shift {shift!r} declares no calibration range; it cannot be put on the similarity scale")
    start, stop = span
    far = ref.similarity(shift, stop)
    out: dict[str, dict[str, Any]] = {}
    for level in levels:
        if far > level:  # the shift's valid range does not go that far: said, not invented
            out[f"{level:g}"] = {"severity": None, "similarity": round(far, 4),
                                 "note": f"not reached: similarity is {far:.3f} at {stop:g}, the end of the calibration range"}
            continue
        lo, hi, best = start, stop, (stop, far)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            sim = ref.similarity(shift, mid)
            if abs(sim - level) < abs(best[1] - level):
                best = (mid, sim)
            if abs(sim - level) <= TOLERANCE:
                break
            lo, hi = (mid, hi) if sim > level else (lo, mid)
        if abs(best[1] - level) > MISS:  # the similarity jumps past the level (a resampling step, say)
            out[f"{level:g}"] = {"severity": None, "similarity": round(best[1], 4),
                                 "note": f"not reached: the similarity jumps past it; closest {best[1]:.3f} at {best[0]:g}"}
        else:
            out[f"{level:g}"] = {"severity": round(best[0], 6), "similarity": round(best[1], 4)}
    return out


def calibrate(ref: Reference, shifts: Sequence[str], levels: Sequence[float] = LEVELS, progress=print) -> dict[str, Any]:
    """The calibration entry of ``ref``'s split for every shift in ``shifts``."""
    table: dict[str, Any] = {}
    for name in shifts:
        table[name] = calibrate_shift(ref, name, levels)
        progress(f"{name}: " + ", ".join(f"{lvl} -> {_fmt(v['severity'])} ({v['similarity']:.3f})" for lvl, v in table[name].items()))
    return {"dataset": ref.dataset, "split": ref.split, "image_grid": ref.grid.to_dict(), "fingerprint": ref.source.fingerprint(),
            "n_volumes": len(ref.volumes), "similarity": SIMILARITY, "shifts": table}


def _fmt(severity: float | None) -> str:
    return "not reached" if severity is None else f"{severity:g}"


def calibratable_shifts(dataset: str | None = None) -> list[str]:
    """Shifts with a calibration range; with ``dataset``, those that apply to it (``ti`` needs an
    inversion-recovery sequence, acquisition shifts a dataset that can re-acquire its subjects)."""
    from uadbench.registry import SHIFTS
    from uadbench.shifts.base import is_acquisition

    def applies(name: str) -> bool:
        if dataset is None or not is_acquisition(name):
            return True
        from uadbench.shifts.acquisition import check_datasets

        try:
            check_datasets(name, [dataset], "")
        except ConfigError:
            return False
        return True

    return [n for n in SHIFTS.names() if getattr(SHIFTS.get(n), "calibration", None) is not None and applies(n)]


def read_table(path: str | os.PathLike | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else TABLE_PATH
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"shift calibration table not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the shift calibration table {path}: {exc}") from exc
    if not isinstance(table, dict) or not isinstance(table.get("calibrations"), dict):
        raise ConfigError(f"{path}: not a shift calibration table (no 'calibrations' object)")
    return table


def severity_for(shift: str, level: float, *, dataset: str, grid: dict[str, Any], table: dict[str, Any] | None = None,
                 fingerprint: str | None = None) -> float:
    """The calibrated severity of ``shift`` at similarity ``level`` for training data ``dataset`` on image
    grid ``grid`` (its ``to_dict()``), from its validation split; refused unless the entry was
    calibrated on that grid and, given ``fingerprint``, on those data (cohort sizes, seed, files)."""
    table = table if table is not None else read_table()
    key = calibration_key(dataset, "val", grid["name"])
    entry = table["calibrations"].get(key)
    redo = (f"run `uadbench calibrate-shifts --dataset {dataset} --image-grid {grid['name']} --out FILE` "
            f"and name FILE as shift_levels in the grid")
    if entry is None:
        raise ConfigError(f"no shift calibration for {key}; calibrated: {', '.join(sorted(table['calibrations'])) or '(none)'}; {redo}")
    if entry.get("image_grid") != grid:
        raise ConfigError(f"the shift calibration {key} was made on image grid {entry.get('image_grid')}, this grid is {grid}; {redo}")
    if fingerprint is not None and entry.get("fingerprint") != fingerprint:
        raise ConfigError(f"the shift calibration {key} was made on other data ({entry.get('fingerprint')}; the grid's training data: "
                          f"{fingerprint}: other cohort sizes or data_seed?); {redo}")
    levels = entry["shifts"].get(shift)
    if levels is None:
        raise ConfigError(f"shift {shift!r} is not calibrated for {key}; calibrated shifts: {', '.join(sorted(entry['shifts']))}")
    if f"{level:g}" not in levels:
        raise ConfigError(f"shift {shift!r}: no calibrated severity at ssim {level:g} for {key}; levels: {', '.join(levels)}")
    found = levels[f"{level:g}"]
    if found.get("severity") is None:
        reached = [lvl for lvl, v in levels.items() if v.get("severity") is not None]
        raise ConfigError(f"shift {shift!r} does not reach ssim {level:g} on {key} ({found.get('note', 'not reached')}); "
                          f"levels it reaches: {', '.join(reached) or '(none)'}")
    return float(found["severity"])


def write_table(entries: Sequence[dict[str, Any]], path: str | os.PathLike, *, merge: bool = True) -> Path:
    """Write (or merge into) a calibration table, atomically."""
    from uadbench.files import write_json_atomic

    path = Path(path)
    table: dict[str, Any] = (read_table(path) if merge and path.is_file()
                             else {"similarity": SIMILARITY, "levels": list(LEVELS), "calibrations": {}})
    for e in entries:
        table["calibrations"][calibration_key(e["dataset"], e["split"], e["image_grid"]["name"])] = e
    write_json_atomic(path, table)
    return path
