"""Per-volume split storage: the same volumes as the npz cache it replaces, read lazily, migrated
from an old cache, and training draws the same slices from memory-mapped volumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synthetic import brainlike_volumes
from uadbench.data import IMAGE_GRIDS, SliceDataset, Volume, preprocess
from uadbench.data.cache import data_key, load_split, migrate_npz, save_split
from uadbench.data.dataset import DatasetSource, create_dataset
from uadbench.data.geometry import NATIVE_AFFINE, NATIVE_SHAPE
from uadbench.data.slices import MEMORY_BUDGET_ENV, default_memory_budget, file_block
from uadbench.data.store import STORE_FORMAT, load_npz_split, load_volumes, save_volumes, store_bytes
from uadbench.errors import DataError
from uadbench.registry import DATASETS
from uadbench.run import layout
from uadbench.run.splits import prepare_split, split_paths

GRID = IMAGE_GRIDS["smoke"]


# -- the npz cache as earlier versions wrote and read it (the reference) ---------------------------
def npz_save_split(path: Path, volumes: list[Volume]) -> None:
    arrays = {
        "image": np.stack([v.image for v in volumes]),
        "brain": np.stack([v.brain_mask for v in volumes]),
        "subject_ids": np.array([v.subject_id for v in volumes]),
        "affine": np.stack([v.affine for v in volumes]),
        "native_affine": np.stack([np.asarray(v.meta.get(NATIVE_AFFINE, v.affine), dtype=np.float64) for v in volumes]),
        "native_shape": np.array([v.meta.get(NATIVE_SHAPE, v.shape) for v in volumes], dtype=np.int64),
    }
    if all(v.lesion_mask is not None for v in volumes):
        arrays["lesion"] = np.stack([v.lesion_mask for v in volumes])
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def npz_load_split(path: Path) -> list[Volume]:
    with np.load(path, allow_pickle=False) as z:
        ids = [str(s) for s in z["subject_ids"]]
        lesions = z["lesion"] if "lesion" in z else None
        affines, native_affines, native_shapes = z["affine"], z["native_affine"], z["native_shape"]
        return [
            Volume(z["image"][i], affines[i], z["brain"][i], ids[i], None if lesions is None else lesions[i],
                   meta={NATIVE_AFFINE: native_affines[i], NATIVE_SHAPE: tuple(int(n) for n in native_shapes[i])})
            for i in range(len(ids))
        ]


def assert_same_volumes(got: list[Volume], expected: list[Volume]) -> None:
    assert [v.subject_id for v in got] == [v.subject_id for v in expected]
    for g, e in zip(got, expected, strict=True):
        for name in ("image", "brain_mask", "affine"):
            a, b = getattr(g, name), getattr(e, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), (g.subject_id, name)
        assert (g.lesion_mask is None) == (e.lesion_mask is None)
        if e.lesion_mask is not None:
            assert g.lesion_mask.dtype == e.lesion_mask.dtype and np.array_equal(g.lesion_mask, e.lesion_mask)
        assert set(g.meta) == set(e.meta) == {NATIVE_AFFINE, NATIVE_SHAPE}
        assert np.array_equal(g.meta[NATIVE_AFFINE], e.meta[NATIVE_AFFINE]) and g.meta[NATIVE_AFFINE].dtype == np.float64
        assert g.meta[NATIVE_SHAPE] == e.meta[NATIVE_SHAPE] and all(type(s) is int for s in g.meta[NATIVE_SHAPE])


def _raw(n: int, seed: int, lesion: bool, shape=(40, 44, 30)) -> list[Volume]:
    """Scans at 2 mm, each placed and oriented differently, on a grid other than the target's."""
    images, brains, lesions = brainlike_volumes(n, shape=shape, seed=seed, lesion=lesion)
    rng = np.random.default_rng(seed)
    out = []
    for i, (img, brain, les) in enumerate(zip(images, brains, lesions, strict=True)):
        affine = np.diag([2.0, -2.0, 2.0, 1.0])
        affine[:3, 3] = rng.uniform(-100, 100, 3)
        if i % 2:
            affine[:3, :3] = affine[:3, :3] @ np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        out.append(Volume(img, affine, brain, f"sub-{seed}-{i:03d}", les if lesion else None))
    return out


