"""Dataset sources: named collections of subjects with splits, loaded as raw Volumes.

A :class:`DatasetSource` is what a registered dataset name builds (``create_dataset(name,
root=..., seed=...)``). Generated datasets (the phantom) subclass it directly; datasets read from
NIfTI files subclass :class:`uadbench.data.scans.FileDataset`, which adds layout discovery,
checked reading, computed splits and content fingerprints.
"""

from __future__ import annotations

import os
import re
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
    # ids made up by a generator (the phantom's), which identify nobody: records keep them as they are
    synthetic_ids: ClassVar[bool] = False

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
        """subject id -> facts about the subject (``age``, ``sex``, ``site``, ...) for the result records.

        Empty unless the dataset knows them (IXI's participants.csv, and its sites from its ids).
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
    ``fold=``, the phantom's ``sizes=``). ``<dataset>@<site>[+<site>...]`` is the subjects of those
    sites only (:class:`SiteSubset`)."""
    base, sites = parse_site_selector(name)
    source = DATASETS.get(base)(root=root, seed=seed, **options)
    return SiteSubset(source, sites) if sites else source


# -- sites -------------------------------------------------------------------------------------------
SITE_SELECTOR = "@"
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_site_selector(name: str) -> tuple[str, tuple[str, ...]]:
    """``"ixi-t2@Guys+HH"`` -> ``("ixi-t2", ("Guys", "HH"))``; a plain name -> ``(name, ())``."""
    if SITE_SELECTOR not in name or name in DATASETS:
        return name, ()
    base, _, tail = name.partition(SITE_SELECTOR)
    sites = tuple(tail.split("+"))
    bad = [s for s in sites if not _SITE.fullmatch(s)]
    if bad or len(set(sites)) != len(sites):
        raise DataError(f"dataset {name!r}: a site selector is <dataset>@<site>[+<site>...], each site once, in letters, digits, "
                        f"'.', '_' or '-' (e.g. ixi-t2@Guys+HH); got sites {', '.join(map(repr, sites))}")
    return base, sites


def site_selection(name: str, *sites: str) -> str:
    """``name`` (a dataset or a site selection of one) restricted to ``sites``: ``ixi-t2@IOP``."""
    return f"{parse_site_selector(name)[0]}{SITE_SELECTOR}{'+'.join(sites)}"


def dataset_class(name: str) -> type[DatasetSource]:
    """The registered class behind ``name`` (a site selector's dataset); unknown names: "did you mean"."""
    return DATASETS.get(parse_site_selector(name)[0])


class SiteSubset(DatasetSource):
    """The subjects of some sites of a dataset (``<dataset>@<site>[+<site>...]``), each split filtered
    by the ``site`` its :meth:`~DatasetSource.subject_info` gives (IXI: from the ids, HH, Guys, IOP;
    the phantom: its scanner). Train on some sites, evaluate on another: the splits are the
    dataset's own, so a subject is in the same split under every selector and a held-out site's
    subjects never reach a fit on the other sites."""

    def __init__(self, base: DatasetSource, sites: tuple[str, ...]) -> None:
        super().__init__(root=base.root, seed=base.seed)
        self.base, self.sites = base, tuple(sites)
        self._sites: dict[str, dict[str, str]] = {}

    @property
    def name(self) -> str:
        return f"{self.base.name}{SITE_SELECTOR}{'+'.join(self.sites)}"

    @property
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.base.splits

    @property
    def lesion_splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.base.lesion_splits

    @property
    def modality(self) -> str:  # type: ignore[override]
        return self.base.modality

    @property
    def synthetic_ids(self) -> bool:  # type: ignore[override]
        return self.base.synthetic_ids

    def available(self) -> bool:
        return self.base.available()

    def site_of(self, split: str) -> dict[str, str]:
        """subject id -> site of every subject of ``split``; a subject without one is an error."""
        if split not in self._sites:
            info = self.base.subject_info(split)
            out = {}
            for sid in self.base.subjects(split):
                site = info.get(sid, {}).get("site")
                if not site:
                    raise DataError(f"dataset {self.name!r}: {self.base.name!r} does not know the site of subject {sid!r}; "
                                    "site selectors need datasets that give each subject a site (ixi-*, phantom-*, a card with a site column)")
                out[sid] = str(site)
            self._sites[split] = out
        return self._sites[split]

    def subjects(self, split: str) -> list[str]:
        self.check_split(split)
        sites = self.site_of(split)
        known = set(sites.values())
        for other in self.base.splits:
            known |= set(self.site_of(other).values())
        unknown = [s for s in self.sites if s not in known]
        if unknown:
            raise DataError(f"dataset {self.name!r}: no subject of {self.base.name!r} is at site {', '.join(map(repr, unknown))}; "
                            f"its sites: {', '.join(sorted(known))}")
        return [sid for sid, site in sites.items() if site in self.sites]

    def subject_info(self, split: str) -> dict[str, dict[str, Any]]:
        keep = set(self.subjects(split))
        return {sid: facts for sid, facts in self.base.subject_info(split).items() if sid in keep}

    def load(self, split: str) -> list[Volume]:
        keep = self.subjects(split)
        if not keep:
            raise DataError(f"dataset {self.name!r} has no subject in split {split!r} (sites {', '.join(self.sites)})")
        volumes = [v for v in self.base.load(split) if v.subject_id in set(keep)]
        for v in volumes:
            v.meta["dataset"] = self.name
        return volumes

    def fingerprint(self) -> str:
        return f"{self.base.fingerprint()}/v{type(self.base).version}{SITE_SELECTOR}{'+'.join(self.sites)}"
