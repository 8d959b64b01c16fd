"""Threshold cross-fitting: every annotated case tested once, at a threshold chosen without it.

With few annotated cases (three MSLUB patients: one for the threshold, two to test),
:func:`evaluate_crossfit` replaces the labelled validation split: the annotated cases are dealt
into k folds (:func:`~uadbench.evaluation.thresholds.crossfit_folds`) and each case is tested
exactly once, at the threshold chosen on the other folds' pooled maps. Its protocols are named
``crossfit-bisection@k`` and ``crossfit-exact@k``; their provenance lists every fold's threshold
(``ThresholdInfo.value`` is None: there is one threshold per fold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uadbench.errors import UadbenchError
from uadbench.evaluation.checks import (
    check_disjoint,
    check_n_bootstrap,
    check_order,
    check_split,
    check_validation_splits,
)
from uadbench.evaluation.evaluator import DatasetEvaluator
from uadbench.evaluation.metrics import pooled_ranked_counts
from uadbench.evaluation.results import DatasetEvaluation, EvalVolume, ThresholdInfo
from uadbench.evaluation.thresholds import bisection_threshold, crossfit_folds, exact_threshold
from uadbench.evaluation.volume import SettingsCache, processed_map

CROSSFIT_SEARCHES = ("bisection", "exact")


def crossfit_protocol(search: str, k: int) -> str:
    """The name of a cross-fitting protocol: ``crossfit-bisection@5``, ``crossfit-exact@3``."""
    if search not in CROSSFIT_SEARCHES:
        raise UadbenchError(f"unknown cross-fitting search {search!r}; valid: {', '.join(CROSSFIT_SEARCHES)}")
    return f"crossfit-{search}@{k}"


def crossfit_thresholds(
    cases: Sequence[EvalVolume],
    k: int,
    *,
    source_name: str = "annotated cases",
    order: str = "code",
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, ThresholdInfo]]:
    """Per-case thresholds of k-fold cross-fitting over the annotated ``cases`` (checked).

    Returns (subject id -> {protocol: threshold}, protocol -> provenance). Each case's threshold
    is chosen (bisection and exact, as ``val-bisection`` / ``val-exact``) on the pooled
    post-processed maps of the cases in the other folds; a case never sees its own labels.
    """
    settings = SettingsCache(order)
    ids = [v.subject_id for v in cases]
    folds = crossfit_folds(ids, k, seed=seed)
    by_id = {v.subject_id: v for v in cases}
    processed = {v.subject_id: processed_map(v, settings(v.spacing)) for v in cases}
    names = {search: crossfit_protocol(search, k) for search in CROSSFIT_SEARCHES}
    per_case: dict[str, dict[str, float]] = {}
    details: dict[str, dict[str, float]] = {name: {} for name in names.values()}
    for i, fold in enumerate(folds):
        held_out = set(fold)
        others = [sid for sid in ids if sid not in held_out]
        if not any(np.any(by_id[sid].lesion_mask) for sid in others):
            raise UadbenchError(
                f"cross-fitting fold {i} ({', '.join(fold)}): the other folds have no lesion voxels, so no "
                "threshold can be chosen for it; use fewer folds or more annotated cases with lesions"
            )
        counts = pooled_ranked_counts((processed[sid], by_id[sid].lesion_mask) for sid in others)
        chosen = {"bisection": bisection_threshold(counts), "exact": exact_threshold(counts)}
        for search, name in names.items():
            details[name][f"fold{i}_threshold"] = chosen[search].value
            details[name][f"fold{i}_val_pooled_dice"] = chosen[search].score
            details[name][f"fold{i}_n_tested"] = float(len(fold))
        for sid in fold:
            per_case[sid] = {name: chosen[search].value for search, name in names.items()}
    method = {"bisection": "reference 10-step bisection", "exact": "exact pooled-Dice optimum"}
    infos = {
        name: ThresholdInfo(
            name,
            None,
            f"cross-fitting, {k} folds over {len(ids)} {source_name}: each case tested once at the threshold "
            f"chosen ({method[search]}) on the other folds",
            len(ids),
            details[name],
        )
        for search, name in names.items()
    }
    return per_case, infos


def evaluate_crossfit(
    cases: Sequence[EvalVolume],
    *,
    k: int,
    healthy_val: Sequence[EvalVolume] | None = None,
    source_names: Mapping[str, str] | None = None,
    order: str = "code",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> DatasetEvaluation:
    """Evaluate with threshold cross-fitting: every annotated case is a test case, exactly once.

    ``cases``: the annotated volumes (lesion mask given; typically a dataset's validation and test
    splits together) and, optionally, healthy test scans (no lesion mask), which take only the
    ``healthy-fpr@k%`` thresholds (false-positive volume, reconstruction quality). The annotated
    cases are dealt into ``k`` folds (``k`` = their number: leave one out); each is evaluated at
    the ``crossfit-bisection@k`` and ``crossfit-exact@k`` thresholds chosen on the other folds,
    and the lesion detection rates use ``crossfit-bisection@k``. ``healthy_val``, ``source_names``
    (keys ``"cases"``, ``"healthy_val"``), ``order``, ``n_bootstrap`` and ``seed`` (bootstrap and
    fold assignment) are as in :func:`~uadbench.evaluation.protocol.evaluate_dataset`; there is
    no ``val-*`` protocol.
    """
    check_order(order)
    check_n_bootstrap(n_bootstrap)
    cases = list(cases)
    if not cases:
        raise UadbenchError("cross-fitting has no cases; pass the annotated volumes")
    cases = check_split(cases, "cases")
    _, healthy = check_validation_splits(None, healthy_val)
    check_disjoint([v.subject_id for v in cases], [v.subject_id for v in healthy], "healthy_val")
    annotated = [v for v in cases if v.lesion_mask is not None]
    names = dict(source_names or {})
    per_case, infos = crossfit_thresholds(annotated, k, source_name=names.get("cases", "annotated cases"), order=order, seed=seed)
    evaluator = DatasetEvaluator.from_checked([], healthy, source_names, order, n_bootstrap, seed)
    evaluator.thresholds.update(infos)
    detection = crossfit_protocol("bisection", k)
    for vol in cases:
        evaluator.add_checked(vol, per_case.get(vol.subject_id), detection)
    return evaluator.aggregate()


__all__ = ["CROSSFIT_SEARCHES", "crossfit_protocol", "crossfit_thresholds", "evaluate_crossfit"]