@pytest.mark.parametrize("lesion", [True, False])
def test_a_store_holds_exactly_what_the_npz_cache_held(tmp_path, lesion):
    volumes = [preprocess(v, GRID) for v in _raw(5, 1, lesion)]
    assert len({tuple(v.affine.ravel()) for v in volumes}) == 5  # each volume its own affine
    npz_save_split(tmp_path / "old.npz", volumes)
    save_volumes(tmp_path / "new.volumes", volumes)
    reference = npz_load_split(tmp_path / "old.npz")
    assert_same_volumes(load_volumes(tmp_path / "new.volumes"), reference)
    assert_same_volumes(load_npz_split(tmp_path / "old.npz"), reference)  # the migration reader
    sizes = sum(p.stat().st_size for p in (tmp_path / "new.volumes").glob("*.npy"))
    assert store_bytes(5, GRID.shape, lesion) <= sizes <= store_bytes(5, GRID.shape, lesion) + 3 * 4096  # + headers


def test_a_split_with_one_unannotated_volume_keeps_no_lesion_masks_as_before(tmp_path):
    volumes = [preprocess(v, GRID) for v in _raw(3, 2, True)]
    volumes[1].lesion_mask = None
    npz_save_split(tmp_path / "old.npz", volumes)
    save_volumes(tmp_path / "s", volumes)
    assert not (tmp_path / "s" / "lesion.npy").exists()
    assert_same_volumes(load_volumes(tmp_path / "s"), npz_load_split(tmp_path / "old.npz"))


def test_loaded_volumes_are_memory_mapped_and_writes_never_reach_the_file(tmp_path):
    volumes = [preprocess(v, GRID) for v in _raw(3, 3, True)]
    save_split(tmp_path / "s", volumes)
    back = load_split(tmp_path / "s")
    for v in back:
        for array in (v.image, v.brain_mask, v.lesion_mask):
            base = array
            while base is not None and not isinstance(base, np.memmap):
                base = base.base
            assert isinstance(base, np.memmap), "not memory-mapped"
    # each volume is its own block of the file: volume 1 is read without volumes 0 and 2
    assert not np.shares_memory(back[0].image, back[1].image)
    back[1].image[:] = -1.0  # copy-on-write: the caller's copy changes, the store does not
    assert_same_volumes(load_split(tmp_path / "s"), [Volume(v.image, v.affine, v.brain_mask, v.subject_id, v.lesion_mask,
                                                            {k: v.meta[k] for k in (NATIVE_AFFINE, NATIVE_SHAPE)}) for v in volumes])


def test_a_store_is_written_atomically_and_refused_when_of_another_format(tmp_path):
    volumes = [preprocess(v, GRID) for v in _raw(2, 4, False)]

    class Failing(list):
        def __getitem__(self, i):
            if i == 1:
                raise RuntimeError("disk full")
            return super().__getitem__(i)

    with pytest.raises(RuntimeError, match="disk full"):
        save_volumes(tmp_path / "s", Failing(volumes))
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left
    save_volumes(tmp_path / "s", volumes)
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    (tmp_path / "s" / "index.json").write_text(json.dumps({**index, "format": STORE_FORMAT + 1}))
    with pytest.raises(DataError, match=f"format {STORE_FORMAT + 1}.*reads format {STORE_FORMAT}.*delete"):
        load_volumes(tmp_path / "s")
    with pytest.raises(DataError, match="has shape"):
        save_volumes(tmp_path / "t", [volumes[0], Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), np.ones((4, 4, 4), bool), "x")])


