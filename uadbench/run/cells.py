"""One evaluation cell: its context, its result record, its floor, its example volume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uadbench.data.dataset import create_dataset
from uadbench.evaluation.protocol import evaluate_dataset
from uadbench.evaluation.results import EvalVolume
from uadbench.files import read_entry
from uadbench.grid.jobs import EvalJob, FitJob
from uadbench.grid.spec import GridSpec
from uadbench.records import NUMERIC_LIBRARIES, ResultRecord, now_utc, versions
from uadbench.run import layout


@dataclass(frozen=True)
class EvalContext:
    """Where a grid's evaluation reads and writes (picklable, for worker processes)."""

    spec: GridSpec
    cache_dir: Path
    data_root: Path | None
    device: str
    checkpoint_every: int = 500  # training steps between checkpoints of a fit (0: none)
    quiet: bool = False  # fits print no progress lines (the grid's process shows their progress)

    def eval_path(self, job: EvalJob | str) -> Path:
        return layout.eval_path(self.cache_dir, job if isinstance(job, str) else job.key)

    def example_dir(self, job: EvalJob | str) -> Path:
        return layout.example_dir(self.cache_dir, job if isinstance(job, str) else job.key)

    def example(self, job: EvalJob | str) -> str:
        """The example folder as a record names it: relative to the cache."""
        return str(self.example_dir(job).relative_to(self.cache_dir))


def read_cell(path: Path) -> ResultRecord | None:
    """A cached cell's record, checked against its sha256; None when there is none or it was
    corrupt (then moved aside, to be evaluated again)."""
    return read_entry(path, lambda p: ResultRecord.from_json(p.read_text(encoding="utf-8"), str(p)), what="cell record")


def subject_facts(ectx: EvalContext, job: EvalJob) -> dict[str, dict]:
    """Facts the datasets know about the cell's subjects (age, sex, site, ...), by subject id."""
    out: dict[str, dict] = {}
    for ref in (job.map("test"), job.map("healthy_test")):  # a held-out site's cell reads that site's subjects
        out.update(create_dataset(ref.dataset, root=ectx.data_root, seed=ectx.spec.data_seed).subject_info(ref.split))
    return out


def constant_brain_map(vol: EvalVolume) -> EvalVolume:
    """``vol`` with a map that is 1 on its brain mask and 0 elsewhere, and no image or reconstruction."""
    brain = np.asarray(vol.brain_mask, dtype=bool)
    return EvalVolume(vol.subject_id, brain.astype(np.float32), brain, vol.lesion_mask, vol.spacing, affine=vol.affine)


def floor_evaluation(test: list[EvalVolume], *, lesion_val: list[EvalVolume] | None, healthy_val: list[EvalVolume] | None,
                     **protocol) -> dict:
    """The floor of a cell: the protocol's result (same volumes, same thresholds' recipe) for a map
    constant on the brain mask, which involves no learning and no intensity. The protocol zeroes
    every map outside the eroded brain, so such a map already scores about the brain-voxel
    prevalence in AUPRC (not the prevalence over all voxels) and well above 50 % in AUROC."""
    def constant(volumes: list[EvalVolume] | None) -> list[EvalVolume] | None:
        return None if volumes is None else [constant_brain_map(v) for v in volumes]

    result = evaluate_dataset([constant_brain_map(v) for v in test], lesion_val=constant(lesion_val), healthy_val=constant(healthy_val),
                              **protocol)
    res = result.to_dict()
    lesioned = [v for v in test if v.lesion_mask is not None and np.any(v.lesion_mask)]
    prevalence = [int(np.count_nonzero(np.asarray(v.lesion_mask, bool) & np.asarray(v.brain_mask, bool)))
                  / max(int(np.count_nonzero(v.brain_mask)), 1) for v in lesioned]
    return {"map": "1 on the brain mask, 0 elsewhere", "metrics": res["aggregates"], "per_volume": res["per_volume"],
            "confidence_intervals": res.get("confidence_intervals", {}),
            "brain_prevalence": float(np.mean(prevalence)) if prevalence else None}


