"""Figures from the tidy frame and the cells' example volumes (seaborn on matplotlib, no pyplot).

- :func:`volume_boxes`: per-volume AUPRC and Dice boxes with points, by method and dataset;
- :func:`severity_curves`: each metric against the severity of a shift family, one line per method;
- :func:`example_panel`: input | reconstruction | map | ground truth of one test subject, one row
  per method, at the same axial slice for every method (:func:`example_slice`).

Every figure is a :class:`matplotlib.figure.Figure` built without pyplot (no global state, no GUI
backend), written as PNG and PDF by :func:`save_figure`. matplotlib, seaborn and nibabel are
imported when a figure is drawn, never by ``import uadbench.report``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The metrics of the box and severity figures (fair ones only; the oracle is an upper bound).
FIGURE_METRICS = ("auprc", "dice@val-bisection")
FORMATS = ("png", "pdf")
EXAMPLE_COLUMNS = ("input", "reconstruction", "map", "ground truth")


def _new_figure(width: float, height: float, layout: Literal["constrained"] | None = "constrained") -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def _image_grid(rows: int, width: float = 6.4, title_in: float = 0.5) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows`` × 4 square image panels with a fixed layout (no layout engine: images
    have no ticks, and a fixed layout costs nothing to compute)."""
    cell = (width - 0.3) / 4
    height = title_in + cell * rows
    fig = _new_figure(width, height, layout=None)
    fig.subplots_adjust(left=0.3 / width, right=0.995, bottom=0.005, top=1 - title_in / height, wspace=0.04, hspace=0.04)
    return fig, np.atleast_2d(fig.subplots(rows, 4, squeeze=False))


