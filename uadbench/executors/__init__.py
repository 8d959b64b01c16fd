"""How jobs run: one interface over a graph of tasks, on this machine or on a cluster.

The runner hands an executor a list of :class:`Task` s, each naming the tasks it depends on (a
fit that reuses another fit; the evaluation of a fit). :meth:`Executor.run` starts a task once
every task it depends on has finished and yields ``(task, result)`` pairs as tasks finish, so the
caller can write results as they come. A task that raises yields a :class:`TaskFailure` instead
of a result, the tasks that depend on it yield one without running, and every other task goes on.

Executors are registered by name like methods (``@register_executor("slurm")`` on the class, its
module declared in the ``uadbench.executors`` entry-point group): ``local``
(:mod:`~uadbench.executors.local`: in-process, or a pool of worker processes that die with the
process that started them), ``slurm`` (:mod:`~uadbench.executors.slurm`, job arrays through
submitit) and ``ray`` (:mod:`~uadbench.executors.ray`). An executor of one's own is one module
with an :class:`Executor` subclass plus one entry-point line; ``uadbench list executors`` shows
what is installed.

Every executor runs torch with the same number of threads per task, so a grid gives the same
numbers whichever executor runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uadbench.errors import UadbenchError
from uadbench.executors.base import (
    Executor,
    Task,
    TaskFailure,
    check_graph,
    failed_dependency,
    register_executor,
    set_torch_threads,
)
from uadbench.executors.local import LocalPoolExecutor, SerialExecutor, die_with_parent
from uadbench.registry import EXECUTORS

__all__ = [
    "EXECUTORS", "Executor", "LocalPoolExecutor", "SerialExecutor", "Task", "TaskFailure", "check_graph", "create_executor",
    "die_with_parent", "executor_options", "failed_dependency", "list_executors", "register_executor", "set_torch_threads",
]


def list_executors(pattern: str = "*") -> list[str]:
    """The registered executor kinds matching a shell-style ``pattern``."""
    return EXECUTORS.names(pattern)


def executor_options(kind: str) -> tuple[str, ...]:
    """The keyword options ``create_executor(kind=kind, ...)`` accepts; an unknown kind is one line
    with the closest names ("did you mean ...")."""
    return tuple(_executor_class(kind).options)


def _executor_class(kind: str) -> type[Executor]:
    cls = EXECUTORS.get(kind)
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise UadbenchError(f"executor {kind!r} is registered as {cls!r}, which is not a subclass of uadbench.executors.Executor")
    return cls


def create_executor(workers: int = 1, threads: int = 1, modules: Sequence[str] = (), *, kind: str = "local", **options: Any) -> Executor:
    """The registered executor ``kind``; every task imports the run-time plugin ``modules`` first.

    ``local``: in-process for one worker, a process pool of ``workers`` for more, ``threads``
    torch threads each. ``slurm`` (:class:`uadbench.executors.slurm.SlurmExecutor`): job arrays
    of ready tasks with ``cpus`` CPUs each (default ``threads``) and as many torch threads;
    ``gpus``, ``partition``, ``time``, ``mem``, ``folder``, ``array_size``, ``max_queued``.
    ``ray`` (:class:`uadbench.executors.ray.RayExecutor`): ``address`` of a running cluster (else
    ``RAY_ADDRESS``), or none for a local one on 127.0.0.1 of ``workers`` x ``cpus`` CPUs (all
    CPUs for one worker); ``cpus`` (default ``threads``) and ``gpus`` per task. The optional
    packages of slurm and ray are imported only when one of them is built.
    """
    valid = executor_options(kind)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UadbenchError(f"the {kind} executor has no option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"valid: {', '.join(valid) or 'none'}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UadbenchError(f"workers must be >= 1, got {workers}")
    return _executor_class(kind).create(workers, threads, tuple(modules), **options)
