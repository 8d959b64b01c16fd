"""What a running fit reports while it trains, read by the process that runs the grid.

A fit (in this process, a pool worker, a Slurm job or a Ray task) appends one JSON line per
logged metric row and per progress message to ``<cache>/live/<fit key>.jsonl``; the grid's process
reads the new lines while it waits, puts the metrics on the fit's MLflow run (so training curves
appear while the fit runs) and draws a bar per running fit. A file, not a pipe, so that every
executor works the same way, a cluster's included (the cache is on a shared file system there).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uadbench.run.layout import live_path  # re-exported: where a fit's live log is

_STEP = re.compile(r"\bstep (\d+)/(\d+)\b")


class LiveWriter:
    """The fit's side: appends lines (each written whole with one write call)."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path, self.echo = path, echo
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a resumed fit starts a fresh log (its history comes from the checkpoint)
        self._write({"log": uuid.uuid4().hex})  # the first line tells this log from an earlier one at the same path

    def _write(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def metrics(self, metrics: dict[str, float], step: int, history: list) -> None:
        """A row of the fit's metrics: appended to ``history`` and to the log (with its index there)."""
        row = {k: float(v) for k, v in metrics.items()}
        history.append((int(step), row))
        self._write({"i": len(history) - 1, "step": int(step), "metrics": row})

    def progress(self, message: str) -> None:
        """A progress message: to the log, and to ``echo`` (the fit's own output) when given."""
        self._write({"msg": message})
        if self.echo is not None:
            self.echo(message)


class LiveReader:
    """The grid's side: the complete lines written since the last read, per fit.

    A live log is advisory and never stops a grid: a fit that starts again (resumed after a kill)
    writes a new file, recognised by its first line (a random token) whatever its size, and a line
    that does not parse or is not a metrics or progress entry is skipped."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.offsets: dict[str, int] = {}
        self.heads: dict[str, bytes] = {}

    def read(self, fit_key: str) -> list[dict[str, Any]]:
        path = live_path(self.cache_dir, fit_key)
        try:
            with open(path, "rb") as f:
                head = f.readline()
                if not head.endswith(b"\n"):
                    return []  # its first line is still being written
                if self.heads.get(fit_key) != head or os.fstat(f.fileno()).st_size < self.offsets.get(fit_key, 0):
                    self.heads[fit_key], self.offsets[fit_key] = head, len(head)  # a fresh log: read it from its start
                f.seek(self.offsets[fit_key])
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offsets[fit_key] += end
        rows = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                continue  # a torn or foreign line: the log is advisory
            if isinstance(row, dict) and (isinstance(row.get("metrics"), dict) and "step" in row and "i" in row
                                          or isinstance(row.get("msg"), str)):
                rows.append(row)
        return rows

    def forget(self, fit_key: str) -> None:
        live_path(self.cache_dir, fit_key).unlink(missing_ok=True)
        self.offsets.pop(fit_key, None)
        self.heads.pop(fit_key, None)


def step_of(message: str) -> tuple[int, int] | None:
    """(step, steps) of a training loop's progress message, if it is one."""
    m = _STEP.search(message)
    return (int(m.group(1)), int(m.group(2))) if m else None
