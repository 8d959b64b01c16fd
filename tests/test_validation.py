"""Bad input is refused when it is read, with the valid range in the message; paths with unusual
characters and moved run directories keep everything inside the run directory; a killed phantom
generator leaves no temporary folders behind for long.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from uadbench.config import build_config
from uadbench.errors import ConfigError, UadbenchError
from uadbench.grid import parse_grid
from uadbench.registry import SHIFTS

ROOT = Path(__file__).resolve().parents[1]

GRID = """
name = "checks"
image_grid = "smoke"
train_dataset = "phantom-healthy-t2w"
{top}
[[methods]]
name = "{method}"
preset = "smoke"
{overrides}
[[datasets]]
name = "phantom-tumour-t2w"
{tail}
"""


def grid(method: str = "ae", overrides: str = "", top: str = "", tail: str = "", empty: str = "") -> dict:
    text = GRID.format(method=method, overrides=f"overrides = {{ {overrides} }}" if overrides else "", top=top, tail=tail)
    if top.startswith("image_grid"):
        text = text.replace('image_grid = "smoke"\n', "", 1)
    raw = tomllib.loads(text)
    if empty:  # `methods = []` in the file
        raw[empty] = []
    return raw


def test_the_reference_grid_is_valid():
    spec = parse_grid(grid(tail="[[shifts]]\nname = 'gamma'\nseverities = [0.5, 2.0]\n"), "checks.toml")
    assert [s.label for s in spec.shifts] == ["none", "gamma@0.5", "gamma@2"]


# -- every grid value, when the grid is read -----------------------------------------------------
BAD_GRIDS = {
    # an empty grid would run zero cells and write empty results over the old ones
    "no methods": (dict(empty="methods"), r"checks.toml: 'methods' is empty; a grid needs at least one \[\[methods\]\]"),
    "no datasets": (dict(empty="datasets"), r"'datasets' is empty"),
    "shifts not tables": (dict(top="shifts = 3"), r"'shifts' must be an array of tables"),
    # shift severities: finite and in the shift's declared range
    "gamma inf": (dict(tail="[[shifts]]\nname = 'gamma'\nseverities = [inf]"),
                  r"shifts\[0\]: shift 'gamma': severity must be a finite number > 0, got inf"),
    "gamma 0": (dict(tail="[[shifts]]\nname = 'gamma'\nseverities = [0.7, 0]"), r"severity must be a finite number > 0, got 0 \(1 leaves"),
    "noise nan": (dict(tail="[[shifts]]\nname = 'noise'\nseverities = [nan]"), r"shift 'noise': severity must be a finite number >= 0, got nan"),
    "bias negative": (dict(tail="[[shifts]]\nname = 'bias'\nseverities = [-0.2]"), r"shift 'bias': severity must be a finite number >= 0"),
    "severity text": (dict(tail="[[shifts]]\nname = 'bias'\nseverities = ['0.2']"), r"severity must be a finite number >= 0, got '0.2'"),
    "severity twice": (dict(tail="[[shifts]]\nname = 'bias'\nseverities = [0.2, 0.2]"), r"shift bias@0.2 is listed twice"),
    # method fields: generic checks by name and type
    "lr nan": (dict(overrides="lr = nan"), r"methods\[0\]: method 'ae'.lr must be a finite number, got nan"),
    "lr negative": (dict(overrides="lr = -1e-3"), r"method 'ae'.lr \(a learning rate\) must be > 0, got -0.001"),
    "lr zero": (dict(overrides="lr = 0"), r"lr \(a learning rate\) must be > 0"),
    "steps negative": (dict(overrides="steps = -5"), r"method 'ae'.steps \(a step count\) must lie in \[0, 100,000,000\], got -5"),
    "steps absurd": (dict(overrides="steps = 1_000_000_000"), r"steps \(a step count\) must lie in \[0, 100,000,000\]"),
    "gan_steps negative": (dict(method="fanogan", overrides="gan_steps = -1"), r"method 'fanogan'.gan_steps \(a step count\)"),
    "batch_size 0": (dict(overrides="batch_size = 0"), r"method 'ae'.batch_size must lie in \[1, 65536\], got 0"),
    "dropout 1": (dict(overrides="dropout = 1.0"), r"method 'ae'.dropout must lie in \[0, 1\), got 1.0"),
    "betas inf": (dict(method="fanogan", overrides="betas = [0.5, inf]"), r"method 'fanogan'.betas must be a finite number, got inf"),
    # method fields: a Config's own rules (__post_init__)
    "latent_dim 0": (dict(overrides="latent_dim = 0"), r"invalid method 'ae' config: latent_dim must be an integer >= 1, got 0"),
    "channels empty": (dict(overrides="channels = []"), r"channels must be a non-empty list of integers >= 1"),
    "vae beta": (dict(method="vae", overrides="beta = -1.0"), r"beta \(the KL weight\) must be >= 0"),
    "dae noise": (dict(method="dae", overrides="noise_std = -0.1"), r"noise_std and lr_period must be >= 0"),
    "fanogan critic": (dict(method="fanogan", overrides="n_critic = 0"), r"n_critic must be an integer >= 1"),
    "mhd base lr": (dict(method="mhd", overrides="base_overrides = { lr = nan }"), r"method 'cddpm'.lr must be a finite number"),
    # seeds, image grid, batch
    "seed 2^32": (dict(top="seeds = [4294967296]"), r"seeds must be a non-empty list of distinct integers in \[0, 2\^32\), got \[4294967296\]"),
    "seeds twice": (dict(top="seeds = [1, 1]"), r"seeds must be a non-empty list of distinct integers"),
    "data_seed 2^40": (dict(top="data_seed = 1099511627776"), r"data_seed must be an integer in \[0, 2\^32\), got 1099511627776"),
    "data_seed bool": (dict(top="data_seed = true"), r"data_seed must be an integer"),
    "grid too large": (
        dict(top="image_grid = { shape = [1024, 1024, 512], spacing = 0.25 }"),
        r"image grid shape \[1024, 1024, 512\] has 536,870,912 voxels per volume, more than the 16,777,216 \(256\^3, a whole head at 1 mm\)",
    ),
    "grid spacing inf": (dict(top="image_grid = { shape = [32, 32, 16], spacing = inf }"), r"image grid spacing must be a finite positive number"),
    "grid spacing nan": (dict(top="image_grid = { shape = [32, 32, 16], spacing = nan }"), r"image grid spacing must be a finite positive number"),
    "eval batch 0": (dict(top="eval_batch_size = 0"), r"eval_batch_size \(slices per predict call\) must be an integer in \[1, 4096\], got 0"),
    "eval batch absurd": (dict(top="eval_batch_size = 1000000"), r"eval_batch_size .* must be an integer in \[1, 4096\]"),
}


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_bad_grid_value_is_refused_when_read(case):
    kwargs, message = BAD_GRIDS[case]
    raw = grid(**kwargs)
    with pytest.raises(ConfigError, match=message):
        parse_grid(raw, "checks.toml")


def test_method_label_and_preset_must_be_text():
    raw = grid()
    raw["methods"][0]["label"] = 3
    with pytest.raises(ConfigError, match=r"methods\[0\]: label must be a string, got 3"):
        parse_grid(raw, "checks.toml")
    raw = grid()
    raw["methods"][0]["preset"] = ["cpu"]
    with pytest.raises(ConfigError, match=r"methods\[0\]: preset must be a string"):
        parse_grid(raw, "checks.toml")


def test_every_preset_of_every_method_passes_the_checks():
    from uadbench.method import create_config
    from uadbench.registry import METHODS

    for name in METHODS.names():
        for preset in METHODS.get(name).presets:
            create_config(name, preset)


@dataclasses.dataclass(frozen=True)
class ThirdPartyConfig:
    lr: float = 1e-3
    pretrain_lr: float = 1e-3
    warmup_steps: int = 10
    eval_batch_size: int = 8
    weight_decay: float = 0.0
    head_dropout: float = 0.1
    scale: float = 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"scale": float("inf")}, "scale must be a finite number, got inf"),
        ({"scale": float("nan")}, "scale must be a finite number, got nan"),
        ({"pretrain_lr": 0.0}, r"pretrain_lr \(a learning rate\) must be > 0"),
        ({"warmup_steps": -1}, r"warmup_steps \(a step count\) must lie in \[0, "),
        ({"eval_batch_size": 0}, r"eval_batch_size must lie in \[1, 65536\]"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"head_dropout": -0.5}, r"head_dropout must lie in \[0, 1\)"),
    ],
)
def test_generic_checks_follow_field_names(overrides, message):
    """A third-party Config gets the same checks with no code of its own."""
    with pytest.raises(ConfigError, match=message):
        build_config(ThirdPartyConfig, {"paper": {}}, "paper", overrides, owner="method 'mine'")
    build_config(ThirdPartyConfig, {"paper": {}}, "paper", {"scale": -3.0, "warmup_steps": 0}, owner="method 'mine'")


# -- shifts declare the severities they accept ---------------------------------------------------
@pytest.mark.parametrize("name", [n for n in SHIFTS.names() if n != "none"])
def test_shift_declares_a_valid_range_holding_its_neutral_severity(name):
    from uadbench.shifts.base import apply_shift, check_severity, is_acquisition

    fn = SHIFTS.get(name)
    valid = fn.valid_severities
    assert fn.neutral in valid, f"{name}: neutral severity {fn.neutral} is outside its declared range {valid.describe()}"
    assert check_severity(name, fn.neutral) == fn.neutral
    for bad in (math.inf, -math.inf, math.nan):
        assert bad not in valid
    if is_acquisition(name):  # it re-acquires subjects: the declaration is checked before any dataset is touched
        below = valid.low - 1.0 if valid.low is not None else math.nan
        with pytest.raises(ConfigError, match=f"shift '{name}': severity must be"):
            check_severity(name, below)
        return
    image = np.full((8, 8, 4), 0.5, dtype=np.float32)
    brain = np.ones_like(image, dtype=bool)
    if valid.low is not None:  # the shift itself refuses what the declaration refuses
        below = valid.low if not valid.low_inclusive else valid.low - 1.0
        with pytest.raises(ValueError):
            fn(image, brain, below, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=f"shift '{name}': severity must be"):
        apply_shift(name, image, brain, math.nan, np.random.default_rng(0))


def test_check_severity_names_the_range():
    from uadbench.shifts.base import check_severity

    with pytest.raises(ConfigError, match=r"shift 'gamma': severity must be a finite number > 0, got -1 \(1 leaves the image unchanged\)"):
        check_severity("gamma", -1)
    with pytest.raises(ConfigError, match="severity must be a finite number >= 0, got True"):
        check_severity("noise", True)


# -- directories are checked before anything is written ------------------------------------------
def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_size if not p.is_dir() else -1) for p in root.rglob("*"))


def test_check_directory(tmp_path, monkeypatch):
    from uadbench.files import check_directory

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = _listing(tmp_path)
    check_directory(tmp_path / "new" / "run", "--out")  # creatable: fine, and not created
    check_directory(tmp_path, "--out")
    cases = {
        tmp_path / "file.txt": r"--out .*file.txt is a file, not a directory$",
        tmp_path / "file.txt" / "run": r"--out .*file.txt/run cannot be created: .*file.txt is a file, not a directory$",
        tmp_path / "loop" / "run": r"--out .*loop/run: .*loop is a symlink loop$",
        tmp_path / "dangling" / "run": r"--out .*dangling/run: .*dangling is a symlink to a path that does not exist$",
    }
    for path, message in cases.items():
        with pytest.raises(UadbenchError, match=message):
            check_directory(path, "--out")
    assert _listing(tmp_path) == before

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for an unprivileged user
    with pytest.raises(UadbenchError, match=r"--cache .*/new cannot be created: .* is not writable by this user$"):
        check_directory(tmp_path / "new", "--cache")
    with pytest.raises(UadbenchError, match=r"--cache .* is not writable by this user$"):
        check_directory(tmp_path, "--cache")


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_check_directory_read_only_folder(tmp_path):
    from uadbench.files import check_directory

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(UadbenchError, match="not writable"):
            check_directory(locked / "run", "--out")
    finally:
        locked.chmod(0o755)


# -- the sqlite URI and the artifact location ----------------------------------------------------
@pytest.mark.parametrize("name", ["plain", "sp ace #1 %20 100% ünï?/deeper"])  # each store costs seconds to create
def test_tracking_store_stays_in_the_run_directory_and_follows_it(tmp_path, name):
    from uadbench.run.tracking import create_tracker, default_tracking_uri

    def log(run_dir: Path) -> str:
        artifact = tmp_path.parent / f"{tmp_path.name}-artifact.txt"  # outside tmp_path, removed below
        artifact.write_text("hello")
        try:
            tracker = create_tracker(True, None, run_dir, "uadbench-paths")
            run_id = tracker.child_run("eval/x", tags={"k": "v"})
            tracker.log_artifact(run_id, artifact, "example")
            tracker.end_run(run_id)
        finally:
            artifact.unlink()
        return tracker.client.get_run(run_id).info.artifact_uri

    def files_and_folders() -> tuple[list[str], set[str]]:
        files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
        return files, {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir()}

    run_dir = tmp_path / name / "run"
    run_dir.mkdir(parents=True)
    log(run_dir)
    files, dirs = files_and_folders()
    assert files and all(f.startswith(f"{name}/run/") for f in files), files
    assert f"{name}/run/mlflow.db" in files and any(f.endswith("-artifact.txt") for f in files)
    assert all(d.startswith(f"{name}/run") or f"{name}/run".startswith(d) for d in dirs), dirs  # no folder elsewhere
    uri = default_tracking_uri(run_dir)
    assert uri.startswith("sqlite:///") and "?" not in uri and "#" not in uri

    # the run directory moves: new artifacts go where it is now, and the earlier ones are found there
    moved = tmp_path / "moved" / "run"
    moved.parent.mkdir()
    shutil.move(run_dir, moved)
    artifact_uri = log(moved)
    assert not run_dir.exists()
    files, _ = files_and_folders()
    assert all(f.startswith("moved/run/") for f in files), files
    assert artifact_uri.startswith((moved / "mlartifacts").resolve().as_uri() + "/")
    with sqlite3.connect(moved / "mlflow.db") as con:
        uris = [row[0] for row in con.execute("SELECT artifact_uri FROM runs")]
    assert len(uris) == 2 and all(u.startswith((moved / "mlartifacts").resolve().as_uri() + "/") for u in uris)
    assert len([f for f in files if f.endswith("-artifact.txt")]) == 2


def _run_cli(args, cwd, data_root):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_DATA=str(data_root), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "uadbench.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


TINY = """
name = "tiny"
image_grid = "smoke"
train_dataset = "phantom-healthy-t2w"
[[methods]]
name = "thresh"
preset = "smoke"
[[datasets]]
name = "phantom-tumour-t2w"
"""


def test_run_directory_with_odd_characters_then_moved(tmp_path, data_root):
    """`--out 'what?/run'` once created the MLflow database as a file 'what' outside the run
    directory; a moved run directory wrote its artifacts into the old one."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.toml").write_text(TINY)
    odd = "what? #1 %20 ü"
    proc = _run_cli(["run", "tiny.toml", "--out", f"{odd}/run"], work, data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = work / odd / "run"
    outside = [p for p in work.rglob("*") if not (p == first.parent or first in (p, *p.parents))]
    assert [p.name for p in outside] == ["tiny.toml"], outside
    assert (first / "mlflow.db").is_file() and (first / "results.jsonl").is_file()

    moved = tmp_path / "moved" / "run"
    moved.parent.mkdir()
    shutil.move(first, moved)
    proc = _run_cli(["run", "tiny.toml", "--out", str(moved)], work, data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not first.exists(), sorted(map(str, first.rglob("*")))
    assert not list((work / odd).iterdir())
    with sqlite3.connect(moved / "mlflow.db") as con:
        locations = [row[0] for row in con.execute("SELECT artifact_location FROM experiments WHERE name = 'uadbench-tiny'")]
        uris = [row[0] for row in con.execute("SELECT artifact_uri FROM runs")]
    assert locations == [(moved / "mlartifacts").resolve().as_uri()]
    assert len(uris) >= 6 and all(u.startswith(locations[0] + "/") for u in uris), uris
    logged = list((moved / "mlartifacts").rglob("leaderboard.md"))
    assert len(logged) == 2  # one per invocation, both under the run directory where it is now


# -- phantom generation leaves no debris ---------------------------------------------------------
SIZES = {"train": 2, "val": 1, "test": 1}
HOLD_LOCK = """
import sys, time
from pathlib import Path
from uadbench.data.phantom import cohorts
with cohorts._file_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""
GENERATE = """
import sys
from uadbench.data.phantom import cohorts
cohorts.ensure_cohort(sys.argv[1], "healthy", sizes={"train": 2, "val": 1, "test": 1})
"""


def test_killed_phantom_generation_leaves_no_temporary_folders(tmp_path):
    from uadbench.data.phantom import cohorts as ph

    root = tmp_path / "data"
    base = ph.phantom_root(root, 0)
    # 1. a generator killed mid-way leaves its temporary folders
    proc = subprocess.Popen([sys.executable, "-c", GENERATE, str(root)])
    deadline = time.monotonic() + 120
    while not (base.is_dir() and list(base.glob(".*.tmp"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the generator finished before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(base.glob(".*.tmp"))
    # 2. the next generator, holding the lock, removes them and writes the cohort
    dirs = ph.ensure_cohort(root, "healthy", sizes=SIZES)
    assert all((d / "manifest.json").is_file() for d in dirs.values())
    assert not list(base.glob(".*.tmp"))

    # 3. a temporary folder of a live generator (it holds the lock) is left alone ...
    name = ph.cohort_dir_name("healthy", "t1w", ph.resolve_sizes("healthy", SIZES))
    debris = base / f".{name}.abcd1234.tmp"
    debris.mkdir()
    (debris / "sub-000.nii.gz").write_bytes(b"partial")
    lock = base / f".{ph.cohort_dir_name('healthy', 'all', ph.resolve_sizes('healthy', SIZES))}.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        ph.ensure_cohort(root, "healthy", sizes=SIZES)
        assert debris.is_dir()
    finally:
        holder.kill()
        holder.wait()
    # ... and removed once that process is gone
    ph.ensure_cohort(root, "healthy", sizes=SIZES)
    assert not debris.exists() and not list(base.glob(".*.tmp"))
    # other folders are never touched
    assert sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) == sorted(d.name for d in dirs.values())
