"""What a user sees while a grid runs: a bar over the grid's tasks with an ETA, or plain lines.

On a terminal the grid's progress is a tqdm bar (tasks done, elapsed, ETA from the tasks finished
so far); when the output is not a terminal (CI logs, Slurm output files) each finished task is one
plain line with the same counts and ETA. Messages from running fits pass through either way.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0 or done >= total:
        return "--"
    seconds = elapsed / done * (total - done)
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class GridProgress:
    """Progress over ``total`` tasks; ``message`` prints a line without breaking the bar."""

    def __init__(self, total: int, *, stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.done = 0
        self.start = time.perf_counter()
        use_bar = self.stream.isatty() if bar is None else bar
        self._bar: Any = None
        self._fits: dict[str, Any] = {}  # a bar per running fit (terminal only)
        if use_bar and total:
            from tqdm import tqdm

            self._tqdm = tqdm
            self._bar = tqdm(total=total, file=self.stream, unit="task", desc="uadbench", dynamic_ncols=True)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self, what: str) -> None:
        """One task finished (``what`` names it)."""
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(what[:40], refresh=False)
            self._bar.update(1)
            return
        elapsed = time.perf_counter() - self.start
        print(f"uadbench: [{self.done}/{self.total}] {what} (elapsed {elapsed:.0f} s, ETA {_eta(self.done, self.total, elapsed)})",
              file=self.stream, flush=True)

    def fit(self, key: str, label: str, step: int, steps: int) -> None:
        """A running fit reached ``step`` of ``steps`` (of its current training loop)."""
        if self._bar is None:
            return  # plain output: the fits print their own lines
        bar = self._fits.get(key)
        if bar is None or bar.total != steps:
            if bar is not None:
                bar.close()
            bar = self._fits[key] = self._tqdm(total=steps, desc=label[:24], file=self.stream, unit="step", leave=False,
                                                position=len(self._fits) + 1, dynamic_ncols=True)
        bar.update(step - bar.n)

    def fit_done(self, key: str) -> None:
        bar = self._fits.pop(key, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        for key in list(self._fits):
            self.fit_done(key)
        if self._bar is not None:
            self._bar.close()

