"""One evaluation cell: where it reads and writes, its result record, its example volume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uadbench.data.dataset import create_dataset
from uadbench.grid import EvalJob, FitJob, GridSpec
from uadbench.records import ResultRecord, now_utc, versions


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
        return self.cache_dir / "evals" / f"{job if isinstance(job, str) else job.key}.json"

    def example_dir(self, job: EvalJob | str) -> Path:
        return self.cache_dir / "evals" / f"{job if isinstance(job, str) else job.key}-example"


def subject_facts(ectx: EvalContext, job: EvalJob) -> dict[str, dict]:
    """Facts the datasets know about the cell's subjects (age, sex, ...), by subject id."""
    out: dict[str, dict] = {}
    for name, split in ((job.dataset.name, job.dataset.test_split), (ectx.spec.train_dataset, "test")):
        out.update(create_dataset(name, root=ectx.data_root, seed=ectx.spec.data_seed).subject_info(split))
    return out


def cell_record(fit: FitJob, job: EvalJob, ectx: EvalContext, result, test: list, n_healthy: int, seconds: list[float],
                meta: dict, device: str) -> ResultRecord:
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
        healthy_test=f"{fit.train_dataset}/test ({n_healthy} volumes: fp_volume_ml, ssim, psnr, l1_recon)",
        dataset_stats={"n_volumes": len(test), "lesion_prevalence": float(np.mean(lesion or [0.0]))},
        cost={"num_parameters": meta["num_parameters"], "train_seconds": meta["train_seconds"], "seconds_per_volume": float(np.mean(seconds))},
        versions=versions(), device=device, threads=int(meta.get("threads", 0)), created=now_utc(),
        subjects=subject_facts(ectx, job), precision=fit.method.precision,
    )


def save_example(prefix: Path, vol) -> None:
    """A test volume's image, map and lesion mask as NIfTI (an MLflow artifact)."""
    from uadbench.data.nifti import save_nifti

    affine = vol.affine if vol.affine is not None else np.diag([vol.spacing, vol.spacing, vol.spacing, 1.0])
    prefix.mkdir(parents=True, exist_ok=True)
    save_nifti(prefix / f"{vol.subject_id}_anomaly_map.nii.gz", vol.anomaly_map, affine)
    save_nifti(prefix / f"{vol.subject_id}_image.nii.gz", vol.image, affine)
    if vol.lesion_mask is not None:
        save_nifti(prefix / f"{vol.subject_id}_lesion.nii.gz", vol.lesion_mask.astype(np.uint8), affine)
