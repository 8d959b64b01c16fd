"""The dataset contract, checked for every registered dataset with no per-dataset test code, by the
check a plugin author runs (:func:`uadbench.testing.check_dataset`), and that check's own teeth.

Each dataset is built as the harness builds it (``create_dataset(name, root=...)``) on a fresh
data root with small cohorts ($UADBENCH_PHANTOM_SIZES). File-backed datasets read a tiny
synthetic copy of their official layout (``nifti_layouts``); a dataset with no data and no
synthetic layout is skipped with the reason.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from nifti_layouts import write_family

from uadbench.data.dataset import DatasetSource, create_dataset
from uadbench.data.volume import Volume
from uadbench.registry import DATASETS
from uadbench.testing import check_dataset

SIZES = "train=2,val=1,test=2"  # small enough to generate in seconds, two subjects where it matters
NAMES = DATASETS.names()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UADBENCH_PHANTOM_SIZES", SIZES)
        yield tmp_path_factory.mktemp("dataset-contract")


def test_datasets_are_registered():
    assert NAMES, "no dataset is registered (did an entry-point module fail to import?)"


@pytest.mark.parametrize("name", NAMES)
def test_dataset_contract(name, root):
    family = getattr(DATASETS.get(name), "family", "")
    if family and not (root / family).exists():
        write_family(family, root / family)
    ds = create_dataset(name, root=root)
    if not ds.available():
        pytest.skip(f"{name}: no data where it looks ({getattr(ds, 'directory', root)}) and no synthetic layout in nifti_layouts")
    check_dataset(name, root=root)


# -- the check catches what it says it catches -------------------------------------------------------------------
def _volume(sid: str, lesion: bool, seed: int = 0) -> Volume:
    image = np.random.default_rng(seed).random((6, 5, 4)).astype(np.float32)
    brain = np.ones(image.shape, bool)
    mask = np.zeros(image.shape, bool) if lesion else None
    if mask is not None:
        mask[2, 2, 2] = True
    return Volume(image, np.eye(4), brain, sid, lesion_mask=mask)


class InMemory(DatasetSource):
    """Two healthy subjects for training, one annotated test subject."""

    splits = ("train", "test")
    lesion_splits = ("test",)
    ids = {"train": ["a", "b"], "test": ["c"]}

    def subjects(self, split):
        self.check_split(split)
        return list(self.ids[split])

    def load(self, split):
        return [_volume(sid, split in self.lesion_splits, seed=ord(sid)) for sid in self.subjects(split)]


class SharedSubject(InMemory):
    ids = {"train": ["a", "b"], "test": ["b"]}


class NoLesionMask(InMemory):
    def load(self, split):
        return [_volume(sid, False) for sid in self.subjects(split)]


class MaskOnHealthySplit(InMemory):
    def load(self, split):
        return [_volume(sid, True) for sid in self.subjects(split)]


class NoSplitCheck(InMemory):
    def subjects(self, split):
        return list(self.ids.get(split, []))

    def load(self, split):
        return [_volume(sid, split in self.lesion_splits) for sid in self.ids.get(split, ["x"])]


class ChangesBetweenLoads(InMemory):
    calls = itertools.count()  # every load another image

    def load(self, split):
        return [_volume(sid, split in self.lesion_splits, seed=next(self.calls)) for sid in self.subjects(split)]


class Float64Image(InMemory):
    def load(self, split):
        out = super().load(split)
        for v in out:
            v.image = v.image.astype(np.float64)
        return out


def test_a_good_dataset_passes(tmp_path):
    check_dataset(InMemory, root=tmp_path)


@pytest.mark.parametrize("cls, message", [
    (SharedSubject, "splits 'train' and 'test' share subjects \\['b'\\]"),
    (NoLesionMask, "a lesion split needs a boolean lesion_mask"),
    (MaskOnHealthySplit, "a healthy split \\(not in lesion_splits\\) with a lesion_mask"),
    (NoSplitCheck, "load\\('no-such-split'\\) returned"),
    (ChangesBetweenLoads, "a fresh instance loads another image"),
    (Float64Image, "image must be a 3D float32 array, got 3D float64"),
])
def test_check_dataset_catches_a_broken_rule(tmp_path, cls, message):
    with pytest.raises(AssertionError, match=message):
        check_dataset(cls, root=tmp_path)


def test_a_dataset_without_data_fails_with_where_it_looked(tmp_path):
    with pytest.raises(AssertionError, match=f"no data where it looks \\({tmp_path / 'nothing' / 'mslub'}\\)"):
        check_dataset("mslub-t2", root=tmp_path / "nothing")
