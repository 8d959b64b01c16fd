"""A tiny IXI T1 folder whose subjects come from the three IXI hospitals (for the privacy and subgroup tests)."""

from __future__ import annotations

import csv
from pathlib import Path

from nifti_layouts import subject_arrays, write

SITES = ("HH", "Guys", "IOP")


def write_ixi_sites(folder: Path, n: int = 36) -> dict[str, dict]:
    """``n`` prepared-layout IXI T1 scans, sites in turn HH, Guys, IOP, with a participants table;
    returns subject id -> {"age", "sex", "site"} as written."""
    facts = {}
    for i in range(n):
        sid = f"IXI{100 + i:03d}-{SITES[i % 3]}-{1000 + i:04d}"
        a = subject_arrays(i)
        write(folder / f"{sid}_T1.nii.gz", a["image"])
        write(folder / f"{sid}_T1_DLMUSE.nii.gz", a["brain"])
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
