"""Acquisition shifts: phantom subjects re-acquired with another protocol (uadbench.shifts.acquisition)."""

from __future__ import annotations

import numpy as np
import pytest

from uadbench.errors import ConfigError
from uadbench.grid import parse_grid

BASE = {"name": "acq", "image_grid": "smoke", "seeds": [0], "train_dataset": "phantom-healthy-t2w",
        "methods": [{"name": "thresh", "preset": "smoke"}], "datasets": [{"name": "phantom-tumour-t2w"}]}


def _tissue_ratio(image: np.ndarray, subject) -> float:
    """Mean signal in nearly pure CSF over that in nearly pure white matter."""
    csf, wm = subject.csf > 0.95, subject.wm > 0.95
    return float(image[csf].mean() / image[wm].mean())


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_echo_time_change_follows_the_spin_echo_signal_equation(tmp_path, factor):
    """Changing TE moves the CSF/WM contrast as PD (1 - exp(-TR/T1)) exp(-TE/T2) says (within the
    bias field and noise, which are the same draws in both images)."""
    from uadbench.data import phantom as ph
    from uadbench.data.dataset import create_dataset
    from uadbench.shifts.acquisition import acquire_split

    source = create_dataset("phantom-healthy-t2w", root=tmp_path, seed=0)
    before = source.acquire("val", source.scanner)[0]
    after = acquire_split(source, "val", "te", factor)[0]
    subject = ph.generate_subject(0, "healthy", "val", 0, field_strength=3.0)
    seq = ph.get_scanner(source.scanner).sequence("t2w")

    def predicted(te: float) -> float:
        s = {n: float(seq.__class__(seq.kind, seq.tr, te).signal(p.t1, p.t2, p.pd)) for n, p in subject.tissues.items()}
        return s["csf"] / s["wm"]

    measured_change = _tissue_ratio(after.image, subject) / _tissue_ratio(before.image, subject)
    predicted_change = predicted(seq.te * factor) / predicted(seq.te)
    # within 8 %: partial volume in the "pure" voxels, and the Rician noise floor that lifts the
    # dim white matter at long TE (measured 5 % low at TE x 2)
    assert measured_change == pytest.approx(predicted_change, rel=0.08)
    assert (measured_change > 1) == (factor > 1)  # longer TE: CSF brighter relative to white matter


def test_shifted_split_is_cached_and_evaluated(tmp_path, data_root):
    from uadbench.run.runner import run_grid

    grid = {**BASE, "shifts": [{"name": "te", "severities": [0.5]}, {"name": "field", "severities": [1.5]}]}
    summary = run_grid(parse_grid(grid), out_dir=tmp_path / "run", track=False, progress=lambda m: None)
    assert not summary.failures
    by_shift = {r.shift_label: r for r in summary.records}
    assert set(by_shift) == {"none", "te@0.5", "field@1.5"}
    for label in ("te@0.5", "field@1.5"):
        assert by_shift[label].metrics["auprc"] != by_shift["none"].metrics["auprc"]
        assert "fp_volume_ml@val-bisection" in by_shift[label].per_volume["healthy-test-000"]
    cached = sorted(p.name for p in (tmp_path / "run" / "cache" / "data").glob("*-te-*.volumes"))
    assert len(cached) == 2, cached  # healthy and tumour test splits under te@0.5, prepared once each

    # how much each shift changed the healthy test scans, measured in the cell (SSIM; 1 unshifted)
    similarity = {k: r.dataset_stats["healthy_input_ssim"] for k, r in by_shift.items()}
    assert similarity["none"] == pytest.approx(1.0) and 0.3 < similarity["te@0.5"] < 0.99 and similarity["field@1.5"] < 0.99
    from uadbench.report.figures import render_record_figures, similarity_frame

    frame = similarity_frame(summary.records)
    assert set(frame["family"]) == {"none", "te", "field"} and set(frame["metric"]) == {"auprc", "fp_volume_ml@val-bisection"}
    paths = render_record_figures(summary.records, tmp_path / "fig", formats=("png",), dpi=40)
    assert [p.name for p in paths] == ["similarity-phantom-tumour-t2w.png"] and paths[0].stat().st_size > 5000


@pytest.mark.parametrize("shift, datasets, message", [
    ({"name": "te", "severities": [0.5]}, [{"name": "brats21-t2"}], "cannot"),
    ({"name": "ti", "severities": [0.5]}, [{"name": "phantom-tumour-t2w"}], "inversion time"),
    ({"name": "field", "severities": [2.0]}, [{"name": "phantom-tumour-t2w"}], "one of 1.5, 3"),
    ({"name": "te", "severities": [0.0]}, [{"name": "phantom-tumour-t2w"}], r"\[0.05, 10\]"),
])
def test_grid_refuses_acquisition_shifts_it_cannot_apply(shift, datasets, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid({**BASE, "datasets": datasets, "shifts": [shift]})
