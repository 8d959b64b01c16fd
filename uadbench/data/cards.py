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
    prepared = "/data/my-ms-prepared"      # optional: read the copy `uadbench prepare my-ms-t2` writes there
    [splits]                               # optional; default the paper's sizes (see below)
    val = 10
    test = 20
    [prepare]                              # optional: how `uadbench prepare my-ms-t2` prepares the scans
    skull_strip = "mask"                   # mask (the brain_mask files), hd-bet, none (skull-stripped scans)
    register = "affine"                    # affine (ANTs, to the template), none (registered already)
    bias = "n4"                            # n4, none
    template = "/data/sri24/T1_brain.nii"  # a skull-stripped template; default nilearn's MNI152 brain

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

Preparation: ``uadbench prepare <card>`` reads the scans under ``root`` and writes the prepared
copy to the folder ``prepared`` names (or ``--out DIR``: ``DIR/<name>/``), keeping the layout
under ``root`` with each brain mask beside its image as ``<image stem>_brainmask.nii.gz``. A card
with ``prepared`` reads that copy (and refuses to be read before it is prepared), so the same name
in a grid trains and evaluates on the prepared scans. The ``[prepare]`` table has the meaning of
the ``uadbench prepare`` flags (``skull_strip``, ``register``, ``bias``, ``template``,
``resolution``, ``margin``, ``fine_registration``, ``hd_bet_mode``); a flag overrides the table.
Without a table, a card skull-strips with its brain masks (``none`` for ``brain_mask =
"nonzero"``), registers affinely to the MNI152 brain and runs N4. ``prepared`` and ``template``
are absolute or relative to the card's folder.

Cards are found in the folders (or ``.toml`` files) listed in ``$UADBENCH_CARDS``
(colon-separated) when the dataset registry loads, or named with ``uadbench list datasets
--cards DIR`` and :func:`register_cards`. A card that cannot be read is not registered; its name
is refused with the reason (``card 'x' (path) refused: ...``) wherever it is used, and ``uadbench
list datasets`` shows it. Everything else (checked reading, splits, fingerprint) is
:class:`uadbench.data.scans.FileDataset`'s, except that a card's split CSVs and checksums go to
the user cache, keyed by the card's content (:func:`uadbench.run.layout.card_cache`): nothing is
written beside the scans.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from uadbench.data.dataset import dataset_variant
from uadbench.data.prepare.layouts import PrepareDefaults, brain_mask_name
from uadbench.data.prepare.manifest import MANIFEST_NAME
from uadbench.data.scans import FileDataset, ScanFiles, nifti_stem
from uadbench.data.splits import PAPER_SPLITS, SplitPlan
from uadbench.errors import ConfigError, DataError
from uadbench.registry import DATASETS, RegistryError
from uadbench.run.layout import card_cache

CARDS_ENV = "UADBENCH_CARDS"
SUBJECT = "{subject}"
NONZERO = "nonzero"
COHORTS = {"lesion": ("val", "test"), "healthy": ("train", "val", "test")}
DEFAULT_PLANS = {"lesion": PAPER_SPLITS["mslub"], "healthy": SplitPlan(PAPER_SPLITS["ixi"].sizes, rest="train")}
REQUIRED = ("name", "root", "modality", "cohort", "image", "brain_mask")
OPTIONAL = ("description", "lesion_mask", "lesion_labels", "ignore_labels", "splits", "prepared", "prepare")
PREPARE_CHOICES = {"skull_strip": ("mask", "hd-bet", "none"), "register": ("affine", "none"), "bias": ("n4", "none"),
                   "hd_bet_mode": ("fast", "accurate")}
PREPARE_KEYS = (*PREPARE_CHOICES, "template", "resolution", "margin", "fine_registration")
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
    prepared: Path | None = None  # the folder of the prepared copy the card reads
    prepare: tuple[tuple[str, Any], ...] = ()  # the [prepare] table (template made absolute)
    digest: str = ""  # sha256 of the card's text

    @property
    def key(self) -> str:
        """What the card's derived files are keyed by: its text and the folders it reads."""
        payload = f"{self.digest}\n{self.root}\n{self.prepared}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def prepare_defaults(self) -> PrepareDefaults:
        """What ``auto`` means when ``uadbench prepare`` prepares this card (its [prepare] table)."""
        table = dict(self.prepare)
        strip = table.get("skull_strip", "none" if self.brain_mask == NONZERO else "mask")
        why = f"the [prepare] table of {self.path.name}" if table else "folder-card defaults: brain masks, affine to the template, N4"
        return PrepareDefaults(strip, table.get("register", "affine"), table.get("bias", "n4"), why, template=table.get("template"),
                               resolution=table.get("resolution"), margin=table.get("margin"),
                               fine_registration=table.get("fine_registration"), hd_bet_mode=table.get("hd_bet_mode"))

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

    @property
    def prepared_layout(self) -> str:
        lesion = f", lesion mask {self.lesion_mask}" if self.lesion_mask else ""
        return (f"image {self.image} with <image stem>_brainmask.nii.gz beside it{lesion} under {self.prepared}, "
                f"as `uadbench prepare {self.name}` writes them (card {self.path})")