def input_similarity(original: list[np.ndarray], shifted: list) -> float:
    """Mean SSIM between the healthy test images under the cell's shift and as preprocessed: how much
    the shift changed the input, on the scale the shift levels are calibrated on (1 without a shift)."""
    from uadbench.evaluation.image_quality import ssim

    return float(np.mean([ssim(o, v.image) for o, v in zip(original, shifted, strict=True)]))


def fit_versions(meta: dict) -> dict:
    """The versions a cell's record carries: the numerical libraries that trained its fit (from the
    fit's meta record, also when the fit came from the cache) and this harness's components."""
    made = meta.get("versions", {})
    return {**versions(), **{name: made[name] for name in NUMERIC_LIBRARIES if name in made}}


def cell_record(fit: FitJob, job: EvalJob, ectx: EvalContext, result, test: list, n_healthy: int, seconds: list[float],
                meta: dict, device: str, floor: dict | None = None, input_ssim: float | None = None) -> ResultRecord:
    """The result record of one evaluation cell (``meta``: the fit's meta record)."""
    res = result.to_dict()
    lesion = [v.lesion_mask.mean() for v in test if v.lesion_mask is not None]
    return ResultRecord(
        grid=ectx.spec.name, spec_hash=ectx.spec.spec_hash, method=fit.method.name, label=fit.method.display,
        preset=fit.method.preset, overrides=fit.method.overrides_dict, config_hash=fit.config_hash, fit_key=fit.key,
        eval_key=job.key, train_dataset=fit.train_dataset, dataset=job.dataset.name, split=job.dataset.test_split,
        val_split=job.dataset.val_split, shift=job.shift.name, severity=job.shift.severity, seed=fit.seed,
        image_grid=fit.image_grid.to_dict(), metrics=res["aggregates"], thresholds=res["thresholds"],
        confidence_intervals=res.get("confidence_intervals", {}), per_volume=res["per_volume"],
        healthy_test=f"{job.map('healthy_test').dataset}/test ({n_healthy} volumes: fp_volume_ml, ssim, psnr, l1_recon; "
                     "the negatives of auroc_scan, auprc_scan, auroc_slice, auprc_slice)",
        dataset_stats={"n_volumes": len(test), "lesion_prevalence": float(np.mean(lesion or [0.0])),
                       **({} if input_ssim is None else {"healthy_input_ssim": input_ssim})},
        cost={"num_parameters": meta["num_parameters"], "train_seconds": meta["train_seconds"], "seconds_per_volume": float(np.mean(seconds)),
              **({"network_passes": meta["network_passes"]} if "network_passes" in meta else {})},
        versions=fit_versions(meta), device=device, threads=int(meta.get("threads", 0)), created=now_utc(),
        subjects=subject_facts(ectx, job), precision=fit.method.precision, floor=floor or {}, sweep=dict(fit.method.sweep),
        example=ectx.example(job),
    )


def save_example(prefix: Path, vol) -> None:
    """A test volume's image, reconstruction, map, lesion and brain masks as NIfTI (the record
    names the folder; :func:`uadbench.report.figures.example_panel` draws its panel where one is shown)."""
    from uadbench.data.nifti import save_nifti

    affine = vol.affine if vol.affine is not None else np.diag([vol.spacing, vol.spacing, vol.spacing, 1.0])
    prefix.mkdir(parents=True, exist_ok=True)
    save_nifti(prefix / f"{vol.subject_id}_anomaly_map.nii.gz", vol.anomaly_map, affine)
    save_nifti(prefix / f"{vol.subject_id}_image.nii.gz", vol.image, affine)
    if vol.reconstruction is not None:
        save_nifti(prefix / f"{vol.subject_id}_reconstruction.nii.gz", vol.reconstruction, affine)
    if vol.lesion_mask is not None:
        save_nifti(prefix / f"{vol.subject_id}_lesion.nii.gz", vol.lesion_mask.astype(np.uint8), affine)
    save_nifti(prefix / f"{vol.subject_id}_brain.nii.gz", np.asarray(vol.brain_mask).astype(np.uint8), affine)
