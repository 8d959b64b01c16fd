"""A grid file only suggests where it runs; cluster addresses come from the user; Slurm's job
folder is private and a result pickle of another user is never unpickled."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from extras import needs_ray, needs_submitit

from uadbench.errors import UadbenchError
from uadbench.executors import TaskFailure, create_executor
from uadbench.executors import slurm as slurm_executors
from uadbench.executors.slurm import private_folder

SMOKE = Path(__file__).parent / "data" / "smoke.toml"

# what `uadbench run` is asked to do in a fresh interpreter, and which cluster packages it imported
PROBE = """
import sys
from uadbench.cli import main
rc = main(sys.argv[1:])
print(sorted(m for m in ("ray", "submitit") if m in sys.modules))
sys.exit(rc)
"""


@pytest.mark.parametrize("table, suggestion, follow", [
    ('kind = "ray"\naddress = "10.0.0.1:10001"\n', "the ray executor at 10.0.0.1:10001", "`--executor ray --ray-address 10.0.0.1:10001`"),
    ('address = "auto"\n', "the ray executor at auto", "`--executor ray --ray-address auto`"),
    ('kind = "slurm"\npartition = "gpu"\n', "the slurm executor,", "`--executor slurm`"),
])
def test_a_grid_cannot_choose_where_code_runs(tmp_path, table, suggestion, follow):
    """A hostile grid: one line, exit 2, nothing written, no cluster package imported, nothing joined."""
    grid = tmp_path / "shared-grid.toml"
    grid.write_text(SMOKE.read_text() + "\n[executor]\n" + table)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", UADBENCH_DATA=str(tmp_path / "data"), HOME=str(tmp_path / "home"))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, "run", str(grid), "--out", str(tmp_path / "run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"uadbench: error: {grid} suggests {suggestion}") and "a grid file alone never decides where code runs" in line
    assert f"pass {follow} to follow it, or `--executor local` to run here" in line
    assert proc.stdout.strip() == "[]"  # neither ray nor submitit was imported: nothing connected or submitted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared-grid.toml"]  # no run folder, data root or home written


@needs_ray
def test_a_grids_address_is_never_joined_even_with_the_executor_flag(tmp_path, monkeypatch, capsys):
    from uadbench.cli import _run_executor, build_parser
    from uadbench.grid import load_grid

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    grid = tmp_path / "g.toml"
    grid.write_text(SMOKE.read_text() + '\n[executor]\nkind = "ray"\naddress = "10.0.0.1:10001"\ngpus = 0\n')
    args = build_parser().parse_args(["run", str(grid), "--executor", "ray"])
    ex = _run_executor(args, load_grid(grid), tmp_path / "run")
    assert ex.address is None and ex.describe().startswith("local Ray cluster on 127.0.0.1")
    assert capsys.readouterr().err == (f"uadbench: note: {grid} names the Ray cluster at 10.0.0.1:10001; it is joined only with "
                                       "--ray-address 10.0.0.1:10001\n")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert _run_executor(args, load_grid(grid), tmp_path / "run").address == "127.0.0.1:6379"  # the user's environment decides
    flagged = build_parser().parse_args(["run", str(grid), "--executor", "ray", "--ray-address", "ray://head:10001"])
    assert _run_executor(flagged, load_grid(grid), tmp_path / "run").address == "ray://head:10001"


def test_the_slurm_folder_is_created_private(tmp_path):
    old = os.umask(0)  # the most permissive umask a group project space might have
    try:
        private_folder(tmp_path / "run" / "slurm", create=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run" / "slurm").stat().st_mode) == 0o700
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    private_folder(open_folder, create=True)
    assert stat.S_IMODE(open_folder.stat().st_mode) == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(UadbenchError, match="is not a directory"):
        private_folder(tmp_path / "file", create=True)


needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root")


@needs_submitit
@needs_root
def test_another_users_slurm_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_executors.shutil, "which", lambda name: f"/usr/bin/{name}")
    folder = tmp_path / "slurm"
    folder.mkdir(mode=0o700)
    os.chown(folder, 4321, 4321)
    with pytest.raises(UadbenchError, match=r"slurm job folder .* belongs to uid 4321, not to this user \(uid 0\)") as exc:
        create_executor(kind="slurm", folder=folder)
    assert "\n" not in str(exc.value)


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PLANTED_MARK"]),))


@needs_submitit
@needs_root
def test_a_result_pickle_of_another_user_is_not_unpickled(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_executors.shutil, "which", lambda name: f"/usr/bin/{name}")
    ex = create_executor(kind="slurm", folder=tmp_path)
    mark = tmp_path / "code-ran"
    monkeypatch.setenv("PLANTED_MARK", str(mark))
    result = tmp_path / "7_0_result.pkl"
    result.write_bytes(pickle.dumps(("success", _Planted())))
    job = SimpleNamespace(job_id="7", paths=SimpleNamespace(result_pickle=result, stderr=tmp_path / "e", stdout=tmp_path / "o"))
    os.chown(result, 4321, 4321)
    failure = ex._finished(job)
    assert isinstance(failure, TaskFailure) and "belongs to uid 4321, not to this user: not unpickled" in failure.error
    assert not mark.exists()
    os.chown(result, os.getuid(), os.getgid())  # the same file, owned by the submitter, is read (and would run the code)
    assert ex._finished(job) == (None,) and mark.exists()
