"""A NIfTI header is checked before any voxel is read: size, voxel sizes, affine."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from uadbench.data.nifti import MAX_READ_VOXELS, load_nifti
from uadbench.errors import DataError


def _write(path, shape=(4, 4, 4), zooms=(1.0, 1.0, 1.0), affine=None):
    img = nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([*zooms, 1.0]) if affine is None else affine)
    img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


def test_a_header_bomb_is_refused_without_reading_its_data(tmp_path):
    path = _write(tmp_path / "small.nii")
    raw = bytearray(path.read_bytes())
    dims = np.frombuffer(bytes(raw[40:56]), dtype="<i2").copy()
    dims[1:4] = 2048  # the header now claims 2048^3 float32 voxels: 32 GiB
    raw[40:56] = dims.tobytes()
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(bytes(raw)))
    assert bomb.stat().st_size < 1000
    with pytest.raises(DataError, match=rf"declares shape \(2048, 2048, 2048\) .*1 to {MAX_READ_VOXELS:,} voxels"):
        load_nifti(bomb)


@pytest.mark.parametrize("zooms", [(1e-6, 1.0, 1.0), (1.0, 1e6, 1.0), (float("nan"), 1.0, 1.0)])
def test_absurd_voxel_sizes_are_refused(tmp_path, zooms):
    path = _write(tmp_path / "v.nii")
    raw = bytearray(path.read_bytes())
    raw[80:92] = np.asarray(zooms, dtype="<f4").tobytes()  # pixdim[1:4]: the header's voxel sizes
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="voxel sizes"):
        load_nifti(path)


def test_a_singular_affine_is_refused_and_a_good_file_reads(tmp_path):
    path = _write(tmp_path / "s.nii")
    raw = bytearray(path.read_bytes())
    raw[252:256] = np.asarray([0, 1], dtype="<i2").tobytes()  # qform_code 0, sform_code 1: the sform is the affine
    raw[312:328] = np.zeros(4, dtype="<f4").tobytes()  # srow_z = 0: a singular affine
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="affine is singular"):
        load_nifti(path)
    array, affine = load_nifti(_write(tmp_path / "ok.nii.gz", zooms=(2.0, 2.0, 2.0)))
    assert array.shape == (4, 4, 4) and np.allclose(np.diag(affine)[:3], 2.0)


def _bomb(path):
    """Rewrite a .nii.gz so that its header claims 2048^3 voxels (its data stay a few bytes)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    dims = np.frombuffer(bytes(raw[40:56]), dtype="<i2").copy()
    dims[0], dims[1:4] = 3, 2048
    raw[40:56] = dims.tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


def test_a_header_bomb_in_a_folder_card_stops_uadbench_run_in_one_line(tmp_path):
    """The public path: a folder card whose scans claim 32 GiB each; `uadbench run` refuses the
    first one it reads, before reading its voxels, in one line with exit 2."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from nifti_layouts import write_mslub

    cards = tmp_path / "cards"
    ids = write_mslub(cards / "scans")
    for sid in ids:
        _bomb(cards / "scans" / f"{sid}_MNI_T2.nii.gz")
    assert max((cards / "scans" / f"{sid}_MNI_T2.nii.gz").stat().st_size for sid in ids) < 4096
    (cards / "bomb.toml").write_text(
        'name = "aaa-bomb"\nroot = "scans"\nmodality = "t2w"\ncohort = "lesion"\nimage = "{subject}_MNI_T2.nii.gz"\n'
        'brain_mask = "nonzero"\nlesion_mask = "{subject}_MNI_GOLD_STANDARD.nii.gz"\n')
    grid = tmp_path / "g.toml"
    grid.write_text('name = "bomb"\nimage_grid = "smoke"\nseeds = [0]\ntrain_dataset = "phantom-healthy-t2w"\n'
                    '[[methods]]\nname = "thresh"\npreset = "smoke"\n[[datasets]]\nname = "aaa-bomb"\n')
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_CARDS=str(cards), UADBENCH_DATA=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "uadbench.cli", "run", str(grid), "--out", str(tmp_path / "run"), "--no-tracking"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).parent)
    (line,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert line.startswith("uadbench: error: ") and "_MNI_T2.nii.gz: header declares shape (2048, 2048, 2048)" in line
    assert not (tmp_path / "run").exists()  # the refused run left nothing behind