def _relative_ok(card: Path, key: str, value: str) -> None:
    """A relative path may not climb out with ``..`` (write it absolute instead)."""
    if not PurePosixPath(value).is_absolute() and ".." in PurePosixPath(value).parts:
        anchor = "the card's folder" if key in ("root", "prepared", "template") else "the card's root"
        raise ConfigError(f"{card}: {key} = {value!r} escapes {anchor} with '..'; paths stay inside unless written absolute")


def read_card(path: str | os.PathLike) -> DatasetCard:
    """Parse and check one card; every problem is a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
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
    root = _beside(path, raw["root"])
    prepared = raw.get("prepared")
    if prepared is not None:
        if not isinstance(prepared, str) or not prepared.strip():
            raise ConfigError(f"{path}: prepared must name a folder (where `uadbench prepare {name}` writes the copy the card reads), "
                              f"got {prepared!r}")
        _relative_ok(path, "prepared", prepared)
        for key in ("image", "lesion_mask"):
            if raw.get(key) and PurePosixPath(raw[key]).is_absolute():
                raise ConfigError(f"{path}: a card with prepared = ... needs {key} relative to root (the prepared copy keeps the "
                                  f"layout under root), got {raw[key]!r}")
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
        prepared=_beside(path, prepared) if prepared is not None else None,
        prepare=_prepare_table(path, raw.get("prepare", {}), raw["brain_mask"]),
        digest=hashlib.sha256(text.encode()).hexdigest(),
    )


def _beside(card: Path, value: str) -> Path:
    """A folder or file named by a card: absolute, or relative to the card's folder."""
    out = Path(value).expanduser()
    return out if out.is_absolute() else card.resolve().parent / out