def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = FORMATS, dpi: int = 110) -> list[Path]:
    """``fig`` as ``<stem>.png``, ``<stem>.pdf`` (and any other matplotlib format); the paths written.
    The layout is computed once, for the first format, and kept for the others."""
    from uadbench.files import atomic_path

    out = []
    for i, fmt in enumerate(formats):
        path = Path(f"{stem}.{fmt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
        if i == 0:
            fig.set_layout_engine("none")
        out.append(path)
    return out


# -- example slices ---------------------------------------------------------------------------------
def example_slice(lesion: np.ndarray | None, brain: np.ndarray | None = None) -> int:
    """The axial slice (last axis) shown for a subject: the one with the most lesion voxels, else the
    one with the most brain voxels. It depends on the masks only, so every method shows the same."""
    for mask in (lesion, brain):
        if mask is not None and np.any(mask):
            return int(np.argmax(np.count_nonzero(np.asarray(mask), axis=(0, 1))))
    shape = np.shape(lesion) if lesion is not None else np.shape(brain) if brain is not None else ()
    return int(shape[-1] // 2) if shape else 0


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    return np.rot90(np.asarray(volume)[:, :, z])  # RAS arrays: anterior up, the subject's right on the left


def draw_example_row(axes: Sequence[Axes], example: Mapping[str, Any], z: int, label: str = "") -> None:
    """One method's row on four axes: input | reconstruction | map | ground truth at slice ``z``.

    ``example``: ``image``, ``reconstruction`` (or None), ``anomaly_map``, ``lesion`` (or None),
    ``brain`` (or None). The map is scaled from 0 to its 99.5th percentile inside the brain, per
    method (maps of different methods have different units)."""
    image, amap = example["image"], example["anomaly_map"]
    recon, lesion, brain = example.get("reconstruction"), example.get("lesion"), example.get("brain")
    inside = np.asarray(amap)[np.asarray(brain, dtype=bool)] if brain is not None and np.any(brain) else np.asarray(amap).ravel()
    top = float(np.percentile(inside, 99.5)) if inside.size else 1.0
    gray: dict[str, Any] = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, "interpolation": "nearest"}
    axes[0].imshow(_axial(image, z), **gray)
    if recon is not None:
        axes[1].imshow(_axial(recon, z), **gray)
    else:
        axes[1].imshow(np.zeros_like(_axial(image, z)), **gray)
        axes[1].text(0.5, 0.5, "none", color="0.6", ha="center", va="center", transform=axes[1].transAxes, fontsize=8)
    axes[2].imshow(_axial(amap, z), cmap="inferno", vmin=0.0, vmax=top if top > 0 else 1.0, interpolation="nearest")
    axes[3].imshow(_axial(image, z), **gray)
    if lesion is not None and np.any(lesion):
        overlay = np.ma.masked_where(~_axial(np.asarray(lesion, dtype=bool), z), np.ones(_axial(image, z).shape))
        axes[3].imshow(overlay, cmap="autumn", alpha=0.6, vmin=0, vmax=1, interpolation="nearest")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if label:
        axes[0].set_ylabel(label, fontsize=8)


def cell_panel(example: Mapping[str, Any], title: str = "") -> Figure:
    """The example panel of one evaluation cell: one row, four images (an MLflow artifact)."""
    z = example_slice(example.get("lesion"), example.get("brain"))
    fig, grid = _image_grid(1)
    axes = grid[0]
    draw_example_row(axes, example, z)
    for ax, name in zip(axes, EXAMPLE_COLUMNS):
        ax.set_title(name, fontsize=8)
    if title:
        _suptitle(fig, f"{title} (axial slice {z})")
    return fig


def _suptitle(fig: Figure, text: str) -> None:
    """A title in the top 0.05 inch of a fixed-layout figure, clear of the column titles."""
    fig.suptitle(text, fontsize=9, y=1 - 0.05 / fig.get_figheight(), va="top")


def read_example(directory: str | os.PathLike) -> dict[str, Any] | None:
    """An evaluation cell's example volume as written by ``uadbench.run.cells.save_example``
    (``<subject>_{image,anomaly_map,reconstruction,lesion,brain}.nii.gz``); None if absent."""
    import nibabel as nib

    from uadbench.data.nifti import check_header

    directory = Path(directory)
    maps = sorted(directory.glob("*_anomaly_map.nii.gz")) if directory.is_dir() else []
    if not maps:
        return None
    subject = maps[0].name[: -len("_anomaly_map.nii.gz")]

    def load(kind: str) -> np.ndarray | None:
        path = directory / f"{subject}_{kind}.nii.gz"
        if not path.is_file():
            return None
        img = nib.load(path)
        check_header(img, path)  # type: ignore[arg-type]  # a copied run folder's header is checked before its voxels are read
        return np.asanyarray(img.dataobj)  # type: ignore[attr-defined]

    out: dict[str, Any] = {"subject": subject}
    for kind in ("image", "anomaly_map", "reconstruction", "lesion", "brain"):
        out[kind] = load(kind)
    if out["image"] is None:
        return None
    return out


def example_panel(examples: Mapping[str, Mapping[str, Any]], title: str = "") -> Figure:
    """Rows = methods (``examples``: label -> :func:`read_example` result, one subject), columns =
    input | reconstruction | map | ground truth, all at the slice :func:`example_slice` picks from
    the first example's masks."""
    if not examples:
        raise ValueError("example_panel needs at least one method's example")
    first = next(iter(examples.values()))
    z = example_slice(first.get("lesion"), first.get("brain"))
    fig, axes = _image_grid(len(examples))
    for row, (label, example) in zip(axes, examples.items()):
        draw_example_row(row, example, z, label)
    for ax, name in zip(axes[0], EXAMPLE_COLUMNS):
        ax.set_title(name, fontsize=8)
    subject = first.get("subject", "")
    _suptitle(fig, f"{title or subject} (axial slice {z})")
    return fig


# -- figures from the tidy frame ---------------------------------------------------------------------
def _title(metric: str) -> str:
    from uadbench.report.columns import metric_title

    return metric_title(metric)


def volume_boxes(frame: pd.DataFrame, metrics: Sequence[str] = FIGURE_METRICS) -> Figure | None:
    """Per-volume values of ``metrics`` in the unshifted cells: one panel per metric, a box per
    dataset and method (colours), the volumes as points (each volume's mean over seeds), the floor
    of each dataset as a dashed line."""
    import seaborn as sns

    sub = frame[(frame["level"] == "subject") & (frame["shift"] == "none") & (frame["kind"] == "method") & frame["metric"].isin(metrics)]
    if sub.empty:
        return None
    per_volume = sub.groupby(["dataset", "label", "metric", "subject"], sort=False, observed=True)["value"].mean().reset_index()
    for col in ("dataset", "label", "metric"):
        per_volume[col] = per_volume[col].astype(str)
    datasets = list(dict.fromkeys(per_volume["dataset"]))
    shown = [m for m in metrics if (per_volume["metric"] == m).any()]
    order = list(dict.fromkeys(per_volume["label"]))
    floors = _floor_values(frame, shown)
    fig = _new_figure(2.2 + (0.35 * len(order) + 0.4) * len(datasets), 0.6 + 2.4 * len(shown))
    axes = fig.subplots(len(shown), 1, squeeze=False, sharex=True)[:, 0]
    palette = dict(zip(order, sns.color_palette("tab10", len(order))))
    width = 0.8
    for i, metric in enumerate(shown):
        ax = axes[i]
        scale = 100.0 if _percent(metric) else 1.0
        data = per_volume[per_volume["metric"] == metric]
        data = data.assign(value=data["value"] * scale)
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated vert= to bxp
            warnings.simplefilter("ignore", DeprecationWarning)
            sns.boxplot(data=data, x="dataset", y="value", hue="label", order=datasets, hue_order=order, palette=palette, ax=ax,
                        showfliers=False, width=width, linewidth=0.7, legend=i == 0)
        sns.stripplot(data=data, x="dataset", y="value", hue="label", order=datasets, hue_order=order, dodge=True, palette=["0.15"] * len(order),
                      size=1.8, jitter=0.12, ax=ax, legend=False)
        for j, dataset in enumerate(datasets):
            floor = floors.get((dataset, "none", metric))
            if floor is not None:
                ax.hlines(floor * scale, j - width / 2, j + width / 2, colors="0.35", linestyles="--", linewidth=0.8,
                          label="floor" if i == 0 and j == 0 else None)
        ax.set_xlabel("")
        ax.set_ylabel(f"{_title(metric)}{' (%)' if scale != 1.0 else ''}")
    handles, labels = axes[0].get_legend_handles_labels()
    if axes[0].get_legend() is not None:
        axes[0].get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    return fig


def _percent(metric: str) -> bool:
    from uadbench.evaluation.metrics import metric_info

    try:
        return metric_info(metric).percent
    except Exception:
        return False


def _floor_values(frame: pd.DataFrame, metrics: Sequence[str]) -> dict[tuple[str, str, str], float]:
    """The floor's mean over seeds by (dataset, shift, metric)."""
    rows = frame[(frame["kind"] == "floor") & (frame["level"] == "cell") & frame["metric"].isin(metrics)]
    if rows.empty:
        return {}
    means = rows.groupby(["dataset", "shift", "metric"], observed=True)["value"].mean()
    return {(str(d), str(s), str(m)): float(v) for (d, s, m), v in means.items() if math.isfinite(v)}


def severity_curves(frame: pd.DataFrame, family: str, metrics: Sequence[str] = FIGURE_METRICS,
                    neutral: Mapping[str, float] | None = None) -> Figure | None:
    """Each metric against the severity of shift ``family``: one line per method (mean over seeds,
    error bars ± std over seeds), the unshifted cell at the family's neutral severity, the floor
    dashed. Rows = metrics, columns = datasets."""
    import seaborn as sns

    cells = frame[(frame["level"] == "cell") & (frame["kind"] == "method") & frame["metric"].isin(metrics)
                  & ((frame["shift_name"] == family) | (frame["shift"] == "none"))]
    shifted = cells[cells["shift_name"] == family]
    if shifted.empty:
        return None
    base = (neutral or {}).get(family, _neutral_severity(family))
    data = cells.assign(severity=np.where(cells["shift"] == "none", math.nan if base is None else base, cells["severity"]))
    data = data[np.isfinite(data["severity"])]
    agg = data.groupby(["dataset", "metric", "label", "severity"], observed=True, sort=False)["value"].agg(["mean", "std"]).reset_index()
    for col in ("dataset", "metric", "label"):
        agg[col] = agg[col].astype(str)
    datasets = list(dict.fromkeys(shifted["dataset"].astype(str)))
    shown = [m for m in metrics if (agg["metric"] == m).any()]
    order = list(dict.fromkeys(cells["label"].astype(str)))
    floors = _floor_values(frame, shown)
    fig = _new_figure(1.6 + 3.0 * len(datasets), 0.8 + 2.3 * len(shown))
    axes = np.atleast_2d(fig.subplots(len(shown), len(datasets), squeeze=False, sharex=True, sharey="row"))
    palette = dict(zip(order, sns.color_palette("tab10", len(order))))
    for i, metric in enumerate(shown):
        scale = 100.0 if _percent(metric) else 1.0
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            sel = agg[(agg["metric"] == metric) & (agg["dataset"] == dataset)].sort_values("severity")
            parts = dict(list(sel.groupby("label", sort=False)))
            for label in (label for label in order if label in parts):  # pre-aggregated: a line and its error bars per method
                part = parts[label]
                x, y, err = part["severity"].to_numpy(), part["mean"].to_numpy() * scale, part["std"].fillna(0.0).to_numpy() * scale
                ax.errorbar(x, y, yerr=err if (err > 0).any() else None, color=palette[label], marker="o", markersize=3.5, linewidth=1.0,
                            elinewidth=0.7, capsize=2, label=label)
            if base is not None:
                ax.axvline(base, color="0.85", linewidth=0.8, zorder=0)
            floor = floors.get((dataset, "none", metric))
            if floor is not None:
                ax.axhline(floor * scale, color="0.35", linestyle="--", linewidth=0.8, label="floor")
            ax.set_xlabel(f"{family} severity" if i == len(shown) - 1 else "")
            ax.set_ylabel(f"{_title(metric)}{' (%)' if scale != 1.0 else ''}" if j == 0 else "")
            if i == 0:
                ax.set_title(dataset, fontsize=9)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    return fig


def _neutral_severity(family: str) -> float | None:
    """The severity at which shift ``family`` leaves an image unchanged (where registered)."""
    try:
        from uadbench.registry import SHIFTS

        value = getattr(SHIFTS.get(family), "neutral", None)
    except Exception:
        return None
    return float(value) if value is not None else None


def shift_families(frame: pd.DataFrame) -> list[str]:
    """The shift families with a severity axis (held-out sites have none: they are in the shift tables only)."""
    shifted = frame[(frame["shift"] != "none") & np.isfinite(frame["severity"].to_numpy(dtype=float))]
    names: Iterable[str] = shifted["shift_name"]
    return list(dict.fromkeys(names))


# -- shifts on the common similarity scale ----------------------------------------------------------------
SIMILARITY_METRICS = ("auprc", "fp_volume_ml@val-bisection")


def similarity_frame(records: Iterable[Any], metrics: Sequence[str] = SIMILARITY_METRICS) -> pd.DataFrame:
    """A row per (record, metric) of the records that measured their input's change (the mean SSIM of
    the shifted against the original healthy test images, ``dataset_stats["healthy_input_ssim"]``)."""
    import pandas as pd

    rows = [{"label": r.label, "dataset": r.dataset, "family": r.shift, "seed": r.seed, "ssim": float(r.dataset_stats["healthy_input_ssim"]),
             "metric": m, "value": float(r.metrics[m])}
            for r in records if "healthy_input_ssim" in (r.dataset_stats or {}) for m in metrics if m in r.metrics]
    return pd.DataFrame(rows)


def similarity_curves(records: Sequence[Any], dataset: str, metrics: Sequence[str] = SIMILARITY_METRICS) -> Figure | None:
    """Each metric against the input's similarity to the unshifted scans (SSIM, 1 = no shift), one
    panel per method and one line per shift family, each line starting at the unshifted cell: shifts
    of every family on one axis, so "how much change does a method survive" reads across families.
    Points are means over seeds."""
    import pandas as pd
    import seaborn as sns

    data = similarity_frame(records, metrics)
    if data.empty:
        return None
    data = data[data["dataset"] == dataset]
    families = [f for f in dict.fromkeys(data["family"]) if f != "none"]
    if not families:
        return None
    base = data[data["family"] == "none"]
    data = pd.concat([data[data["family"] != "none"]] + [base.assign(family=f) for f in families], ignore_index=True)
    labels = list(dict.fromkeys(data["label"]))
    shown = [m for m in metrics if (data["metric"] == m).any()]
    palette = dict(zip(families, sns.color_palette("tab20", len(families))))
    fig = _new_figure(1.8 + 2.4 * len(labels), 1.0 + 2.3 * len(shown))
    axes = np.atleast_2d(fig.subplots(len(shown), len(labels), squeeze=False, sharex=True, sharey="row"))
    for i, metric in enumerate(shown):
        scale = 100.0 if _percent(metric) else 1.0
        for j, label in enumerate(labels):
            ax = axes[i, j]
            part = data[(data["metric"] == metric) & (data["label"] == label)].copy()
            part["value"] *= scale
            sns.lineplot(data=part, x="ssim", y="value", hue="family", hue_order=families, palette=palette, marker="o", markersize=4,
                         errorbar=None, ax=ax, legend=(i == 0 and j == len(labels) - 1), linewidth=1.0)
            ax.set_xlabel("input SSIM to the unshifted scans" if i == len(shown) - 1 else "")
            ax.set_ylabel(f"{_title(metric)}{' (%)' if scale != 1.0 else ''}" if j == 0 else "")
            if i == 0:
                ax.set_title(label, fontsize=9)
    axes[0, 0].invert_xaxis()  # once: the panels share their x axis (1 = unshifted on the left)
    legend = axes[0, -1].get_legend()
    if legend is not None:
        legend.set_frame_on(False)
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title="shift")
    fig.suptitle(f"{dataset}: metrics against how much each shift changed the healthy test scans (mean over seeds)", fontsize=9)
    return fig


