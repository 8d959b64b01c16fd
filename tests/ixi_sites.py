"""A tiny IXI T1 folder whose subjects come from the three IXI hospitals (for the privacy and subgroup tests)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from nifti_layouts import write

SITES = ("HH", "Guys", "IOP")
SHAPE = (48, 56, 40)  # 2 mm voxels: a brain box large enough to survive the protocol's erosion on the cpu grid


def site_arrays(index: int, site: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, brain labels) of one subject: a noisy brain box; IOP's scanner adds a bright blob,
    which a method trained on the other sites flags as anomalous (the site shift the tests look for)."""
    rng = np.random.default_rng(2000 + index)
    brain = np.zeros(SHAPE, dtype=np.uint8)
    brain[8:40, 8:48, 6:34] = 1
    image = np.where(brain > 0, 100.0 + 10.0 * rng.standard_normal(SHAPE), 0.0).astype(np.float32)
    if site == "IOP":
        image[18:30, 20:34, 14:26] *= 1.6
    return image, brain


def write_ixi_sites(folder: Path, n: int = 36) -> dict[str, dict]:
    """``n`` prepared-layout IXI T1 scans, sites in turn HH, Guys, IOP, with a participants table;
    returns subject id -> {"age", "sex", "site"} as written."""
    facts = {}
    for i in range(n):
        sid = f"IXI{100 + i:03d}-{SITES[i % 3]}-{1000 + i:04d}"
        image, brain = site_arrays(i, SITES[i % 3])
        write(folder / f"{sid}_T1.nii.gz", image)
        write(folder / f"{sid}_T1_DLMUSE.nii.gz", brain)
        facts[sid] = {"age": 25.0 + 1.5 * i, "sex": "F" if i % 2 else "M", "site": SITES[i % 3]}
    with open(folder / "participants.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["MRID", "Age", "Sex"])
        for sid, info in facts.items():
            w.writerow([sid, info["age"], info["sex"]])
    return facts


GRID = """
name = "sites"
image_grid = "cpu"
seeds = [0]
train_dataset = "ixi-t1@Guys+HH"

[[methods]]
name = "thresh"

[[datasets]]
name = "ixi-t1@IOP"
"""
