"""Local executors: in-process, and a pool of spawned worker processes that die with their parent."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from typing import Any

from uadbench.errors import UadbenchError
from uadbench.executors.base import (
    Executor,
    GraphState,
    Task,
    TaskFailure,
    check_graph,
    failed_dependency,
    priority_order,
    register_executor,
    set_torch_threads,
)


class SerialExecutor(Executor):
    """Every task in this process, in dependency order, with ``threads`` torch threads."""

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        check_graph(tasks)
        old = set_torch_threads(self.threads)
        old_omp = os.environ.get("OMP_NUM_THREADS")
        try:
            state = GraphState()
            pending = list(tasks)
            while pending:
                task = next(t for t in pending if state.ready(t))
                pending.remove(task)
                result = failed_dependency(task, state.failed)
                if result is None:
                    try:
                        result = task.fn(*task.args)
                    except Exception as exc:  # recorded; the other tasks go on
                        result = TaskFailure.from_exception(exc)
                yield state.finish(task, result)
        finally:
            set_torch_threads(old)
            if old_omp is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old_omp

    def describe(self) -> str:
        return f"in-process, {self.threads} torch thread{'s' if self.threads > 1 else ''}"


def die_with_parent() -> None:
    """End this process when its parent dies: the kernel's parent-death signal where there is one
    (Linux), and a watchdog thread that polls the parent's pid everywhere."""
    import signal
    import sys
    import threading
    import time

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="uadbench-parent-watch", daemon=True).start()


def _worker_init(threads: int, modules: tuple[str, ...] = ()) -> None:
    import importlib

    die_with_parent()
    set_torch_threads(threads)
    for module in modules:  # plugins the parent registered at run time (not through entry points)
        importlib.import_module(module)


@register_executor("local", "this machine: in-process for one worker, else a pool of spawned worker processes (--workers)")
class LocalPoolExecutor(Executor):
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each."""

    polls = True

    @classmethod
    def create(cls, workers: int, threads: int, modules: Sequence[str], **options: Any) -> Executor:
        """In-process (:class:`SerialExecutor`) for one worker, else a pool of ``workers``."""
        return SerialExecutor(threads) if workers == 1 else cls(workers, threads, modules)

    def __init__(self, workers: int, threads: int = 1, modules: Sequence[str] = ()) -> None:
        super().__init__(threads)
        if workers < 1:
            raise UadbenchError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.modules = tuple(modules)  # imported by each worker before its first task

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        check_graph(tasks)
        pool = cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.threads, self.modules),
        )
        try:
            state = GraphState()
            pending = sorted(tasks, key=priority_order(tasks))  # what others wait for goes first
            running: dict[cf.Future, Task] = {}
            while pending or running:
                for task in [t for t in pending if state.ready(t)]:
                    skipped = failed_dependency(task, state.failed)
                    if skipped is not None:
                        pending.remove(task)
                        yield state.finish(task, skipped)
                    elif len(running) < self.workers:  # no queue in the pool: a freed worker takes the best task
                        pending.remove(task)
                        running[pool.submit(task.fn, *task.args)] = task
                if not running:
                    continue
                finished, _ = cf.wait(running, timeout=self.idle_every, return_when=cf.FIRST_COMPLETED)
                if not finished:
                    self.idle()
                for fut in finished:
                    task = running.pop(fut)
                    try:
                        result = fut.result()
                    except cf.process.BrokenProcessPool:
                        raise
                    except Exception as exc:  # recorded; the other tasks go on
                        result = TaskFailure.from_exception(exc)
                    yield state.finish(task, result)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> str:
        return f"local pool of {self.workers} processes, {self.threads} torch thread{'s' if self.threads > 1 else ''} each"