# -- sweeps -----------------------------------------------------------------------------------------------
def sweep_frame(records: Iterable[Any], param: str, metrics: Sequence[str] = FIGURE_METRICS) -> pd.DataFrame:
    """One row per (record, metric) of the records that swept ``param``: method (the entry's label
    without its sweep suffix), dataset, shift, seed, value of ``param``, training seconds, the
    metric's value and the record's 95 % bootstrap interval over subjects, and the floor's value."""
    import pandas as pd

    from uadbench.grid import sweep_value_text

    rows = []
    for r in records:
        if param not in (r.sweep or {}):
            continue
        for metric in metrics:
            if metric not in r.metrics:
                continue
            lo, hi = (r.confidence_intervals.get(metric) or [math.nan, math.nan])[:2]
            value = r.sweep[param]
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            rows.append({"method": _other_sweeps(r, param), "dataset": r.dataset, "shift": r.shift_label, "seed": r.seed,
                         param: float(value) if numeric else sweep_value_text(value, quote=False),
                         "train_seconds": float(r.cost.get("train_seconds", math.nan)),
                         "metric": metric, "value": float(r.metrics[metric]), "ci_low": lo, "ci_high": hi,
                         "floor": float(r.floor.get("metrics", {}).get(metric, math.nan))})
    return pd.DataFrame(rows)


