"""The executor interface: a task graph, failures as values, the Executor base class, registration."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from uadbench.errors import UadbenchError
from uadbench.registry import EXECUTORS

E = TypeVar("E", bound=type)


def register_executor(name: str, description: str | None = None) -> Callable[[E], E]:
    """Class decorator: register an :class:`Executor` subclass as the executor ``name``
    (``create_executor(kind=name)``, ``uadbench run --executor name``). Declare its module in the
    ``uadbench.executors`` entry-point group so it is found without being imported by name."""
    return EXECUTORS.register(name, description=description)


@dataclass(frozen=True)
class Task:
    """A node of the job graph: ``fn(*args)``, run after the tasks named in ``depends_on``."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskFailure:
    """What a task that raised (or whose dependency failed) yields instead of a result."""

    error: str  # one line: "ExceptionType: message"
    traceback: str = ""
    dependency: str | None = None  # the failed task this one depended on, when it did not run

    @classmethod
    def from_exception(cls, exc: BaseException) -> TaskFailure:
        import traceback

        text = str(exc).strip().splitlines()
        return cls(f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": "),
                   "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def failed_dependency(task: Task, failed: dict[str, TaskFailure]) -> TaskFailure | None:
    """A failure for ``task`` if one of its dependencies failed, else None."""
    for dep in task.depends_on:
        if dep in failed:
            return TaskFailure(f"not run: {dep} failed ({failed[dep].error})", dependency=dep)
    return None


class GraphState:
    """Which tasks of a graph have finished and which failed, for an executor's loop."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.failed: dict[str, TaskFailure] = {}

    def ready(self, task: Task) -> bool:
        return set(task.depends_on) <= self.done

    def finish(self, task: Task, result: Any) -> tuple[Task, Any]:
        """Record ``task``'s result (a failure too); returns the pair the executor yields."""
        if isinstance(result, TaskFailure):
            self.failed[task.key] = result
        self.done.add(task.key)
        return task, result


def priority_order(tasks: Sequence[Task]) -> Callable[[Task], tuple[int, int]]:
    """A sort key: tasks that more tasks wait for (directly or not) first, then graph order. A fit
    that another fit reuses (cddpm for mhd) starts before the rest, so the longest chain of the
    graph starts early and the workers are not left with it at the end."""
    children: dict[str, list[str]] = {t.key: [] for t in tasks}
    for t in tasks:
        for dep in t.depends_on:
            children.setdefault(dep, []).append(t.key)
    below: dict[str, set[str]] = {}

    def descendants(key: str) -> set[str]:
        if key not in below:
            below[key] = set()
            for child in children.get(key, []):
                below[key] |= {child} | descendants(child)
        return below[key]

    index = {t.key: i for i, t in enumerate(tasks)}
    return lambda t: (-len(descendants(t.key)), index[t.key])


def check_graph(tasks: Sequence[Task]) -> None:
    """Refuse duplicate keys, edges to unknown tasks and cycles."""
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise UadbenchError(f"task graph has duplicate keys: {sorted({k for k in keys if keys.count(k) > 1})}")
    known = set(keys)
    for t in tasks:
        missing = [d for d in t.depends_on if d not in known]
        if missing:
            raise UadbenchError(f"task {t.key} depends on unknown tasks {missing}")
    done: set[str] = set()
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if set(t.depends_on) <= done]
        if not ready:
            raise UadbenchError(f"task graph has a cycle among {[t.key for t in pending]}")
        done |= {t.key for t in ready}
        pending = [t for t in pending if t.key not in done]


def set_torch_threads(threads: int) -> int:
    """Set torch's intra-op threads (and OMP_NUM_THREADS for new libraries); returns the old count."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return old


class Executor(ABC):
    """Runs a task graph; ``threads`` torch threads per task.

    An executor that waits for tasks running elsewhere (``polls``) calls ``on_idle`` every
    ``idle_every`` seconds while it waits: the runner reads the fits' live logs then.

    A registered executor is built by :meth:`create` from the run's workers, threads and run-time
    plugin modules and the keyword ``options`` it names (``create_executor`` refuses any other)."""

    polls: bool = False
    idle_every: float = 2.0
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def create(cls, workers: int, threads: int, modules: Sequence[str], **options: Any) -> Executor:
        """The executor for a run of ``workers`` workers with ``threads`` torch threads per task."""
        return cls(threads, **options)

    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise UadbenchError(f"threads per worker must be >= 1, got {threads}")
        self.threads = threads
        self.on_idle: Callable[[], None] | None = None

    def device_type(self, requested: str) -> str:
        """The device type the tasks will train on, for ``requested`` (cpu, cuda or auto): what
        this process sees; executors that run tasks on other machines answer for those."""
        import torch

        if requested == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(requested).type

    def idle(self) -> None:
        if self.on_idle is not None:
            self.on_idle()

    @abstractmethod
    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Yield ``(task, result)`` as tasks finish; a task starts after all it depends on."""

    def describe(self) -> str:
        return type(self).__name__
