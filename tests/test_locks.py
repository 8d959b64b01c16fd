"""One writer per run folder; the sweep removes only uadbench's own temporaries, only where it holds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from uadbench.errors import UadbenchError
from uadbench.files import atomic_path
from uadbench.run.locks import LOCK_NAME, hold, tidy_on_failure


def test_a_second_run_on_a_run_folder_is_refused_naming_the_holder(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from uadbench.run.locks import hold
        with hold(Path({str(tmp_path)!r}), exclusive=True):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UadbenchError, match=rf"in use by another uadbench run \(pid {holder.pid}\)"):
            with hold(tmp_path, exclusive=True):
                pass
        with pytest.raises(UadbenchError, match=rf"the run directory of another uadbench run \(pid {holder.pid}\)"):
            with hold(tmp_path):  # nor as a cache
                pass
    finally:
        holder.communicate("\n", timeout=30)
    with hold(tmp_path, exclusive=True):  # once the holder has ended, the folder is free
        assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())


def test_the_sweep_removes_only_its_own_temporaries_outside_other_runs_folders(tmp_path):
    open_writes = []  # kept open: a closed write would clean up its own temporary

    def leftover(path):
        ctx = atomic_path(path, suffix=".json")
        tmp = ctx.__enter__()  # an atomic write a kill interrupted: its temporary stays
        tmp.write_text("{")
        open_writes.append(ctx)
        return tmp

    mine = leftover(tmp_path / "evals" / "a.json")
    theirs_dir = tmp_path / "sub-run"
    theirs_dir.mkdir()
    (theirs_dir / LOCK_NAME).write_text("")
    theirs = leftover(theirs_dir / "b.json")
    user = tmp_path / ".notes.tmp"  # a user's file that only looks like a temporary
    user.write_text("keep me")
    with hold(tmp_path, exclusive=True) as swept:
        assert swept == [mine]
    assert not mine.exists() and theirs.exists() and user.exists()


def test_a_run_that_fails_before_writing_leaves_nothing_it_created(tmp_path, capsys, monkeypatch):
    """An unusable data root (here a file where the phantom's folder goes) stops the run while it
    prepares data: one line, exit 2, and no run folder, cache or lock file left behind."""
    from uadbench.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "phantom").write_text("not a folder")
    monkeypatch.setenv("UADBENCH_DATA", str(data))
    smoke = Path(__file__).resolve().parent / "data" / "smoke.toml"
    code = main(["run", str(smoke), "--out", str(tmp_path / "new" / "run"), "--cache", str(tmp_path / "cache"), "--no-tracking"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and line.startswith("uadbench: error: ") and "phantom" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # neither new/run nor the cache
    # a folder that existed stays, with what it held, and so does a new one where something was written
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert main(["run", str(smoke), "--out", str(kept), "--no-tracking"]) == 2
    assert (kept / "notes.txt").read_text() == "mine" and not (kept / "cache").exists()
    with pytest.raises(RuntimeError):
        with tidy_on_failure(tmp_path / "a" / "b"):
            with hold(tmp_path / "a" / "b", exclusive=True):
                (tmp_path / "a" / "b" / "c").mkdir()
                (tmp_path / "a" / "results.jsonl").write_text("{}")
                raise RuntimeError("late")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["results.jsonl"]


def test_tidy_on_failure_keeps_a_lock_another_process_holds(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from uadbench.run.locks import hold
        with hold(Path({str(tmp_path / "new")!r})):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    with pytest.raises(RuntimeError):
        with tidy_on_failure(tmp_path / "new"):
            with hold(tmp_path / "new"):
                holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert holder.stdout.readline().strip() == "held"
                raise RuntimeError("refused")
    try:
        assert (tmp_path / "new" / LOCK_NAME).is_file()  # another run holds the folder: it stays
    finally:
        holder.communicate("\n", timeout=30)