# -- through prepare_split: a registered dataset, counted loads ------------------------------------
class CountingSource(DatasetSource):
    """Synthetic scans; counts how often a split is loaded from the source."""

    splits = ("train", "val", "test")
    lesion_splits = ("test",)
    loads: dict[str, int] = {}

    def subjects(self, split: str) -> list[str]:
        return [v.subject_id for v in self.load_quietly(split)]

    def load_quietly(self, split: str) -> list[Volume]:
        return _raw(4, self.splits.index(split) + 10 * self.seed, split == "test")

    def load(self, split: str) -> list[Volume]:
        CountingSource.loads[split] = CountingSource.loads.get(split, 0) + 1
        return self.load_quietly(split)


@pytest.fixture
def counting_dataset():
    DATASETS.register("test-store-counting", CountingSource)
    CountingSource.loads = {}
    yield "test-store-counting"
    DATASETS.unregister("test-store-counting")


def test_prepare_split_stores_once_and_reads_the_same_numbers(tmp_path, counting_dataset):
    expected = [preprocess(v, GRID) for v in CountingSource().load_quietly("test")]
    first = prepare_split(counting_dataset, "test", grid=GRID, data_seed=0, cache_dir=tmp_path, data_root=None)
    again = prepare_split(counting_dataset, "test", grid=GRID, data_seed=0, cache_dir=tmp_path, data_root=None)
    assert CountingSource.loads == {"test": 1}
    key = data_key(create_dataset(counting_dataset), "test", GRID)
    assert layout.split_path(tmp_path, counting_dataset, "test", key).is_dir()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [f"{counting_dataset}-test-{key}.volumes"]
    reference = [Volume(v.image, v.affine, v.brain_mask, v.subject_id, v.lesion_mask,
                        {k: v.meta[k] for k in (NATIVE_AFFINE, NATIVE_SHAPE)}) for v in expected]
    assert_same_volumes(first, reference)
    assert_same_volumes(again, reference)


def test_an_old_npz_cache_is_migrated_not_recomputed_and_never_read_as_a_store(tmp_path, counting_dataset):
    expected = [preprocess(v, GRID) for v in CountingSource().load_quietly("val")]
    key = data_key(create_dataset(counting_dataset), "val", GRID)
    store, npz = split_paths(counting_dataset, "val", key, tmp_path)
    assert npz == layout.split_path(tmp_path, counting_dataset, "val", key, layout.OLD_SPLIT) and npz.suffix == ".npz"
    npz.parent.mkdir(parents=True)
    npz_save_split(npz, expected)
    reference = npz_load_split(npz)
    got = prepare_split(counting_dataset, "val", grid=GRID, data_seed=0, cache_dir=tmp_path, data_root=None)
    assert CountingSource.loads == {} and not npz.exists() and store.is_dir()  # converted, not prepared again
    assert_same_volumes(got, reference)
    assert not migrate_npz(npz, store)  # nothing left to migrate


def test_acquired_split_keys_are_those_of_the_npz_cache(tmp_path):
    from uadbench.grid.entries import ShiftSpec
    from uadbench.shifts.acquisition import acquired_split_key

    shift = ShiftSpec("te", 0.5)
    store, npz = split_paths("phantom-tumour-t2w", "test", "0123456789abcdef", tmp_path, shift)
    old_base = layout.split_path(tmp_path, "phantom-tumour-t2w", "test", "0123456789abcdef", ".npz").stem
    key = acquired_split_key(old_base, shift)
    assert store.name == f"phantom-tumour-t2w-test-te-{key}.volumes" and npz.name == f"phantom-tumour-t2w-test-te-{key}.npz"


