"""Atomic file writes: results, checkpoints and caches are never left half-written; checks that
a directory can be written before any work starts; the sha256 of a file, and cache entries
checked against the sha256 recorded beside them."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from uadbench.errors import UadbenchError

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _first_loop(path: Path) -> Path:
    """The shortest prefix of ``path`` whose symlinks loop."""
    for prefix in (*reversed(path.parents), path):
        try:
            os.stat(prefix)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return prefix
    return path


def check_directory(path: str | os.PathLike, what: str) -> None:
    """A one-line UadbenchError unless ``path`` is a writable directory or can be created as one.

    Creates nothing. ``what`` names the path for the message (``"--out"``, ``"$UADBENCH_DATA"``).
    Refused: a file where a directory is needed (the path itself or a folder above it), a symlink
    loop or a dangling symlink, and a directory that is read-only or not writable by this process."""
    given = Path(path)
    absolute = Path(os.path.abspath(given))
    for candidate in (absolute, *absolute.parents):
        try:
            st = os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            if os.path.islink(candidate):
                raise UadbenchError(f"{what} {given}: {candidate} is a symlink to a path that does not exist") from None
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UadbenchError(f"{what} {given}: {_first_loop(candidate)} is a symlink loop") from None
            raise UadbenchError(f"{what} {given}: cannot access {candidate}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            if candidate == absolute:
                raise UadbenchError(f"{what} {given} is a file, not a directory")
            raise UadbenchError(f"{what} {given} cannot be created: {candidate} is a file, not a directory")
        if not os.access(candidate, os.W_OK | os.X_OK):
            read_only = bool(os.statvfs(candidate).f_flag & os.ST_RDONLY) if hasattr(os, "statvfs") else False
            reason = "on a read-only file system" if read_only else "not writable by this user"
            if candidate == absolute:
                raise UadbenchError(f"{what} {given} is {reason}")
            raise UadbenchError(f"{what} {given} cannot be created: {candidate} is {reason}")
        return


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk; where a platform cannot open a
    folder for that, nothing is done."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds. The
    file is flushed to the disk before the rename and the folder's entry after it, so a crash of
    the node leaves the old file or the whole new one, never an empty or partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; move it onto ``path`` (which must not exist) on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual directory mode
        for entry in tmp.rglob("*"):
            if entry.is_file():
                _fsync(entry)
        _fsync(tmp)
        if path.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
            _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """The temporary files and folders :func:`atomic_path` / :func:`atomic_dir` made for ``path``.

    A process killed inside either block leaves its temporary behind (``.<name>.<random>[suffix].tmp``
    beside ``path``); a live one is still writing it. Remove them only while holding the lock that
    every writer of ``path`` holds (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    # mkstemp / mkdtemp names: prefix + 8 characters from [a-z0-9_] + suffix
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}(\.[^/]*)?\.tmp")
    try:
        entries = list(path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(p for p in entries if pattern.fullmatch(p.name))


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete what :func:`stale_temporaries` finds for ``path``; returns what was removed.

    Call it only while holding the lock every writer of ``path`` takes: then no live process is
    writing any of them."""
    removed = []
    for tmp in stale_temporaries(path):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        removed.append(tmp)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- checksummed cache entries --------------------------------------------------------------------
# A cache entry (a fit's model.pt and meta.json, a map's .npz, a cell's .json, a training
# checkpoint) carries the sha256 of its bytes beside it, in ``<name>.sha256``, written after the
# entry. A reader checks it: an entry that no longer matches its digest (a flipped byte, a file cut
# short) is moved aside as ``<name>.corrupt``, named in one line, and recomputed. An entry without a
# digest (written before entries carried one, or by a run killed between the two writes) is
# trusted once if it reads, and its digest recorded then; one that does not read is set aside too.
DIGEST = ".sha256"
CORRUPT = ".corrupt"


def digest_path(path: str | os.PathLike) -> Path:
    """Where the sha256 of a cache entry is kept: ``<name>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + DIGEST)


def record_digest(path: str | os.PathLike) -> str:
    """Write the sha256 of ``path`` beside it (atomically); returns the digest."""
    path = Path(path)
    digest = sha256_file(path)
    write_text_atomic(digest_path(path), f"{digest}  {path.name}\n")
    return digest


def _recorded_digest(path: Path) -> str | None:
    """The digest recorded for ``path``; None if none was recorded; '' if the record is unreadable."""
    try:
        text = digest_path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""
    words = text.split()
    return words[0] if words and re.fullmatch(r"[0-9a-f]{64}", words[0]) else ""


def set_aside(path: str | os.PathLike) -> Path:
    """Move a corrupt entry to ``<name>.corrupt`` (replacing an earlier one) and drop its digest."""
    path = Path(path)
    target = path.with_name(path.name + CORRUPT)
    os.replace(path, target)
    with contextlib.suppress(FileNotFoundError):
        digest_path(path).unlink()
    return target


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def read_entry(path: str | os.PathLike, read: Callable[[Path], T], *, what: str,
               report: Callable[[str], None] = _stderr) -> T | None:
    """``read(path)`` of a checksummed cache entry; None when there is none or it was corrupt.

    A corrupt entry (its bytes differ from its recorded sha256, or, without a digest, ``read``
    fails on it) is moved aside as ``<name>.corrupt`` and ``report`` gets one line naming it (``what``
    says what it is: "fit checkpoint", "anomaly maps", ...); the caller then recomputes it. An entry
    whose digest matches is never set aside: an error reading it is raised, as it is no damage."""
    return _checked(Path(path), read, what, report, read_recorded=True)[1]


def entry_intact(path: str | os.PathLike, read: Callable[[Path], Any], *, what: str,
                 report: Callable[[str], None] = _stderr) -> bool:
    """Whether a cache entry is there and intact, decided as :func:`read_entry` does (a corrupt one
    is set aside), but reading it with ``read`` only when it has no digest to check."""
    return _checked(Path(path), read, what, report, read_recorded=False)[0]


def _checked(path: Path, read: Callable[[Path], T], what: str, report: Callable[[str], None], *,
             read_recorded: bool) -> tuple[bool, T | None]:
    """(whether the entry is there and intact, what ``read`` gave or None)."""
    if not path.is_file():
        return False, None
    recorded = _recorded_digest(path)
    problem = None
    if recorded is not None:
        try:
            found, size = sha256_file(path), path.stat().st_size
        except FileNotFoundError:  # another run sharing the cache set it aside just now
            return False, None
        if found != recorded:
            expected = f"the recorded {recorded[:12]}..." if recorded else f"its unreadable {digest_path(path).name}"
            problem = f"its sha256 {found[:12]}... ({size:,} bytes) differs from {expected}"
        else:
            return True, (read(path) if read_recorded else None)
    else:
        try:
            value = read(path)
        except Exception as exc:  # no digest to go by: an entry that does not read is damaged
            problem = f"it does not read ({_one_line(exc)})"
        else:
            with contextlib.suppress(OSError):  # trusted once: from now on its digest is checked
                record_digest(path)
            return True, value
    try:
        moved = set_aside(path)
    except FileNotFoundError:  # another run sharing the cache set it aside first
        return False, None
    report(f"uadbench: {what} {path} is corrupt: {problem}; moved aside to {moved.name}, to be recomputed")
    return False, None
