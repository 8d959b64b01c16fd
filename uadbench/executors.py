"""How jobs run: one interface over a graph of tasks, in-process or in a local process pool.

The runner hands an executor a list of :class:`Task` s, each naming the tasks it depends on (a
fit that reuses another fit; the evaluation of a fit). :meth:`Executor.run` starts a task once
every task it depends on has finished and yields ``(task, result)`` pairs as tasks finish, so the
caller can write results as they come. Cluster executors (Slurm job arrays with dependencies, Ray)
receive the same graph.

Both executors run torch with the same number of threads per job, so a grid gives the same numbers
whichever executor runs it.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from uadbench.errors import UadbenchError


@dataclass(frozen=True)
class Task:
    """A node of the job graph: ``fn(*args)``, run after the tasks named in ``depends_on``."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    depends_on: tuple[str, ...] = ()


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
    """Runs a task graph; ``threads`` torch threads per task."""

    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise UadbenchError(f"threads per worker must be >= 1, got {threads}")
        self.threads = threads

    @abstractmethod
    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Yield ``(task, result)`` as tasks finish; a task starts after all it depends on."""

    def describe(self) -> str:
        return type(self).__name__


class SerialExecutor(Executor):
    """Every task in this process, in dependency order, with ``threads`` torch threads."""

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        check_graph(tasks)
        old = set_torch_threads(self.threads)
        old_omp = os.environ.get("OMP_NUM_THREADS")
        try:
            done: set[str] = set()
            pending = list(tasks)
            while pending:
                task = next(t for t in pending if set(t.depends_on) <= done)
                result = task.fn(*task.args)
                done.add(task.key)
                pending.remove(task)
                yield task, result
        finally:
            set_torch_threads(old)
            if old_omp is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old_omp

    def describe(self) -> str:
        return f"in-process, {self.threads} torch thread{'s' if self.threads > 1 else ''}"


def _worker_init(threads: int) -> None:
    set_torch_threads(threads)


class LocalPoolExecutor(Executor):
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each."""

    def __init__(self, workers: int, threads: int = 1) -> None:
        super().__init__(threads)
        if workers < 1:
            raise UadbenchError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        check_graph(tasks)
        pool = cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.threads,),
        )
        try:
            done: set[str] = set()
            pending = list(tasks)
            running: dict[cf.Future, Task] = {}
            while pending or running:
                for task in [t for t in pending if set(t.depends_on) <= done]:
                    running[pool.submit(task.fn, *task.args)] = task
                    pending.remove(task)
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    task = running.pop(fut)
                    result = fut.result()
                    done.add(task.key)
                    yield task, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> str:
        return f"local pool of {self.workers} processes, {self.threads} torch thread{'s' if self.threads > 1 else ''} each"


def create_executor(workers: int = 1, threads: int = 1) -> Executor:
    """In-process for one worker, a local process pool for more."""
    if workers < 1:
        raise UadbenchError(f"workers must be >= 1, got {workers}")
    return SerialExecutor(threads) if workers == 1 else LocalPoolExecutor(workers, threads)
