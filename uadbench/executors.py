"""How jobs run: one interface over a graph of tasks, in-process or in a local process pool.

The runner hands an executor a list of :class:`Task` s, each naming the tasks it depends on (a
fit that reuses another fit; the evaluation of a fit). :meth:`Executor.run` starts a task once
every task it depends on has finished and yields ``(task, result)`` pairs as tasks finish, so the
caller can write results as they come. A task that raises yields a :class:`TaskFailure` instead
of a result, the tasks that depend on it yield one without running, and every other task goes on.
Cluster executors (Slurm job arrays with dependencies, Ray) receive the same graph.

Worker processes of the local pool die with the process that started them: a killed run leaves
no workers behind.

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
    ``idle_every`` seconds while it waits: the runner reads the fits' live logs then."""

    polls: bool = False
    idle_every: float = 2.0

    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise UadbenchError(f"threads per worker must be >= 1, got {threads}")
        self.threads = threads
        self.on_idle: Callable[[], None] | None = None

    def idle(self) -> None:
        if self.on_idle is not None:
            self.on_idle()

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
            failed: dict[str, TaskFailure] = {}
            pending = list(tasks)
            while pending:
                task = next(t for t in pending if set(t.depends_on) <= done)
                pending.remove(task)
                result = failed_dependency(task, failed)
                if result is None:
                    try:
                        result = task.fn(*task.args)
                    except Exception as exc:  # recorded; the other tasks go on
                        result = TaskFailure.from_exception(exc)
                if isinstance(result, TaskFailure):
                    failed[task.key] = result
                done.add(task.key)
                yield task, result
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


class LocalPoolExecutor(Executor):
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each."""

    polls = True

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
            done: set[str] = set()
            failed: dict[str, TaskFailure] = {}
            pending = list(tasks)
            running: dict[cf.Future, Task] = {}
            while pending or running:
                for task in [t for t in pending if set(t.depends_on) <= done]:
                    pending.remove(task)
                    skipped = failed_dependency(task, failed)
                    if skipped is not None:
                        failed[task.key] = skipped
                        done.add(task.key)
                        yield task, skipped
                    else:
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
                    if isinstance(result, TaskFailure):
                        failed[task.key] = result
                    done.add(task.key)
                    yield task, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> str:
        return f"local pool of {self.workers} processes, {self.threads} torch thread{'s' if self.threads > 1 else ''} each"


EXECUTOR_KINDS = ("local", "slurm", "ray")
EXECUTOR_OPTIONS = {
    "local": (),
    "slurm": ("folder", "partition", "time", "mem", "gpus", "cpus", "job_name", "poll_s", "squeue_s", "result_grace_s", "extra"),
    "ray": ("address", "gpus", "cpus", "local_cpus", "init_options"),
}


def create_executor(workers: int = 1, threads: int = 1, modules: Sequence[str] = (), *, kind: str = "local", **options: Any) -> Executor:
    """An executor by ``kind``; every task imports the run-time plugin ``modules`` first.

    ``local``: in-process for one worker, a process pool of ``workers`` for more, ``threads``
    torch threads each. ``slurm`` (:class:`uadbench.cluster.SlurmExecutor`): one job per task with
    ``cpus`` CPUs (default ``threads``) and as many torch threads; ``gpus``, ``partition``,
    ``time``, ``mem``, ``folder``. ``ray`` (:class:`uadbench.cluster.RayExecutor`): ``address``
    of a running cluster, or none for a local one on 127.0.0.1 of ``workers`` x ``cpus`` CPUs (all
    CPUs for one worker); ``cpus`` (default ``threads``) and ``gpus`` per task. The cluster module
    and its optional packages are imported only for those kinds.
    """
    if kind not in EXECUTOR_KINDS:
        raise UadbenchError(f"unknown executor {kind!r}; choose one of: {', '.join(EXECUTOR_KINDS)}")
    unknown = sorted(set(options) - set(EXECUTOR_OPTIONS[kind]))
    if unknown:
        valid = ", ".join(EXECUTOR_OPTIONS[kind]) or "none"
        raise UadbenchError(f"the {kind} executor has no option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; valid: {valid}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UadbenchError(f"workers must be >= 1, got {workers}")
    if kind == "local":
        return SerialExecutor(threads) if workers == 1 else LocalPoolExecutor(workers, threads, modules)
    from uadbench import cluster

    cpus = options.pop("cpus", None)
    per_task = threads if cpus is None else cpus
    if kind == "slurm":
        return cluster.SlurmExecutor(per_task, modules=modules, **options)
    if options.get("address") is None and "local_cpus" not in options and workers > 1:
        options["local_cpus"] = workers * per_task
    return cluster.RayExecutor(per_task, modules=modules, **options)