def _prepare_table(path: Path, table: Any, brain_mask: str) -> tuple[tuple[str, Any], ...]:
    """The checked [prepare] table (same meaning as the `uadbench prepare` flags)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [prepare] must be a table such as register = \"affine\", bias = \"n4\"")
    unknown = sorted(set(table) - set(PREPARE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: [prepare] unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(PREPARE_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in PREPARE_CHOICES and value not in PREPARE_CHOICES[key]:
            raise ConfigError(f"{path}: [prepare] {key} must be one of {', '.join(PREPARE_CHOICES[key])}, got {value!r}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key == "resolution" and not (number and 0.25 <= value <= 8):
            raise ConfigError(f"{path}: [prepare] resolution must be a number of mm in [0.25, 8], got {value!r}")
        if key == "margin" and not (number and isinstance(value, int) and 0 <= value <= 64):
            raise ConfigError(f"{path}: [prepare] margin must be a whole number of voxels in [0, 64], got {value!r}")
        if key == "fine_registration" and not isinstance(value, bool):
            raise ConfigError(f"{path}: [prepare] fine_registration must be true or false, got {value!r}")
        if key == "template":
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{path}: [prepare] template must name a skull-stripped template NIfTI file, got {value!r}")
            _relative_ok(path, "template", value)
            value = str(_beside(path, value))
        out[key] = float(value) if key == "resolution" else value
    if out.get("skull_strip") == "mask" and brain_mask == NONZERO:
        raise ConfigError(f"{path}: [prepare] skull_strip = \"mask\" needs brain mask files, but brain_mask = \"nonzero\" "
                          "(skull-stripped scans: use skull_strip = \"none\", or \"hd-bet\")")
    return tuple(sorted(out.items()))


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
    """A dataset described by a :class:`DatasetCard` (one class per card, see :func:`card_dataset`).

    It reads the scans under the card's ``root`` (or ``directory=``), or, for a card that names
    ``prepared`` and no ``directory=``, the copy ``uadbench prepare`` wrote there."""

    card: ClassVar[DatasetCard]
    family = "folder"

    @property
    def reads_prepared(self) -> bool:
        return self.card.prepared is not None and self._directory is None

    @property
    def directory(self) -> Path:
        if self._directory is not None:
            return self._directory
        return self.card.prepared if self.card.prepared is not None else self.card.root

    @property
    def sidecar(self) -> Path:
        """Split CSVs and checksums: in the user cache, keyed by the card and the folder read."""
        where = hashlib.sha256(f"{self.card.key}\n{self.directory}\n{self.reads_prepared}".encode()).hexdigest()[:16]
        return card_cache(self.card.name, where)

    @property
    def layout(self) -> str:  # type: ignore[override]  # per card, not per class
        return self.card.prepared_layout if self.reads_prepared else self.card.layout

    @classmethod
    def default_raw_folder(cls) -> Path:
        """What ``uadbench prepare`` reads without ``--raw``: the card's root."""
        return cls.card.root

    @classmethod
    def prepared_folder(cls, out: Path | None) -> Path:
        """Where ``uadbench prepare`` writes: the card's ``prepared`` folder, else ``<out>/<name>``."""
        card = cls.card
        for key, pattern in (("image", card.image), ("lesion_mask", card.lesion_mask)):
            if pattern and PurePosixPath(pattern).is_absolute():
                raise ConfigError(f"card {card.name!r} ({card.path}): {key} = {pattern!r} is absolute; the prepared copy keeps the layout "
                                  "under root, so write the pattern relative to root to prepare the card")
        if out is None:
            if card.prepared is None:
                raise ConfigError(f"card {card.name!r} ({card.path}) names no prepared folder: add prepared = \"<folder>\" to it "
                                  "(where the copy goes and the card reads it) or pass --out DIR")
            return card.prepared
        if card.prepared is not None and (out / card.name).resolve() != card.prepared.resolve():
            raise ConfigError(f"card {card.name!r} ({card.path}) reads its prepared copy from {card.prepared}; --out {out} would write "
                              f"{out / card.name}, which it does not read: drop --out or change prepared in the card")
        return out / card.name

    def missing_folder_error(self) -> DataError:
        c = self.card
        if self.reads_prepared:
            return DataError(f"card {c.name!r} ({c.path}) reads its prepared copy from {c.prepared}, which does not exist yet; "
                             f"run `uadbench prepare {c.name}` (or remove prepared from the card to read the scans under {c.root})")
        return DataError(f"{c.path}: root {self.directory} is not a folder; expected {self.layout}")

    def options(self) -> dict[str, Any]:
        c = self.card
        out = {"seed": self.seed, "cohort": c.cohort, "image": c.image, "brain_mask": c.brain_mask, "lesion_mask": c.lesion_mask,
               "lesion_labels": c.lesion_labels, "ignore_labels": c.ignore_labels}
        return out | {"read": "prepared"} if self.reads_prepared else out

    def _resolve(self, pattern: str, subject: str | None) -> list[Path]:
        text = pattern.replace(SUBJECT, glob_escape(subject)) if subject is not None else pattern
        base = Path("/") if PurePosixPath(text).is_absolute() else self.directory
        rel = text.lstrip("/") if base == Path("/") else text
        return sorted(p for p in base.glob(rel) if p.is_file())

    def _one(self, key: str, pattern: str, subject: str, image: Path) -> Path:
        matches = self._resolve(pattern, subject)
        shown = pattern.replace(SUBJECT, subject)
        if not matches:
            raise DataError(f"{self.directory / shown}: file not found (the {key.replace('_', ' ')} of {image.name}); card {self.card.path}")
        if len(matches) > 1:
            raise DataError(f"{self.card.path}: {key} = {pattern!r} matches {len(matches)} files for subject {subject!r} "
                            f"({matches[0].name}, {matches[1].name}, ...); make the pattern match one file")
        return matches[0]

    def _brain(self, subject: str, image: Path) -> Path | None:
        if not self.reads_prepared:
            return None if self.card.brain_mask == NONZERO else self._one("brain_mask", self.card.brain_mask, subject, image)
        mask = image.with_name(brain_mask_name(image.name))
        if not mask.is_file():
            raise DataError(f"{mask}: file not found (the brain mask `uadbench prepare {self.card.name}` writes beside {image.name}); "
                            f"prepare the card again")
        return mask

    def discover(self) -> list[ScanFiles]:
        card, root = self.card, self.directory
        if self.reads_prepared and not (root / MANIFEST_NAME).is_file():
            raise DataError(f"card {card.name!r} ({card.path}) reads its prepared copy from {root}, which holds no {MANIFEST_NAME}; "
                            f"run `uadbench prepare {card.name}` (or remove prepared from the card to read the scans under {card.root})")
        absolute = PurePosixPath(card.image).is_absolute()
        regex = _pattern_regex(card.image.lstrip("/") if absolute else card.image)
        found = []
        for path in self._resolve(card.image, None) if SUBJECT not in card.image else self._resolve(card.image.replace(SUBJECT, "*"), None):
            if self.reads_prepared and nifti_stem(path).endswith("_brainmask"):
                continue  # a mask prepare wrote beside its image
            rel = path.as_posix().lstrip("/") if absolute else path.relative_to(root).as_posix()
            m = regex.fullmatch(rel)
            if m is None:
                continue  # the glob's '*' matched across what {subject} must repeat
            if not absolute and not _inside(root, path):
                raise DataError(f"{path}: outside the card's root {root}; card {card.path}")
            subject = m.group("subject")
            lesion = self._one("lesion_mask", card.lesion_mask, subject, path) if card.lesion_mask else None
            found.append(ScanFiles(subject, path, brain_mask=self._brain(subject, path), lesion_mask=lesion))
        if not found:
            raise DataError(f"{root}: no file matches image = {card.image!r}; card {card.path}")
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
                m = regex.fullmatch(path.relative_to(self.directory).as_posix())
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
                           lesion_labels=card.lesion_labels, ignore_labels=card.ignore_labels, prepare_defaults=card.prepare_defaults)


