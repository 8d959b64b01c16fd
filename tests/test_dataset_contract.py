"""The dataset contract, checked for every registered dataset with no per-dataset test code.

Each dataset is built as the harness builds it (``create_dataset(name, root=...)``) on a fresh
data root with small cohorts ($UADBENCH_PHANTOM_SIZES), and every split is loaded. Checked: the
splits hold distinct subjects and load in a stable order; lesion masks are present on exactly
the lesion splits; image, brain mask and lesion mask share one shape; every brain mask is
non-empty. File-backed datasets read a tiny synthetic copy of their official layout
(``nifti_layouts``); a dataset with no data and no synthetic layout is skipped with the reason.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from nifti_layouts import write_family

from uadbench.data.dataset import DatasetSource, create_dataset
from uadbench.errors import DataError
from uadbench.registry import DATASETS

SIZES = "train=2,val=1,test=2"  # small enough to generate in seconds, two subjects where it matters
NAMES = DATASETS.names()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UADBENCH_PHANTOM_SIZES", SIZES)
        yield tmp_path_factory.mktemp("dataset-contract")


@pytest.fixture(scope="module")
def loaded(root):
    """name -> (dataset, {split: volumes}); each dataset is loaded once for the whole module."""
    cache: dict[str, tuple[DatasetSource, dict]] = {}

    def get(name: str):
        if name not in cache:
            family = getattr(DATASETS.get(name), "family", "")
            if family and not (root / family).exists():
                write_family(family, root / family)
            ds = create_dataset(name, root=root)
            if not ds.available():
                pytest.skip(f"{name}: no data where it looks ({getattr(ds, 'directory', root)}) and no synthetic layout in nifti_layouts")
            cache[name] = (ds, {split: ds.load(split) for split in ds.splits})
        return cache[name]

    return get


def test_datasets_are_registered():
    assert NAMES, "no dataset is registered (did an entry-point module fail to import?)"


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint_by_subject(name, loaded):
    ds, volumes = loaded(name)
    assert isinstance(ds, DatasetSource)
    assert ds.splits and len(set(ds.splits)) == len(ds.splits)
    assert set(ds.lesion_splits) <= set(ds.splits)
    ids = {}
    for split in ds.splits:
        ids[split] = ds.subjects(split)
        assert ids[split], f"{name}: split {split!r} is empty"
        assert len(set(ids[split])) == len(ids[split]), f"{name}: split {split!r} repeats a subject"
        assert [v.subject_id for v in volumes[split]] == ids[split]
    for a, b in itertools.combinations(ds.splits, 2):
        shared = set(ids[a]) & set(ids[b])
        assert not shared, f"{name}: splits {a!r} and {b!r} share subjects {sorted(shared)}"
    with pytest.raises(DataError):
        ds.load("no-such-split")


@pytest.mark.parametrize("name", NAMES)
def test_order_and_content_are_stable_across_loads(name, loaded, root):
    ds, volumes = loaded(name)
    again = create_dataset(name, root=root)  # a fresh instance reads what the first one prepared
    assert again.fingerprint() == ds.fingerprint()
    for split in ds.splits:
        second = again.load(split)
        assert [v.subject_id for v in second] == [v.subject_id for v in volumes[split]]
        for v, w in zip(volumes[split], second):
            assert v.image.tobytes() == w.image.tobytes(), f"{name}/{split}/{v.subject_id}: image changed"
            np.testing.assert_array_equal(v.brain_mask, w.brain_mask)
            np.testing.assert_array_equal(v.affine, w.affine)


@pytest.mark.parametrize("name", NAMES)
def test_lesion_masks_exactly_on_lesion_splits(name, loaded):
    ds, volumes = loaded(name)
    for split in ds.splits:
        assert ds.has_lesions(split) == (split in ds.lesion_splits)
        if split in ds.lesion_splits:
            for v in volumes[split]:
                assert v.lesion_mask is not None, f"{name}/{split}/{v.subject_id}: lesion split without a mask"
                assert v.lesion_mask.dtype == bool
            assert any(v.lesion_mask.any() for v in volumes[split]), f"{name}/{split}: every lesion mask is empty"
        else:
            for v in volumes[split]:
                assert v.lesion_mask is None, f"{name}/{split}/{v.subject_id}: healthy split with a lesion mask"


@pytest.mark.parametrize("name", NAMES)
def test_volumes_have_agreeing_shapes_and_a_brain(name, loaded):
    ds, volumes = loaded(name)
    for split in ds.splits:
        for v in volumes[split]:
            where = f"{name}/{split}/{v.subject_id}"
            assert v.image.ndim == 3 and v.image.dtype == np.float32, where
            assert v.brain_mask.shape == v.image.shape, where
            if v.lesion_mask is not None:
                assert v.lesion_mask.shape == v.image.shape, where
            assert v.affine.shape == (4, 4) and np.isfinite(v.affine).all(), where
            assert np.isfinite(v.image).all(), where
            assert v.brain_mask.dtype == bool and v.brain_mask.any(), f"{where}: empty brain mask"
