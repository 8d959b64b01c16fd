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

from collections.abc import Sequence
from typing import Any

from uadbench.errors import UadbenchError
from uadbench.executors.base import Executor, Task, TaskFailure, check_graph, failed_dependency, set_torch_threads
from uadbench.executors.local import LocalPoolExecutor, SerialExecutor, die_with_parent

__all__ = [
    "EXECUTOR_KINDS", "EXECUTOR_OPTIONS", "Executor", "LocalPoolExecutor", "SerialExecutor", "Task", "TaskFailure",
    "check_graph", "create_executor", "die_with_parent", "failed_dependency", "set_torch_threads",
]


EXECUTOR_KINDS = ("local", "slurm", "ray")
EXECUTOR_OPTIONS = {
    "local": (),
    "slurm": ("folder", "partition", "time", "mem", "gpus", "cpus", "job_name", "poll_s", "squeue_s", "result_grace_s", "extra"),
    "ray": ("address", "gpus", "cpus", "local_cpus", "init_options"),
}


def create_executor(workers: int = 1, threads: int = 1, modules: Sequence[str] = (), *, kind: str = "local", **options: Any) -> Executor:
    """An executor by ``kind``; every task imports the run-time plugin ``modules`` first.

    ``local``: in-process for one worker, a process pool of ``workers`` for more, ``threads``
    torch threads each. ``slurm`` (:class:`uadbench.executors.cluster.SlurmExecutor`): one job per task with
    ``cpus`` CPUs (default ``threads``) and as many torch threads; ``gpus``, ``partition``,
    ``time``, ``mem``, ``folder``. ``ray`` (:class:`uadbench.executors.cluster.RayExecutor`): ``address``
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
    from uadbench.executors import cluster

    cpus = options.pop("cpus", None)
    per_task = threads if cpus is None else cpus
    if kind == "slurm":
        return cluster.SlurmExecutor(per_task, modules=modules, **options)
    if options.get("address") is None and "local_cpus" not in options and workers > 1:
        options["local_cpus"] = workers * per_task
    return cluster.RayExecutor(per_task, modules=modules, **options)
