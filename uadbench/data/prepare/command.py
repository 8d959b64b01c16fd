"""``uadbench prepare DATASET``: the command's settings from its flags, and what it prints.

A flag left out takes what the dataset declares (a folder card's ``[prepare]`` table, else the
dataset family's defaults); a card needs neither ``--raw`` (its ``root``) nor ``--out`` (its
``prepared`` folder).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from uadbench.data.prepare.driver import PrepareReport, PrepareSettings, prepare_dataset
from uadbench.errors import UadbenchError


def settings_from_flags(args: argparse.Namespace) -> PrepareSettings:
    """The flags as settings; ``auto`` or ``None`` where a flag was not given."""
    if args.template is not None and not Path(args.template).is_file():
        raise UadbenchError(f"--template {args.template}: no such file; name a skull-stripped template NIfTI file (e.g. SRI24 T1_brain.nii)")
    return PrepareSettings(skull_strip=args.skull_strip, register=args.register, bias=args.bias, template=args.template,
                           resolution=args.resolution, margin=args.margin, fine_registration=args.fine_registration,
                           hd_bet_mode=args.hd_bet_mode, hd_bet_device=args.hd_bet_device)


def where_to_read(dataset: str, report: PrepareReport, out: str | None) -> str:
    """How a run reads what was prepared."""
    from uadbench.registry import DATASETS

    cls = DATASETS.get(dataset)
    card = getattr(cls, "card", None)
    if card is not None:
        if card.prepared is not None:
            return f"train or evaluate on it: uadbench run GRID (card {card.path} reads {card.prepared})"
        return f"train or evaluate on it: add prepared = \"{report.out_dir}\" to {card.path}, then uadbench run GRID"
    return f"train or evaluate on it: uadbench run GRID --data-root {out} (or ${cls.directory_env()}={report.out_dir})"


def run_prepare(args: argparse.Namespace) -> int:
    """The ``prepare`` command: prepare, print the summary, and the exit status (2: only bad inputs failed)."""
    report = prepare_dataset(args.dataset, args.raw, args.out, settings_from_flags(args), workers=args.workers)
    plan = report.plan
    print(f"uadbench prepare {args.dataset}: skull-strip {plan.skull_strip}, register {plan.register}, bias {plan.bias}, "
          f"{plan.resolution:g} mm ({plan.why})")
    print(f"prepared {len(report.prepared)}, already prepared {len(report.skipped)}, failed {len(report.failures)}")
    if report.seconds:
        print(f"seconds per prepared subject: {sum(report.seconds.values()) / len(report.seconds):.1f}")
    ncc = [s["ncc"] for s in report.similarity.values() if not math.isnan(s["ncc"])]
    if ncc:
        print(f"similarity to the template (ncc inside the brain): {min(ncc):.3f} .. {max(ncc):.3f}")
    print(f"data:     {report.out_dir}")
    print(f"manifest: {report.manifest_path}")
    print(where_to_read(args.dataset, report, args.out))
    if report.failures:
        for failure in report.failures:
            print(f"uadbench: failed: {failure.line()}", file=sys.stderr)
        names = ", ".join(f.subject_id for f in report.failures)
        print(f"uadbench: error: {len(report.failures)} subject(s) failed: {names}; rerunning the same command retries only those",
              file=sys.stderr)
        return 2 if all(f.input_error for f in report.failures) else 1
    return 0
