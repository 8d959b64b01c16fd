"""A run's hold on its directories, and the sweep of temporaries a killed run left behind.

Atomic writes (:mod:`uadbench.files`) go through ``.<name>.<8 random characters><suffix>.tmp``
files beside their target; a SIGKILL in the middle leaves one behind. A run holds its run
directory alone (an exclusive lock: a second run on the same ``--out`` is refused with one line
naming the holder's pid) and its cache shared (several runs may share one cache). At start, a run
that can take a directory's lock alone deletes the temporaries left there: only names that
uadbench's own atomic writes make, and never inside a sub-folder that another run holds (a folder
with its own lock file). Where file locks do not exist (not POSIX), nothing is locked or swept.
A run that fails before it wrote anything removes the folders it created for itself
(:func:`tidy_on_failure`): a refused run leaves no empty run folder with lock files behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from uadbench.errors import UadbenchError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".uadbench.lock"
# what tempfile.mkstemp / mkdtemp make for uadbench.files: "." + name + "." + 8 of [a-z0-9_] + suffix + ".tmp"
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}(\.[^/]*)?\.tmp")


def _temporaries(directory: Path) -> list[Path]:
    """uadbench's own temporaries under ``directory``, not descending into folders another run holds."""
    found = []
    for root, dirs, files in os.walk(directory):
        here = Path(root)
        kept = []
        for d in dirs:
            if _TEMPORARY.fullmatch(d):
                found.append(here / d)
            elif not (here / d / LOCK_NAME).exists():
                kept.append(d)
        dirs[:] = kept
        found += [here / f for f in files if f != LOCK_NAME and _TEMPORARY.fullmatch(f)]
    return found


def _sweep(directory: Path) -> list[Path]:
    swept = []
    for path in _temporaries(directory):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        swept.append(path)
    return swept


def _holder(handle) -> str:
    handle.seek(0)
    pid = handle.read().strip()
    return f"pid {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def hold(directory: Path, *, exclusive: bool = False) -> Iterator[list[Path]]:
    """Hold ``directory`` for a run; yields the stale temporaries that were deleted. ``exclusive``:
    hold it alone for the whole run (a run directory), refusing if another process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield []
        return
    with open(directory / LOCK_NAME, "a+") as handle:
        swept: list[Path] = []
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if exclusive:
                raise UadbenchError(f"{directory} is in use by another uadbench run ({_holder(handle)}); wait for it to end, "
                                    "or pass another --out") from None
            # another run works here: its temporaries may be live
        else:
            swept = _sweep(directory)
            if exclusive:
                handle.truncate(0)
                handle.write(str(os.getpid()))
                handle.flush()
        if not exclusive:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # a run holds it as its run directory
                raise UadbenchError(f"{directory} is the run directory of another uadbench run ({_holder(handle)}); "
                                    "use another --cache") from None
        try:
            yield swept
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _top_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself or a parent) that does not exist yet."""
    top = None
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        top = candidate
    return top


def _drop_lock(lock: Path) -> None:
    """Delete a lock file, unless some process holds it."""
    if fcntl is None:  # pragma: no cover
        return
    try:
        handle = open(lock, "a+")  # noqa: SIM115 - held while the file is unlinked
    except OSError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        with contextlib.suppress(OSError):
            os.unlink(lock)


def _remove_if_unused(top: Path) -> None:
    """Remove ``top`` and the folders under it that hold nothing but free lock files."""
    for root, _dirs, files in os.walk(top, topdown=False):
        here = Path(root)
        if LOCK_NAME in files:
            _drop_lock(here / LOCK_NAME)
        with contextlib.suppress(OSError):  # not empty: something was written there, and it stays
            here.rmdir()


@contextlib.contextmanager
def tidy_on_failure(*directories: Path) -> Iterator[None]:
    """If the block raises, remove the folders among ``directories`` (and their parents) that it
    created, where they hold nothing but lock files no process holds and empty folders: a run that
    fails early (an unusable data root, a bad dataset) leaves nothing it created. A folder where
    anything else was written stays, with what it holds."""
    new = [top for d in directories if (top := _top_missing(Path(os.path.abspath(d)))) is not None]
    try:
        yield
    except BaseException:
        for top in new:
            _remove_if_unused(top)
        raise


@contextlib.contextmanager
def hold_run(run_dir: Path, cache_dir: Path) -> Iterator[None]:
    """A run's hold: its run directory alone and its cache shared (several runs may share one),
    each swept of what a killed run left half-written; the folders it made are removed again if
    the run fails before writing anything there (:func:`tidy_on_failure`)."""
    with tidy_on_failure(run_dir, cache_dir), hold(run_dir, exclusive=True):
        with hold(cache_dir) if cache_dir.resolve() != run_dir.resolve() else contextlib.nullcontext():
            yield
