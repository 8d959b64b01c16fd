"""The shipped shift calibration: severities at SSIM 0.95 / 0.90 / 0.80, reproduced."""

from __future__ import annotations

import numpy as np
import pytest

from uadbench.errors import ConfigError
from uadbench.grid import parse_grid
from uadbench.shifts import calibration as cal

KEY = cal.calibration_key("phantom-healthy-t2w", "val", "cpu")


@pytest.fixture(scope="module")
def shipped():
    return cal.read_table()["calibrations"][KEY]


REFERENCES: dict[str, cal.Reference] = {}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The calibrations' own splits (default cohort sizes, as calibrated), built once per table key."""
    import os

    from uadbench.data.pipeline import get_image_grid

    root = tmp_path_factory.mktemp("cal")

    def get(key: str) -> cal.Reference:
        if key not in REFERENCES:
            entry = cal.read_table()["calibrations"][key]
            saved = os.environ.pop("UADBENCH_PHANTOM_SIZES", None)  # the calibration used the default cohort sizes
            try:
                ref = cal.Reference(entry["dataset"], entry["split"], get_image_grid(entry["image_grid"]["name"]), data_root=root)
            finally:
                if saved is not None:
                    os.environ["UADBENCH_PHANTOM_SIZES"] = saved
            assert ref.source.fingerprint() == entry["fingerprint"] and len(ref.volumes) == entry["n_volumes"]
            REFERENCES[key] = ref
        return REFERENCES[key]

    yield get
    REFERENCES.clear()


@pytest.fixture(scope="module")
def reference(references):
    return references(KEY)


def test_every_calibratable_shift_is_in_the_shipped_table(shipped):
    assert set(cal.calibratable_shifts("phantom-healthy-t2w")) <= set(shipped["shifts"]), (
        "recalibrate: uadbench calibrate-shifts --out uadbench/shifts/levels.json")
    assert "ti" not in cal.calibratable_shifts("phantom-healthy-t2w") and "ti" in cal.calibratable_shifts("phantom-healthy-flair")


def _cases():
    return [pytest.param(key, name, float(level), v["severity"], id=f"{entry['dataset']}-{name}@ssim{level}")
            for key, entry in cal.read_table()["calibrations"].items()
            for name, levels in entry["shifts"].items() for level, v in levels.items() if v["severity"] is not None]


@pytest.mark.parametrize("key, name, level, severity", _cases())
def test_calibrated_severity_reproduces_its_similarity(references, key, name, level, severity):
    measured = references(key).similarity(name, severity)
    assert abs(measured - level) <= 0.01, f"{name}@{severity}: SSIM {measured:.4f}, calibrated for {level}"


def test_similarity_is_ssim_of_shifted_against_original(reference):
    from skimage.metrics import structural_similarity

    shifted = reference.shifted("gamma", 0.5)
    expected = np.mean([structural_similarity(v.image.astype(np.float64), s.astype(np.float64), data_range=1.0)
                        for v, s in zip(reference.volumes, shifted, strict=True)])
    assert reference.similarity("gamma", 0.5) == pytest.approx(expected, abs=1e-12)
    assert reference.similarity("gamma", 1.0) == pytest.approx(1.0)


def test_grid_takes_calibrated_levels(shipped, monkeypatch):
    monkeypatch.delenv("UADBENCH_PHANTOM_SIZES", raising=False)  # the calibrated cohort sizes
    base = {"name": "lv", "image_grid": "cpu", "train_dataset": "phantom-healthy-t2w",
            "methods": [{"name": "thresh", "preset": "cpu"}], "datasets": [{"name": "phantom-tumour-t2w"}]}
    spec = parse_grid({**base, "shifts": [{"name": "gamma", "ssim": [0.95, 0.8]}]})
    assert [s.severity for s in spec.shifts[1:]] == [shipped["shifts"]["gamma"][k]["severity"] for k in ("0.95", "0.8")]
    with pytest.raises(ConfigError, match="no shift calibration for phantom-healthy-t2w/val@smoke"):
        parse_grid({**base, "image_grid": "smoke", "shifts": [{"name": "gamma", "ssim": [0.9]}]})
    with pytest.raises(ConfigError, match="made on image grid"):  # same name, another grid: not the calibrated one
        parse_grid({**base, "image_grid": {"name": "cpu", "shape": [48, 48, 24], "spacing": 4.0}, "shifts": [{"name": "gamma", "ssim": [0.9]}]})
    with pytest.raises(ConfigError, match="made on other data"):  # another phantom seed: other subjects
        parse_grid({**base, "data_seed": 1, "shifts": [{"name": "gamma", "ssim": [0.9]}]})
    with pytest.raises(ConfigError, match="either severities"):
        parse_grid({**base, "shifts": [{"name": "gamma", "ssim": [0.9], "severities": [0.5]}]})
    # a level a shift cannot reach is refused, not invented: TR at a tenth of the protocol's still has SSIM 0.87
    assert shipped["shifts"]["tr"]["0.8"]["severity"] is None
    with pytest.raises(ConfigError, match="does not reach ssim 0.8"):
        parse_grid({**base, "shifts": [{"name": "tr", "ssim": [0.8]}]})