def _other_sweeps(record: Any, param: str) -> str:
    """The line a record belongs to: its label without the swept ``param`` (other swept fields stay)."""
    from uadbench.grid import sweep_label

    return sweep_label(record.label.split("[", 1)[0], tuple((k, v) for k, v in record.sweep.items() if k != param))


def swept_params(records: Iterable[Any]) -> list[str]:
    """The config fields swept by some record, in first-seen order."""
    return list(dict.fromkeys(k for r in records for k in (r.sweep or {})))


def sweep_curves(records: Sequence[Any], param: str, metrics: Sequence[str] = FIGURE_METRICS, *, dataset: str | None = None,
                 shift: str = "none") -> Figure | None:
    """Each metric against the swept value of ``param`` (left) and against training seconds (right),
    one line per method. Points are means over seeds; bars are a 95 % interval: over seeds (seaborn's
    bootstrap) where there are several, else the cell's bootstrap interval over subjects. The floor
    is dashed. Axes are logarithmic where the values span a factor of 10 or more."""
    import seaborn as sns

    data = sweep_frame(records, param, metrics)
    if data.empty:
        return None
    data = data[data["shift"] == shift]
    dataset = dataset or (str(data["dataset"].iloc[0]) if not data.empty else None)
    data = data[data["dataset"] == dataset]
    if data.empty:
        return None
    shown = [m for m in metrics if (data["metric"] == m).any()]
    order = list(dict.fromkeys(data["method"]))
    palette = dict(zip(order, sns.color_palette("tab10", len(order))))
    fig = _new_figure(9.0, 0.9 + 2.6 * len(shown))
    axes = np.atleast_2d(fig.subplots(len(shown), 2, squeeze=False, sharey="row"))
    several_seeds = bool((data.groupby(["method", param, "metric"])["seed"].nunique() > 1).any())
    for i, metric in enumerate(shown):
        scale = 100.0 if _percent(metric) else 1.0
        part = data[data["metric"] == metric].copy()
        part["value"] *= scale
        for j, x in enumerate((param, "train_seconds")):
            ax = axes[i, j]
            sns.lineplot(data=part, x=x, y="value", hue="method", hue_order=order, palette=palette, marker="o", markersize=5,
                         errorbar=("ci", 95) if several_seeds else None, err_style="bars", ax=ax, legend=(i == 0 and j == 1))
            if not several_seeds:  # one seed: the subjects' bootstrap interval of each cell
                for method, rows in part.groupby("method", sort=False):
                    err = np.vstack([rows["value"] - rows["ci_low"] * scale, rows["ci_high"] * scale - rows["value"]])
                    ax.errorbar(rows[x], rows["value"], yerr=np.clip(err, 0, None), fmt="none", ecolor=palette[method], elinewidth=0.8,
                                capsize=2)
            values = part[x].to_numpy()
            if values.dtype.kind == "f" and values.size and np.nanmin(values) > 0 and np.nanmax(values) / np.nanmin(values) >= 10:
                ax.set_xscale("log")
            floor = part["floor"].dropna()
            if not floor.empty:
                ax.axhline(float(floor.mean()) * scale, color="0.35", linestyle="--", linewidth=0.8, label="floor" if j == 1 else None)
            ax.set_xlabel(("training steps" if param == "steps" else param) if x == param else "training seconds")
            ax.set_ylabel(f"{_title(metric)}{' (%)' if scale != 1.0 else ''}" if j == 0 else "")
    bars = "95 % interval over seeds" if several_seeds else "95 % bootstrap interval over subjects (one seed)"
    fig.suptitle(f"{dataset}, shift {shift}: metrics against {param} and training time ({bars}; floor dashed)", fontsize=9)
    legend = axes[0, 1].get_legend()
    if legend is not None:
        legend.set_frame_on(False)
    return fig