# -- finding and registering ----------------------------------------------------------------------
def card_paths_from_env() -> list[Path]:
    """The entries of ``$UADBENCH_CARDS`` (folders or .toml files), in order."""
    return [Path(p).expanduser() for p in os.environ.get(CARDS_ENV, "").split(os.pathsep) if p.strip()]


def find_cards(locations: Sequence[Path]) -> list[Path]:
    """Card files: each folder's ``*.toml`` (sorted) and each named ``.toml`` file."""
    cards: list[Path] = []
    for loc in locations:
        cards.extend(_cards_at(Path(loc)))
    return cards


def _cards_at(loc: Path) -> list[Path]:
    if loc.is_dir():
        return sorted(p for p in loc.glob("*.toml") if p.is_file())
    if loc.is_file():
        return [loc]
    raise ConfigError(f"cards location not found: {loc}; expected a folder of *.toml dataset cards or one card file")


def refusal(path: Path, problem: Exception) -> tuple[str, str]:
    """(the card's name, "card 'name' (path) refused: why") for a card that cannot be registered;
    the name is the card's ``name`` where it can be read, else the file's stem."""
    name = path.stem
    try:
        named = tomllib.loads(path.read_text(encoding="utf-8")).get("name")
        if isinstance(named, str) and NAME.fullmatch(named):
            name = named
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        pass
    why = " ".join(str(problem).split())
    for prefix in (f"{path}: ", f"{path.resolve()}: "):
        why = why.removeprefix(prefix)
    return name, f"card {name!r} ({path}) refused: {why}"


def register_cards(locations: Sequence[str | os.PathLike], *, export: bool = True, strict: bool = True) -> list[str]:
    """Register every card found in ``locations``; returns their names.

    A card that cannot be read, or whose name another dataset holds, raises a one-line
    ConfigError ``card 'x' (path) refused: why`` with ``strict`` (the default); without it the
    card is left out and its name refused with that reason (:meth:`Registry.refuse`: ``run``,
    ``prepare`` and ``list`` say why). A location that does not exist is a ConfigError. With
    ``export`` (the default) the locations are appended to ``$UADBENCH_CARDS`` so that worker
    processes started later register the same cards.
    """
    paths = [Path(p).expanduser().resolve() for p in locations]
    DATASETS.load_all()  # a card may not take a name a dataset plugin registers
    names = []
    for card_path in find_cards(paths):
        try:
            card = read_card(card_path)
            DATASETS.register(card.name, card_dataset(card))
        except (ConfigError, RegistryError) as exc:
            name, why = refusal(card_path, exc)
            if strict:
                raise ConfigError(why) from None
            DATASETS.refuse(name, why)
            continue
        names.append(card.name)
    if export and paths:
        current = os.environ.get(CARDS_ENV, "")
        listed = {str(Path(p).expanduser().resolve()) for p in current.split(os.pathsep) if p.strip()}
        extra = [str(p) for p in paths if str(p) not in listed]
        if extra:
            os.environ[CARDS_ENV] = os.pathsep.join([p for p in [current] if p] + extra)
    return names


def register_cards_from_env() -> list[str]:
    """Register the cards listed in ``$UADBENCH_CARDS`` (what ``datasets/folder.py`` does on import);
    a card that cannot be read, or a location that does not exist, is refused with its reason; the
    others register."""
    locations = []
    for loc in card_paths_from_env():
        if loc.exists():
            locations.append(loc)
        else:
            DATASETS.refuse(str(loc), f"${CARDS_ENV} lists {loc}, which does not exist; expected a folder of *.toml dataset cards or one card file")
    return register_cards(locations, export=False, strict=False)
