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