# -- every figure of an edition --------------------------------------------------------------------------
def example_dirs(records: Sequence[Any], cache_dir: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """The example folders of the unshifted cells, by dataset then method label (first seed), where
    the records name one (``ResultRecord.example``, relative to the cache) and it exists."""
    out: dict[str, dict[str, Path]] = {}
    for r in sorted(records, key=lambda r: r.seed):
        if r.shift != "none" or not getattr(r, "example", ""):
            continue
        path = Path(cache_dir) / r.example
        if path.is_dir():
            out.setdefault(r.dataset, {}).setdefault(r.label, path)
    return out


def render_record_figures(records: Sequence[Any], out_dir: str | os.PathLike, *, formats: Sequence[str] = FORMATS, dpi: int = 110) -> list[Path]:
    """``sweep-<param>[-<dataset>]``: one :func:`sweep_curves` figure per swept config field and dataset;
    ``similarity-<dataset>``: :func:`similarity_curves` where records measured their shifts' similarity."""
    written: list[Path] = []
    for dataset in dict.fromkeys(r.dataset for r in records if r.shift != "none" and "healthy_input_ssim" in (r.dataset_stats or {})):
        fig = similarity_curves(records, dataset)
        if fig is not None:
            written += save_figure(fig, Path(out_dir) / f"similarity-{dataset}", formats, dpi)
    for param in swept_params(records):
        datasets = list(dict.fromkeys(r.dataset for r in records if param in (r.sweep or {})))
        for dataset in datasets:
            fig = sweep_curves(records, param, dataset=dataset)
            if fig is not None:
                suffix = f"-{dataset}" if len(datasets) > 1 else ""
                written += save_figure(fig, Path(out_dir) / f"sweep-{param}{suffix}", formats, dpi)
    return written


def render_figures(frame: pd.DataFrame, out_dir: str | os.PathLike, *, examples: Mapping[str, Mapping[str, Path]] | None = None,
                   formats: Sequence[str] = FORMATS, dpi: int = 110, name_subjects: bool = True) -> list[Path]:
    """Every figure of ``frame`` (a :func:`uadbench.report.tidy_frame`) into ``out_dir``:
    ``volume-boxes``, ``severity-<family>`` per shift family and, given ``examples`` (dataset ->
    label -> example folder), ``examples-<dataset>``; each as PNG and PDF. Returns the paths.
    ``name_subjects=False``: the example panel's title does not name its subject (whose example
    files carry its dataset id) — for records that name subjects by pseudonyms."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    # the rows the figures read, once: FIGURE_METRICS of every cell, and of each volume without a shift
    wanted = frame["metric"].isin(FIGURE_METRICS) & ((frame["level"] == "cell") | (frame["shift"] == "none"))
    frame = frame[wanted]
    for spec in list(dict.fromkeys(frame["spec_hash"])):
        part = frame[frame["spec_hash"] == spec]
        suffix = f"-{spec}" if frame["spec_hash"].nunique() > 1 else ""
        fig = volume_boxes(part)
        if fig is not None:
            written += save_figure(fig, out_dir / f"volume-boxes{suffix}", formats, dpi)
        for family in shift_families(part):
            fig = severity_curves(part, family)
            if fig is not None:
                written += save_figure(fig, out_dir / f"severity-{family}{suffix}", formats, dpi)
    for dataset, by_label in (examples or {}).items():
        loaded = {label: ex for label, path in by_label.items() if (ex := read_example(path)) is not None}
        subjects = {ex["subject"] for ex in loaded.values()}
        if loaded and len(subjects) == 1:
            who = next(iter(subjects)) if name_subjects else "one test subject"
            fig = example_panel(loaded, f"{dataset}: {who}, the same slice for every method")
            written += save_figure(fig, out_dir / f"examples-{dataset}", formats, dpi)
    return written
