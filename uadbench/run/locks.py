"""A run's hold on its directories, and the sweep of temporaries a killed run left behind.

Atomic writes (:mod:`uadbench.files`) go through ``.<name>.<random>.tmp`` files beside their
target; a SIGKILL in the middle leaves one behind. Every run holds a shared lock on its run and
cache directories while it works; at start, a run that can take the lock alone (no other run uses
the directory) deletes the temporaries left there, then keeps its shared hold. Where file locks
do not exist (not POSIX), nothing is swept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".uadbench.lock"


def _temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*.tmp") if p.name != LOCK_NAME]


@contextlib.contextmanager
def hold(directory: Path) -> Iterator[list[Path]]:
    """Hold ``directory`` for a run; yields the stale temporaries that were deleted."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield []
        return
    with open(directory / LOCK_NAME, "a+") as handle:
        swept: list[Path] = []
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another run works here: its temporaries may be live
        else:
            for path in _temporaries(directory):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                swept.append(path)
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield swept
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
