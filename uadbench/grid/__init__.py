"""Grids: a TOML file -> the job graph (FitJobs with dependency edges, EvalJobs). No torch.

A grid file looks like::

    name = "quickstart"
    image_grid = "cpu"                 # "paper" | "cpu" | "smoke" | {shape = [X, Y, Z], spacing = mm}
    seeds = [0]
    train_dataset = "phantom-healthy-t2w"

    [[methods]]
    name = "ae"
    preset = "cpu"
    overrides = { steps = 400 }        # optional: any field of the method's Config
    # a list where the field takes one value sweeps it: one fit per value, labelled ae[steps=300]
    # overrides = { steps = [300, 1000, 3000] }
    # precision = "bf16", compile = true  (optional: GPU arithmetic, part of the fit key)


    [[datasets]]
    name = "phantom-tumour-t2w"        # val_split = "val", test_split = "test" by default

    [[shifts]]
    name = "gamma"
    severities = [0.7, 1.5]            # the shift's own scale, or calibrated levels:
    # ssim = [0.95, 0.9, 0.8]          # mean SSIM of shifted to original healthy scans (uadbench/shifts/calibration.py)

    # optional: shift_levels = "table.json" (uadbench calibrate-shifts --out), notes = "..." (what the
    # results can and cannot show; printed by published editions), [executor] (a suggestion: `uadbench run` follows it only with --executor)

Every grid is evaluated without a shift too ("none"). Shifts apply to the test split only;
thresholds come from the unshifted validation splits, as in deployment.

Any dataset name may select sites: ``train_dataset = "ixi-t2@Guys+HH"`` trains on those hospitals'
subjects only (:class:`uadbench.data.dataset.SiteSubset`). A held-out site is a shift of its own,
``[[shifts]] name = "site", sites = ["IOP"]``: its cells (``site@IOP``) evaluate each
site-selected dataset's subjects of that site, and the training dataset's, unshifted.

The graph is expanded here, once: a fit that reuses another (mhd on cddpm) names that fit in
``FitJob.depends_on``; :meth:`GridSpec.fit_graph` lists every fit, dependencies first. Every key
hashes what sets the value it keys: the data term (the dataset's fingerprint, the volume pipeline
version and the image grid), the method's config, the seed, and the versions of the protocol,
metrics and shifts (:func:`uadbench.records.component_versions`).
"""

from uadbench.grid.entries import NO_SHIFT_SPEC, PRECISIONS, DatasetSpec, MethodSpec, ShiftSpec
from uadbench.grid.jobs import FIT_FORMAT, MAP_ROLES, EvalJob, FitJob, MapRef, data_term, make_fit_job, map_key, topological
from uadbench.grid.parse import EXECUTOR_KEYS, executor_table, load_grid, parse_grid
from uadbench.grid.spec import GridSpec
from uadbench.grid.sweep import expand_sweep, sweep_label, sweep_value_text

__all__ = [
    "EXECUTOR_KEYS", "FIT_FORMAT", "MAP_ROLES", "MapRef", "NO_SHIFT_SPEC", "PRECISIONS", "DatasetSpec", "EvalJob", "FitJob", "GridSpec", "MethodSpec",
    "ShiftSpec", "data_term", "executor_table", "expand_sweep", "load_grid", "make_fit_job", "map_key", "parse_grid", "sweep_label",
    "sweep_value_text", "topological",
]
