"""A PNG preview of the phantom: one subject per cohort in every modality.

matplotlib is imported on first use only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from uadbench.data.phantom.cohorts import PHANTOM_VERSION
from uadbench.data.phantom.physics import ALL_MODALITIES, DEFAULT_SCANNER, get_scanner
from uadbench.data.phantom.subject import get_cohort
from uadbench.data.phantom.synthesis import generate_subject, render
from uadbench.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def render_preview(
    out_png: str | os.PathLike,
    *,
    seed: int = 0,
    scanner: str = DEFAULT_SCANNER,
    cohorts: Sequence[str] = ("healthy", "tumour", "ms", "stroke"),
    modalities: Sequence[str] = ALL_MODALITIES,
) -> Path:
    """Draw a healthy subject and one subject per lesion type, in every modality, as a PNG.

    Rows are subjects (the first subject of each cohort); columns are modalities (T1w, T2w, PD,
    FLAIR) at the axial slice with the most lesion, outlined in red. Returns ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    scanner_obj = get_scanner(scanner)
    rows = list(cohorts)
    for name in rows:
        get_cohort(name)
    for m in modalities:
        scanner_obj.sequence(m)
    fig, axes = plt.subplots(
        len(rows), len(modalities), figsize=(2.6 * len(modalities), 2.9 * len(rows)), squeeze=False
    )
    for r, cohort in enumerate(rows):
        split = "train" if cohort == "healthy" else "test"
        subject = generate_subject(seed, cohort, split, 0, field_strength=scanner_obj.field_strength)
        mask = subject.lesion_mask
        if mask is not None and mask.any():
            z = int(np.argmax(mask.sum(axis=(0, 1))))
        else:
            z = subject.gm.shape[2] // 2 + 5
        for c, modality in enumerate(modalities):
            image = render(subject, modality, scanner_obj)
            ax: Axes = axes[r, c]
            sl = image[:, :, z].T
            hi = np.percentile(image[subject.brain_mask], 99.5)
            ax.imshow(sl, cmap="gray", origin="lower", vmin=0, vmax=hi)
            if mask is not None and mask[:, :, z].any():
                ax.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(modality.upper() if modality != "flair" else "FLAIR")
            if c == 0:
                ax.set_ylabel(f"{cohort}\n{subject.subject_id}", fontsize=8)
    fig.suptitle(f"uadbench phantom v{PHANTOM_VERSION}, seed {seed}, scanner {scanner_obj.name}", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png

