"""One writer per run folder; the sweep removes only uadbench's own temporaries, only where it holds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from uadbench.errors import UadbenchError
from uadbench.files import atomic_path
from uadbench.run.locks import LOCK_NAME, hold


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
