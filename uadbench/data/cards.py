"""Dataset cards: a folder of NIfTI scans registered as a dataset by a small TOML file, no code.

A card (``my-ms-t2.toml``)::

    name = "my-ms-t2"                      # the registered dataset name
    description = "Our MS patients, T2"    # optional; shown by `uadbench list datasets`
    root = "/data/my-ms"                   # absolute, or relative to the card's folder
    modality = "t2w"                       # t1w, t1ce, t2w, flair, pdw or any short word
    cohort = "lesion"                      # "lesion" (splits val/test) or "healthy" (train/val/test)
    image = "{subject}/{subject}_T2.nii.gz"
    brain_mask = "{subject}/{subject}_brainmask.nii.gz"   # or "nonzero": image != 0 (skull-stripped scans)
    lesion_mask = "{subject}/{subject}_lesions.nii.gz"    # required for cohort = "lesion"
    lesion_labels = [1]                    # optional; default every label > 0
    ignore_labels = [2]                    # optional; voxels left out of the metrics
    [splits]                               # optional; default the paper's sizes (see below)
    val = 10
    test = 20

Patterns are globs relative to ``root`` (``*``, ``?``, ``[...]`` within a path part, ``**`` for any
folders) in which ``{subject}`` stands for the subject id: ``image`` must contain it, and every
``{subject}`` in one pattern is the same text. A mask pattern is filled with the subject's id and
must then match exactly one file (a mask pattern without ``{subject}`` is one file shared by all
subjects, such as a template brain mask). Paths stay inside ``root`` unless written absolute: a
relative ``root`` or pattern with a ``..`` part is refused.

Splits: ``cohort = "lesion"`` gives val/test (default sizes 10 / 20, MSLUB's, ``test`` takes any
extra subjects); ``"healthy"`` gives train/val/test (default 358 / 44 / 158, IXI's, ``train`` takes
the extra). A ``[splits]`` table replaces the defaults: it sizes every split but the rest split
(``test`` or ``train``), which takes what is left unless sized too. Sizes scale down with the rule
of :mod:`uadbench.data.splits` when fewer subjects are found.

Cards are found in the folders (or ``.toml`` files) listed in ``$UADBENCH_CARDS``
(colon-separated) when the dataset registry loads, or named with ``uadbench list datasets
--cards DIR`` and :func:`register_cards`. Everything else (checked reading, split CSV, fingerprint)
is :class:`uadbench.data.scans.FileDataset`'s.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from uadbench.data.dataset import dataset_variant
from uadbench.data.scans import FileDataset, ScanFiles
from uadbench.data.splits import PAPER_SPLITS, SplitPlan
from uadbench.errors import ConfigError, DataError
from uadbench.registry import DATASETS

CARDS_ENV = "UADBENCH_CARDS"
SUBJECT = "{subject}"
NONZERO = "nonzero"
COHORTS = {"lesion": ("val", "test"), "healthy": ("train", "val", "test")}
DEFAULT_PLANS = {"lesion": PAPER_SPLITS["mslub"], "healthy": SplitPlan(PAPER_SPLITS["ixi"].sizes, rest="train")}
REQUIRED = ("name", "root", "modality", "cohort", "image", "brain_mask")
OPTIONAL = ("description", "lesion_mask", "lesion_labels", "ignore_labels", "splits")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class DatasetCard:
    """A parsed, checked card. ``root`` is absolute; patterns are as written."""

    path: Path
    name: str
    root: Path
    modality: str
    cohort: str
    image: str
    brain_mask: str
    lesion_mask: str | None = None
    lesion_labels: tuple[int, ...] | None = None
    ignore_labels: tuple[int, ...] = ()
    split_sizes: tuple[tuple[str, int], ...] = ()
    description: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        return COHORTS[self.cohort]

    @property
    def split_plan(self) -> SplitPlan:
        default = DEFAULT_PLANS[self.cohort]
        if not self.split_sizes:
            return default
        sizes = {default.rest: 1} | dict(self.split_sizes)  # the rest split, unless sized, takes what is left
        return SplitPlan(tuple((s, sizes[s]) for s in self.splits), rest=default.rest)

    @property
    def layout(self) -> str:
        parts = [f"image {self.image}", f"brain mask {self.brain_mask}"]
        if self.lesion_mask:
            parts.append(f"lesion mask {self.lesion_mask}")
        return f"{', '.join(parts)} under {self.root} (card {self.path})"


def _relative_ok(card: Path, key: str, value: str) -> None:
    """A relative path may not climb out with ``..`` (write it absolute instead)."""
    if not PurePosixPath(value).is_absolute() and ".." in PurePosixPath(value).parts:
        anchor = "the card's folder" if key == "root" else "the card's root"
        raise ConfigError(f"{card}: {key} = {value!r} escapes {anchor} with '..'; paths stay inside unless written absolute")


def read_card(path: str | os.PathLike) -> DatasetCard:
    """Parse and check one card; every problem is a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"dataset card not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(REQUIRED + OPTIONAL)}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(map(repr, missing))}; a card needs {', '.join(REQUIRED)}")
    for key in REQUIRED + ("description", "lesion_mask"):
        if key in raw and (not isinstance(raw[key], str) or (key != "description" and not raw[key].strip())):
            raise ConfigError(f"{path}: {key} must be a non-empty string, got {raw[key]!r}")
    name = raw["name"]
    if not NAME.fullmatch(name):
        raise ConfigError(f"{path}: name {name!r} must be letters, digits, '.', '-' or '_'")
    cohort = raw["cohort"]
    if cohort not in COHORTS:
        raise ConfigError(f"{path}: cohort must be one of {', '.join(map(repr, COHORTS))}, got {cohort!r}")
    lesion_mask = raw.get("lesion_mask")
    if cohort == "lesion" and not lesion_mask:
        raise ConfigError(f"{path}: a lesion cohort needs lesion_mask = \"<pattern with {SUBJECT}>\"")
    if cohort == "healthy" and lesion_mask:
        raise ConfigError(f"{path}: a healthy cohort has no lesion_mask; use cohort = \"lesion\" for annotated scans")
    for key in ("root", "image", "brain_mask", "lesion_mask"):
        if raw.get(key):
            _relative_ok(path, key, raw[key])
    if SUBJECT not in raw["image"]:
        raise ConfigError(f"{path}: image = {raw['image']!r} must contain {SUBJECT} where the subject id is, e.g. \"{SUBJECT}_T1.nii.gz\"")
    for key in ("image", "brain_mask", "lesion_mask"):
        value = raw.get(key)
        if value and "{" in value.replace(SUBJECT, ""):
            raise ConfigError(f"{path}: {key} = {value!r}: the only placeholder is {SUBJECT}")
    labels: dict[str, tuple[int, ...] | None] = {}
    for key in ("lesion_labels", "ignore_labels"):
        value = raw.get(key)
        positive = isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        if value is not None and not positive:
            raise ConfigError(f"{path}: {key} must be a non-empty list of positive integers, got {value!r}")
        labels[key] = tuple(value) if value is not None else None
    if cohort == "healthy" and (labels["lesion_labels"] or labels["ignore_labels"]):
        raise ConfigError(f"{path}: lesion_labels and ignore_labels belong to lesion cohorts")
    split_sizes = raw.get("splits", {})
    if not isinstance(split_sizes, dict):
        raise ConfigError(f"{path}: [splits] must be a table such as val = 10, test = 20")
    for key, value in split_sizes.items():
        if key not in COHORTS[cohort]:
            raise ConfigError(f"{path}: [splits] {key!r} is not a split of a {cohort} cohort; splits: {', '.join(COHORTS[cohort])}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{path}: [splits] {key} must be a positive integer, got {value!r}")
    rest = DEFAULT_PLANS[cohort].rest
    unsized = [s for s in COHORTS[cohort] if s != rest and s not in split_sizes]
    if split_sizes and unsized:
        raise ConfigError(f"{path}: [splits] must size {', '.join(unsized)} too ({rest} may be left out: it takes the subjects left over)")
    root = Path(raw["root"]).expanduser()
    if not root.is_absolute():
        root = path.resolve().parent / root
    return DatasetCard(
        path=path.resolve(),
        name=name,
        root=root,
        modality=raw["modality"],
        cohort=cohort,
        image=raw["image"],
        brain_mask=raw["brain_mask"],
        lesion_mask=lesion_mask,
        lesion_labels=labels["lesion_labels"],
        ignore_labels=labels["ignore_labels"] or (),
        split_sizes=tuple(split_sizes.items()),
        description=str(raw.get("description", "")).strip(),
    )


