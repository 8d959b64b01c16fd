"""Dataset sources: named collections of subjects with splits, loaded as raw Volumes.

A :class:`DatasetSource` is what a registered dataset name builds (``create_dataset(name,
root=..., seed=...)``). Generated datasets (the phantom) subclass it directly; datasets read from
NIfTI files subclass :class:`uadbench.data.scans.FileDataset`, which adds layout discovery,
checked reading, computed splits and content fingerprints.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from uadbench.data.volume import Volume
from uadbench.errors import DataError
from uadbench.registry import DATASETS


def default_data_root() -> Path:
    """Where generated and prepared data live: $UADBENCH_DATA or ~/.cache/uadbench/data."""
    env = os.environ.get("UADBENCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "uadbench" / "data"


class DatasetSource(ABC):
    """A registered dataset. Subclasses set the class attributes and implement ``load``.

    ``lesion_splits`` are the splits with lesion annotations (evaluation cohorts); a healthy
    dataset has none. ``modality`` names the contrast ("t1w", "t2w", "flair").
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    lesion_splits: ClassVar[tuple[str, ...]] = ()
    modality: ClassVar[str] = ""
    # the dataset code's version: raise it when a change to how volumes are read or made changes them
    # (part of every data key, beside the data's own fingerprint)
    version: ClassVar[str] = "1"
    registered_name: ClassVar[str] = ""

    def __init__(self, root: str | os.PathLike | None = None, seed: int = 0) -> None:
        self.root = Path(root) if root is not None else default_data_root()
        self.seed = int(seed)

    @property
    def name(self) -> str:
        return self.registered_name or type(self).__name__

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DataError(
                f"dataset {self.name!r} has no split {split!r}; available: {', '.join(self.splits)}"
            )

    def has_lesions(self, split: str) -> bool:
        return split in self.lesion_splits

    def available(self) -> bool:
        """False when this source has no data where it looks (a real dataset not downloaded).

        Generated datasets are always available; file-backed ones check their folder. Loading an
        unavailable dataset raises a one-line :class:`DataError` saying where the data belong.
        """
        return True

    def subject_info(self, split: str) -> dict[str, dict[str, Any]]:
        """subject id -> facts about the subject (``age``, ``sex``, ...) for the result records.

        Empty unless the dataset ships such a table (IXI's participants.csv).
        """
        self.check_split(split)
        return {}

    @abstractmethod
    def subjects(self, split: str) -> list[str]:
        """Subject ids of ``split`` (stable order)."""

    @abstractmethod
    def load(self, split: str) -> list[Volume]:
        """Raw volumes of ``split`` at their native grid (before the pipeline)."""

    def fingerprint(self) -> str:
        """A string that changes whenever the data behind this source change (for cache keys)."""
        return f"{self.name}:seed={self.seed}"


D = TypeVar("D", bound=type)


def dataset_variant(base: D, class_name: str, doc: str, *, name: str | None = None, qualname: str | None = None, **attrs: Any) -> D:
    """A subclass of dataset class ``base`` that fixes the class attributes ``attrs`` (one modality,
    cohort or card of a dataset family), named ``class_name`` in ``base``'s module (assign it to
    that module-level name, so that it pickles), with docstring ``doc``; registered under ``name``
    when given."""
    namespace = {"__doc__": doc, "__module__": base.__module__, "__qualname__": qualname or class_name, **attrs}
    cls = cast(D, type(class_name, (base,), namespace))
    return DATASETS.register(name)(cls) if name is not None else cls


def create_dataset(name: str, root: str | os.PathLike | None = None, seed: int = 0, **options: Any) -> DatasetSource:
    """Build the registered dataset ``name``; ``options`` go to its constructor (``directory=``,
    ``fold=``, the phantom's ``sizes=``)."""
    cls = DATASETS.get(name)
    return cls(root=root, seed=seed, **options)