# -- training draws the same slices from a store -------------------------------------------------
def test_slices_from_memory_mapped_volumes_are_drawn_lazily_and_identically(tmp_path):
    volumes = [preprocess(v, GRID) for v in _raw(7, 5, False)]
    save_volumes(tmp_path / "s", volumes)
    mapped = [v.image for v in load_volumes(tmp_path / "s")]
    eager = SliceDataset([v.image for v in volumes])  # in memory, small: stacked as before
    lazy = SliceDataset(mapped, memory_budget=0)
    assert not eager.lazy and lazy.lazy
    # each mapped volume is read from its block of the store's image file, never through the mapping
    blocks = [file_block(a) for a in mapped]
    assert [b[1] for b in blocks] == [blocks[0][1] + i * volumes[0].image.nbytes for i in range(7)]
    assert all(b[0] == str(tmp_path / "s" / "image.npy") for b in blocks) and file_block(volumes[0].image) is None
    in_memory = SliceDataset([v.image for v in volumes], memory_budget=0)  # lazy over arrays in memory
    assert torch.equal(in_memory.epoch(torch.Generator().manual_seed(4)), eager.epoch(torch.Generator().manual_seed(4)))
    as_array = SliceDataset(np.stack([v.image for v in volumes]))  # one array: the tensor path, unchanged
    assert torch.equal(eager.volumes, as_array.volumes) and eager.volumes.is_contiguous()
    assert torch.equal(next(eager.batches(5, torch.Generator().manual_seed(2))), next(as_array.batches(5, torch.Generator().manual_seed(2))))
    assert (lazy.num_volumes, lazy.slices_per_volume, lazy.image_shape) == (eager.num_volumes, eager.slices_per_volume, eager.image_shape)
    assert torch.equal(lazy.volumes, eager.volumes) and torch.equal(lazy.all_slices(), eager.all_slices())
    assert torch.equal(lazy.epoch(torch.Generator().manual_seed(3)), eager.epoch(torch.Generator().manual_seed(3)))
    streams = [d.batches(5, torch.Generator().manual_seed(11)) for d in (eager, lazy)]
    for _ in range(6):  # batches that straddle epochs
        a, b = next(streams[0]), next(streams[1])
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    # resuming from a saved stream state draws the same batches too
    state = streams[1].state_dict()
    resumed = lazy.batches(5, torch.Generator().manual_seed(0))
    resumed.load_state_dict(state)
    resumed.generator.set_state(streams[1].generator.get_state())
    for _ in range(3):
        assert torch.equal(next(resumed), next(streams[0]))
    # the reference: the slice the stacked tensor holds is the volume's axial slice
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(7, generator=g)
    z = torch.randint(GRID.shape[2], (7,), generator=g)
    first = lazy.epoch(torch.Generator().manual_seed(3))
    assert np.array_equal(first[0, 0].numpy(), volumes[int(order[0])].image[:, :, int(z[order[0]])])


def test_the_memory_budget_decides_and_is_checked(monkeypatch):
    images = [np.zeros((8, 8, 4), np.float32)] * 3  # 3 KiB
    assert not SliceDataset(images).lazy
    assert SliceDataset(images, memory_budget=3 * 8 * 8 * 4 * 4 - 1).lazy
    assert not SliceDataset(images, memory_budget=3 * 8 * 8 * 4 * 4).lazy
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "0.001")
    assert default_memory_budget() == 1048 and SliceDataset(images).lazy
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="UADBENCH_SLICE_MEMORY_MB must be a non-negative number of mebibytes, got 'lots'"):
        default_memory_budget()
    with pytest.raises(ValueError, match="one shape"):
        SliceDataset([np.zeros((8, 8, 4)), np.zeros((8, 8, 5))], memory_budget=0)


def test_loading_a_store_reads_no_volume(tmp_path):
    """Opening a 40-volume store touches none of its image data: resident memory stays flat."""
    rng = np.random.default_rng(0)
    shape = (96, 96, 50)

    class Lazy:
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return Volume(rng.random(shape, dtype=np.float32), np.eye(4), np.ones(shape, bool), f"s{i}")

    save_volumes(tmp_path / "s", Lazy())
    code = ("import resource, sys; from uadbench.data.store import load_volumes; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; v = load_volumes(sys.argv[1]); "
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; print(len(v), (after - before) // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "40" and int(out[1]) < 20  # MB; the images alone are 74 MB