# -- patterns -------------------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob with {subject}; the first {subject} captures, the others must repeat it."""
    out, i, seen = [], 0, False
    while i < len(pattern):
        if pattern.startswith(SUBJECT, i):
            out.append("(?P=subject)" if seen else "(?P<subject>[^/]+?)")
            seen, i = True, i + len(SUBJECT)
        elif pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _inside(root: Path, path: Path) -> bool:
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        return False
    return True


class CardDataset(FileDataset):
    """A dataset described by a :class:`DatasetCard` (one class per card, see :func:`card_dataset`)."""

    card: ClassVar[DatasetCard]
    family = "folder"

    @property
    def directory(self) -> Path:
        return self.card.root

    @property
    def layout(self) -> str:  # type: ignore[override]  # per card, not per class
        return self.card.layout

    def missing_folder_error(self) -> DataError:
        return DataError(f"{self.card.path}: root {self.card.root} is not a folder; expected {self.card.layout}")

    def options(self) -> dict[str, Any]:
        c = self.card
        return {"seed": self.seed, "cohort": c.cohort, "image": c.image, "brain_mask": c.brain_mask, "lesion_mask": c.lesion_mask,
                "lesion_labels": c.lesion_labels, "ignore_labels": c.ignore_labels}

    def _resolve(self, pattern: str, subject: str | None) -> list[Path]:
        text = pattern.replace(SUBJECT, glob_escape(subject)) if subject is not None else pattern
        base = Path("/") if PurePosixPath(text).is_absolute() else self.card.root
        rel = text.lstrip("/") if base == Path("/") else text
        return sorted(p for p in base.glob(rel) if p.is_file())

    def _one(self, key: str, pattern: str, subject: str, image: Path) -> Path:
        matches = self._resolve(pattern, subject)
        shown = pattern.replace(SUBJECT, subject)
        if not matches:
            raise DataError(f"{self.card.root / shown}: file not found (the {key.replace('_', ' ')} of {image.name}); card {self.card.path}")
        if len(matches) > 1:
            raise DataError(f"{self.card.path}: {key} = {pattern!r} matches {len(matches)} files for subject {subject!r} "
                            f"({matches[0].name}, {matches[1].name}, ...); make the pattern match one file")
        return matches[0]

    def discover(self) -> list[ScanFiles]:
        card = self.card
        absolute = PurePosixPath(card.image).is_absolute()
        regex = _pattern_regex(card.image.lstrip("/") if absolute else card.image)
        found = []
        for path in self._resolve(card.image, None) if SUBJECT not in card.image else self._resolve(card.image.replace(SUBJECT, "*"), None):
            rel = path.as_posix().lstrip("/") if absolute else path.relative_to(card.root).as_posix()
            m = regex.fullmatch(rel)
            if m is None:
                continue  # the glob's '*' matched across what {subject} must repeat
            if not absolute and not _inside(card.root, path):
                raise DataError(f"{path}: outside the card's root {card.root}; card {card.path}")
            subject = m.group("subject")
            brain = None if card.brain_mask == NONZERO else self._one("brain_mask", card.brain_mask, subject, path)
            lesion = self._one("lesion_mask", card.lesion_mask, subject, path) if card.lesion_mask else None
            found.append(ScanFiles(subject, path, brain_mask=brain, lesion_mask=lesion))
        if not found:
            raise DataError(f"{card.root}: no file matches image = {card.image!r}; card {card.path}")
        self._check_orphans(found)
        return found

    def _check_orphans(self, found: list[ScanFiles]) -> None:
        """A lesion mask whose subject has no image means a misnamed or missing image file.

        (Brain masks are not checked: one mask per subject may serve several modalities, and a
        subject may lack one of them.)
        """
        subjects = {s.subject_id for s in found}
        for key, pattern in (("lesion_mask", self.card.lesion_mask),):
            if not pattern or SUBJECT not in pattern or PurePosixPath(pattern).is_absolute():
                continue
            regex = _pattern_regex(pattern)
            for path in self._resolve(pattern.replace(SUBJECT, "*"), None):
                m = regex.fullmatch(path.relative_to(self.card.root).as_posix())
                if m and m.group("subject") not in subjects:
                    expected = self.card.image.replace(SUBJECT, m.group("subject"))
                    raise DataError(f"{path}: a {key.replace('_', ' ')} without its image {expected}; card {self.card.path}")


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def card_dataset(card: DatasetCard) -> type[CardDataset]:
    """A CardDataset subclass for ``card`` (its qualname carries the card's path)."""
    doc = card.description or f"folder card {card.path.name}: {card.cohort} {card.modality} scans under {card.root}"
    return dataset_variant(CardDataset, "CardDataset", doc, qualname=f"CardDataset[{card.path}]", card=card, modality=card.modality,
                           splits=card.splits, lesion_splits=card.splits if card.cohort == "lesion" else (), split_plan=card.split_plan,
                           lesion_labels=card.lesion_labels, ignore_labels=card.ignore_labels)


