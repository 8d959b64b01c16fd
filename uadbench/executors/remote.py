"""What the cluster executors share: tasks that run on other machines, with CPUs and GPUs per task.

:class:`RemoteExecutor` is the base of the Slurm and Ray executors: the device type their tasks
train on, the mapping of ``create_executor``'s options onto them (``cpus`` per task, default the
run's ``threads``), and the wrapper every remote task runs (:func:`run_with_threads`). Their
optional packages are imported only when one is built or run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from uadbench.errors import UadbenchError
from uadbench.executors.base import Executor, set_torch_threads

LOG_TAIL_LINES = 30


def require(package: str, extra: str, executor: str) -> None:
    """Refuse, in one line, an executor whose optional package is missing."""
    if importlib.util.find_spec(package) is None:
        raise UadbenchError(f"the {executor} executor needs the '{package}' package: pip install 'uadbench[{extra}]'")


def count(value: Any, what: str, minimum: int) -> int:
    """``value`` as a whole number >= ``minimum``, else a one-line error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UadbenchError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def module_roots(modules: Sequence[str]) -> tuple[str, ...]:
    """The sys.path entries ``modules`` were imported from, for jobs that must import them too."""
    roots = []
    for name in modules:
        origin = getattr(getattr(sys.modules.get(name), "__spec__", None), "origin", None)
        if origin:
            path = Path(origin).resolve()
            depth = name.count(".") + (2 if path.name == "__init__.py" else 1)
            roots.append(str(path.parents[depth - 1]))
    return tuple(dict.fromkeys(roots))


def run_with_threads(threads: int, fn: Callable[..., Any], args: tuple[Any, ...], modules: tuple[str, ...] = (),
                     roots: tuple[str, ...] = (), cwd: str | None = None) -> Any:
    """What a cluster job runs: ``fn(*args)`` with ``threads`` torch threads, after importing the
    run-time plugin ``modules`` (from ``roots``) and moving to the submitter's ``cwd`` (relative
    paths in ``args`` mean the same there, on a shared filesystem)."""
    if cwd is not None and os.path.isdir(cwd):
        os.chdir(cwd)
    for root in roots:
        if root not in sys.path:
            sys.path.append(root)
    for module in modules:
        importlib.import_module(module)
    set_torch_threads(threads)
    return fn(*args)


def error_line(text: str, fallback: str) -> str:
    """The last non-empty line of ``text`` (a traceback's exception), else ``fallback``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else fallback


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class RemoteExecutor(Executor):
    """Tasks on other machines: ``threads`` CPUs (and torch threads) and ``gpus`` GPUs per task."""

    polls = True
    options: ClassVar[tuple[str, ...]] = ("cpus", "gpus")
    gpus: float = 0

    @classmethod
    def create(cls, workers: int, threads: int, modules: Sequence[str], **options: Any) -> Executor:
        """``cpus`` per task (default the run's ``threads``) become the executor's threads."""
        cpus = options.pop("cpus", None)
        build: Any = cls  # every remote executor takes its threads, the run-time modules and its own options
        return build(threads if cpus is None else cpus, modules=modules, **options)

    def device_type(self, requested: str) -> str:
        """The tasks run elsewhere: with GPUs per task they train on cuda (auto or cuda), else on the CPU."""
        if requested == "cpu":
            return "cpu"
        return "cuda" if self.gpus else ("cpu" if requested == "auto" else "cuda")
