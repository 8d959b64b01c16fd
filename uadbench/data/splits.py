"""Subject splits of file-backed datasets: deterministic, checked, scaled to the subjects found.

A split is computed from the subject ids found on disk, never typed in by hand:

1. **Order.** The ids are sorted and put in a seeded order: each id is ranked by
   ``sha256(f"{seed}:{id}")``. This is a permutation that depends only on the seed and the ids (no
   random-number stream whose values could change with a numpy release), and adding a subject
   does not reshuffle the others.
2. **Sizes.** The paper's sizes (:data:`PAPER_SPLITS`, METHOD_SPEC §3.1) are used as they are
   when at least as many subjects are found as the paper had; one split per dataset, the *rest*
   split (IXI ``train``, ``test`` elsewhere), takes the subjects beyond that. When fewer subjects
   are found, every split is scaled by ``found / paper total``, rounded down, and the subjects
   left over by rounding go one each to the splits with the largest remainders (ties: the order
   the splits are listed in); a split left with none takes one from the largest split. So the
   40-subject IXI sample gives 26 train / 3 val / 11 test per fold and the 3-patient MSLUB sample
   1 val / 2 test.
3. **Folds.** IXI has five folds: the test subjects are fixed (the first ``test`` subjects of
   the order) and the validation subjects of the folds are five disjoint blocks of the others;
   each fold trains on what is not its validation or the test set. When the scaled validation
   size does not fit five times into what the test set leaves, it shrinks until it does.
4. **Checks.** No subject in two splits, no subject twice in one split, no empty split
   (:func:`check_splits`). The reference code's CSVs leak test subjects into training; these
   cannot.

The lists are written as CSV (``subject_id,split``) beside the data by
:class:`uadbench.data.scans.FileDataset`, atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from uadbench.errors import DataError
from uadbench.files import write_text_atomic


@dataclass(frozen=True)
class SplitPlan:
    """The paper's split sizes of one dataset and how they adapt to the subjects found.

    ``sizes`` lists ``(split, paper size)`` in the order the splits are cut from the seeded order
    (after the fixed test block when ``folds > 1``). ``rest`` is the split that takes subjects
    beyond the paper's total. With ``folds > 1``, ``fold_split`` (validation) rotates over
    ``folds`` disjoint blocks and ``fixed_split`` (test) is the same in every fold.
    """

    sizes: tuple[tuple[str, int], ...]
    rest: str
    folds: int = 1
    fold_split: str = "val"
    fixed_split: str = "test"

    def __post_init__(self) -> None:
        names = [s for s, _ in self.sizes]
        if self.rest not in names:
            raise ValueError(f"rest split {self.rest!r} is not one of {names}")
        if len(set(names)) != len(names) or any(n < 1 for _, n in self.sizes):
            raise ValueError(f"split sizes must name distinct splits with positive sizes: {self.sizes}")
        if self.folds > 1 and not {self.fold_split, self.fixed_split} <= set(names):
            raise ValueError(f"a plan with folds needs splits {self.fold_split!r} and {self.fixed_split!r}")

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.sizes)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.sizes)

    def describe(self) -> str:
        sizes = " / ".join(f"{n} {s}" for s, n in self.sizes)
        folds = f", {self.folds} disjoint {self.fold_split} folds" if self.folds > 1 else ""
        return f"{sizes} ({self.rest} takes any extra subjects{folds})"


# The paper's sizes (METHOD_SPEC §3.1). IXI: 358 train / 44 val / 158 test per fold, five folds.
PAPER_SPLITS: dict[str, SplitPlan] = {
    "ixi": SplitPlan((("train", 358), ("val", 44), ("test", 158)), rest="train", folds=5),
    "brats21": SplitPlan((("val", 100), ("test", 1151)), rest="test"),
    "mslub": SplitPlan((("val", 10), ("test", 20)), rest="test"),
    "wmh": SplitPlan((("val", 15), ("test", 45)), rest="test"),
    "atlas": SplitPlan((("val", 175), ("test", 480)), rest="test"),
}


def scaled_sizes(plan: SplitPlan, found: int) -> dict[str, int]:
    """How many subjects each split gets when ``found`` subjects are available (see the module)."""
    names = plan.splits
    if found < len(names):
        raise DataError(f"{found} subject(s) found; the splits {', '.join(names)} need at least {len(names)}")
    if found >= plan.total:
        sizes = dict(plan.sizes)
        sizes[plan.rest] += found - plan.total
        return sizes
    quotas = {s: n * found / plan.total for s, n in plan.sizes}
    sizes = {s: math.floor(q) for s, q in quotas.items()}
    left = found - sum(sizes.values())
    by_remainder = sorted(names, key=lambda s: (-(quotas[s] - sizes[s]), names.index(s)))
    for s in by_remainder[:left]:
        sizes[s] += 1
    for s in names:  # every split keeps at least one subject
        if sizes[s] == 0:
            largest = max(names, key=lambda t: (sizes[t], -names.index(t)))
            sizes[largest] -= 1
            sizes[s] = 1
    return sizes


def seeded_order(subject_ids: Iterable[str], seed: int) -> list[str]:
    """The ids in a seeded order: ranked by sha256 of ``"<seed>:<id>"`` (ties cannot occur)."""
    ids = sorted(subject_ids)
    return sorted(ids, key=lambda sid: hashlib.sha256(f"{int(seed)}:{sid}".encode()).hexdigest())


def assign_splits(subject_ids: Sequence[str], plan: SplitPlan, *, seed: int = 0, fold: int = 0, where: str = "dataset") -> dict[str, list[str]]:
    """Split ``subject_ids`` by ``plan``; each list is sorted by id. ``where`` names the data in errors."""
    ids = list(subject_ids)
    duplicates = sorted({s for s in ids if ids.count(s) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise DataError(f"{where}: subject id(s) found twice: {', '.join(duplicates[:5])}")
    if not 0 <= fold < plan.folds:
        raise DataError(f"{where}: fold {fold} does not exist; folds are 0..{plan.folds - 1}")
    try:
        sizes = scaled_sizes(plan, len(ids))
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    order = seeded_order(ids, seed)
    splits: dict[str, list[str]] = {}
    if plan.folds == 1:
        start = 0
        for name in plan.splits:
            splits[name] = sorted(order[start : start + sizes[name]])
            start += sizes[name]
    else:
        n_fixed = sizes[plan.fixed_split]
        pool = order[n_fixed:]
        per_fold = min(sizes[plan.fold_split], (len(pool) - 1) // plan.folds)
        if per_fold < 1:
            raise DataError(
                f"{where}: {len(ids)} subjects are too few for {plan.folds} disjoint {plan.fold_split} folds "
                f"beside {n_fixed} {plan.fixed_split} subjects; need at least {n_fixed + plan.folds + 1}"
            )
        held_out = pool[fold * per_fold : (fold + 1) * per_fold]
        others = [s for s in plan.splits if s not in (plan.fixed_split, plan.fold_split)]
        splits = {s: [] for s in plan.splits}
        splits[plan.fixed_split] = sorted(order[:n_fixed])
        splits[plan.fold_split] = sorted(held_out)
        remaining = [s for s in pool if s not in set(held_out)]
        for name in others[:-1]:
            splits[name] = sorted(remaining[: sizes[name]])
            remaining = remaining[sizes[name] :]
        if others:
            splits[others[-1]] = sorted(remaining)
    check_splits(splits, where=where)
    return {name: splits[name] for name in plan.splits}


def fold_blocks(subject_ids: Sequence[str], plan: SplitPlan, *, seed: int = 0, where: str = "dataset") -> list[list[str]]:
    """The ``fold_split`` lists of every fold (to check or show that they are disjoint)."""
    return [assign_splits(subject_ids, plan, seed=seed, fold=k, where=where)[plan.fold_split] for k in range(plan.folds)]


def check_splits(splits: Mapping[str, Sequence[str]], *, where: str = "dataset") -> None:
    """Refuse a split that repeats a subject, shares one with another split, or is empty."""
    seen: dict[str, str] = {}
    for name, ids in splits.items():
        if not ids:
            raise DataError(f"{where}: split {name!r} is empty")
        if len(set(ids)) != len(ids):
            dup = sorted({s for s in ids if list(ids).count(s) > 1})
            raise DataError(f"{where}: split {name!r} lists subject(s) twice: {', '.join(dup[:5])}")
        for sid in ids:
            if sid in seen:
                raise DataError(f"{where}: subject {sid!r} is in both split {seen[sid]!r} and split {name!r}")
            seen[sid] = name


def splits_csv_text(splits: Mapping[str, Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["subject_id", "split"])
    for name, ids in splits.items():
        for sid in ids:
            writer.writerow([sid, name])
    return out.getvalue()


def write_splits_csv(path: str | os.PathLike, splits: Mapping[str, Sequence[str]]) -> Path:
    """Write ``subject_id,split`` rows atomically; an identical file is left untouched."""
    path = Path(path)
    text = splits_csv_text(splits)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    write_text_atomic(path, text)
    return path


def read_splits_csv(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a ``subject_id,split`` CSV back (checked like a computed split)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}; expected a CSV with columns subject_id,split")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"subject_id", "split"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a CSV with columns subject_id,split; got {reader.fieldnames}")
        splits: dict[str, list[str]] = {}
        for row in reader:
            splits.setdefault(row["split"], []).append(row["subject_id"])
    check_splits(splits, where=str(path))
    return splits