# -- finding and registering ----------------------------------------------------------------------
def card_paths_from_env() -> list[Path]:
    """The entries of ``$UADBENCH_CARDS`` (folders or .toml files), in order."""
    return [Path(p).expanduser() for p in os.environ.get(CARDS_ENV, "").split(os.pathsep) if p.strip()]


def find_cards(locations: Sequence[Path]) -> list[Path]:
    """Card files: each folder's ``*.toml`` (sorted) and each named ``.toml`` file."""
    cards: list[Path] = []
    for loc in locations:
        loc = Path(loc)
        if loc.is_dir():
            cards.extend(sorted(p for p in loc.glob("*.toml") if p.is_file()))
        elif loc.is_file():
            cards.append(loc)
        else:
            raise ConfigError(f"cards location not found: {loc}; expected a folder of *.toml dataset cards or one card file")
    return cards


def register_cards(locations: Sequence[str | os.PathLike], *, export: bool = True) -> list[str]:
    """Register every card found in ``locations``; returns their names.

    A card whose name is taken by another dataset is a RegistryError. With ``export`` (the
    default) the locations are appended to ``$UADBENCH_CARDS`` so that worker processes started
    later register the same cards.
    """
    paths = [Path(p).expanduser().resolve() for p in locations]
    DATASETS.load_all()  # a card may not take a name a dataset plugin registers
    names = []
    for card_path in find_cards(paths):
        card = read_card(card_path)
        DATASETS.register(card.name, card_dataset(card))
        names.append(card.name)
    if export and paths:
        current = os.environ.get(CARDS_ENV, "")
        listed = {str(Path(p).expanduser().resolve()) for p in current.split(os.pathsep) if p.strip()}
        extra = [str(p) for p in paths if str(p) not in listed]
        if extra:
            os.environ[CARDS_ENV] = os.pathsep.join([p for p in [current] if p] + extra)
    return names


def register_cards_from_env() -> list[str]:
    """Register the cards listed in ``$UADBENCH_CARDS`` (what ``datasets/folder.py`` does on import)."""
    return register_cards(card_paths_from_env(), export=False)
