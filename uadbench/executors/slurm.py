"""The Slurm executor: the runner's task graph as job arrays, through submitit.

The submitting process alone writes results and MLflow; the jobs read and write the run's cache,
which must be on a filesystem every node sees. A task that fails yields a
:class:`~uadbench.executors.TaskFailure` (its error line, and the job's log tail as its
traceback), the tasks that depend on it yield one without ever reaching Slurm, and the others go on.

**How tasks reach Slurm.** A task is submitted once every task it depends on has succeeded, so no
job waits in Slurm's queue on a dependency and a failed fit leaves none of its evaluations behind.
Tasks that are ready together go in as job arrays of at most ``array_size`` tasks (default 500,
below Slurm's default ``MaxArraySize`` of 1001), one ``sbatch`` per array, and at most
``max_queued`` of the run's jobs (default 1000) are in the queue at once; the rest wait in the
submitter, which submits more as jobs finish. Tasks that others wait for go first: every fit
before the evaluations, and a fit that another fit reuses before the rest.

Each job asks for ``cpus`` CPUs and runs torch with that many threads; ``gpus`` per job,
``partition``, ``time`` and ``mem`` as given (unset ones take the partition's defaults). Scripts,
pickles and logs go to ``folder``, which is made private (mode 0700) and must belong to the
submitting user; a result pickle that belongs to anyone else is never unpickled. Progress comes
from the result files submitit writes; ``squeue`` tells which jobs still wait and notices jobs
that ended without a result (killed, timed out, out of memory), so the cluster needs no
accounting database. Jobs still queued when the run stops (an interrupt, an error in the caller)
are cancelled.

The optional package: ``pip install 'uadbench[slurm]'``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from uadbench.errors import UadbenchError
from uadbench.executors.base import (
    GraphState,
    Task,
    TaskFailure,
    check_graph,
    failed_dependency,
    priority_order,
    register_executor,
)
from uadbench.executors.remote import RemoteExecutor, count, error_line, module_roots, require, run_with_threads, tail

ARRAY_SIZE = 500  # tasks per job array (Slurm's default MaxArraySize is 1001)
MAX_QUEUED = 1000  # jobs of one run in Slurm's queue at once (queued or running)

# -- option values (shared by the CLI and the grid's [executor] table) ---------------------------
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^(\d+)\s*([KMGT]?)B?$", re.IGNORECASE)


def parse_slurm_time(value: str | int) -> int:
    """A Slurm time limit (``90``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM[:SS]``) in whole minutes."""
    text = str(value).strip()
    match = None if isinstance(value, bool) else _TIME.match(text)
    if match is None:
        raise UadbenchError(f"slurm time {value!r} is not a Slurm time limit: use minutes (90), HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif len(parts) == 3:  # HH:MM:SS
        total = parts[0] * 3600 + parts[1] * 60 + parts[2]
    else:  # MM or MM:SS
        total = parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)
    if total <= 0:
        raise UadbenchError(f"slurm time {value!r} must be longer than zero")
    return math.ceil(total / 60)


def parse_slurm_mem(value: str | int) -> str:
    """Memory per job as Slurm writes it: ``16G``, ``500M`` (a bare number is megabytes)."""
    match = None if isinstance(value, bool) else _MEM.match(str(value).strip())
    if match is None or int(match.group(1)) == 0:
        raise UadbenchError(f"slurm memory {value!r} is not a size: use a whole number with K, M, G or T (16G, 500M)")
    return f"{int(match.group(1))}{match.group(2).upper() or 'M'}"


def private_folder(folder: Path, *, create: bool) -> None:
    """Refuse ``folder`` unless it is a directory of this user (or absent); with ``create``, make
    it (mode 0700), or take group and other permissions off an existing one. Another user who can
    write there could swap a pickle that the submitter or a job unpickles."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        if not create:
            return
        folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise UadbenchError(f"slurm job folder {folder} is not a directory")
    if info.st_uid != os.getuid():
        raise UadbenchError(f"slurm job folder {folder} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()}); "
                            "its pickles must be private: choose another run folder (--out)")
    if create and info.st_mode & 0o077:
        os.chmod(folder, 0o700)


_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
           "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


@register_executor("slurm", "a Slurm cluster through submitit: ready tasks as job arrays (pip install 'uadbench[slurm]')")
class SlurmExecutor(RemoteExecutor):
    """Ready tasks as Slurm job arrays of at most ``array_size``, at most ``max_queued`` jobs queued.

    ``cpus`` per job (and as many torch threads), ``gpus`` per job, ``partition``, ``time``
    (minutes or ``[D-]HH:MM:SS``) and ``mem`` (``16G``). ``folder`` holds submitit's scripts,
    pickles and logs (made 0700); like the cache it must be on the shared filesystem. ``modules``:
    run-time plugin modules every job imports first (see :func:`uadbench.registry.runtime_modules`).
    """

    options: ClassVar[tuple[str, ...]] = ("folder", "partition", "time", "mem", "gpus", "cpus", "job_name", "array_size", "max_queued",
                                          "poll_s", "squeue_s", "result_grace_s", "extra")

    def __init__(self, cpus: int = 1, *, folder: str | os.PathLike | None = None, partition: str | None = None,
                 time: str | int | None = None, mem: str | int | None = None, gpus: int = 0, modules: Sequence[str] = (),
                 job_name: str = "uadbench", array_size: int = ARRAY_SIZE, max_queued: int = MAX_QUEUED, poll_s: float = 1.0,
                 squeue_s: float = 5.0, result_grace_s: float = 30.0, squeue_patience_s: float = 900.0,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(count(cpus, "slurm cpus per job", 1))
        require("submitit", "slurm", "slurm")
        missing = [c for c in ("sbatch", "squeue", "scancel", "srun") if shutil.which(c) is None]
        if missing:
            raise UadbenchError(f"the slurm executor needs {', '.join(missing)} on PATH: run it on a Slurm submit (login) node")
        if partition is not None and (not isinstance(partition, str) or not partition.strip()):
            raise UadbenchError(f"slurm partition must be a non-empty name, got {partition!r}")
        self.folder = Path(folder if folder is not None else "uadbench-slurm").absolute()
        private_folder(self.folder, create=False)  # another user's folder is refused before anything is written
        self.partition = partition
        self.time_min = None if time is None else parse_slurm_time(time)
        self.mem = None if mem is None else parse_slurm_mem(mem)
        self.gpus = count(gpus, "slurm gpus per job", 0)
        self.array_size = count(array_size, "slurm array size", 1)
        self.max_queued = count(max_queued, "slurm jobs queued at once", 1)
        self.modules = tuple(modules)
        self.job_name = job_name
        self.poll_s, self.squeue_s, self.result_grace_s, self.squeue_patience_s = poll_s, squeue_s, result_grace_s, squeue_patience_s
        self.extra = dict(extra or {})

    def sbatch_parameters(self) -> dict[str, Any]:
        """The submitit parameters of every job."""
        params: dict[str, Any] = {
            "job_name": self.job_name,
            "nodes": 1,
            "ntasks_per_node": 1,
            "cpus_per_task": self.threads,
            "time": self.time_min,  # None: the partition's default
            "setup": [f"export OMP_NUM_THREADS={self.threads} MKL_NUM_THREADS={self.threads}"],
            "array_parallelism": self.array_size,  # every task of an array may run at once
        }
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        if self.partition:
            params["partition"] = self.partition
        if self.mem:
            params["mem"] = self.mem
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        return params

    def _submit(self, executor: Any, tasks: Sequence[Task], roots: tuple[str, ...], cwd: str) -> dict[str, Any]:
        """``tasks`` as one job array (one job for one task); the submitit job of each task key."""
        try:
            with executor.batch():
                submitted = [executor.submit(run_with_threads, self.threads, t.fn, t.args, self.modules, roots, cwd) for t in tasks]
        except Exception as exc:  # sbatch refused (unknown partition, limits, ...): say what it said
            sbatch = [line for line in str(exc).splitlines() if "sbatch: error" in line]
            raise UadbenchError(f"Slurm refused the jobs: {sbatch[-1].strip() if sbatch else error_line(str(exc), repr(exc))}") from exc
        return {task.key: job for task, job in zip(tasks, submitted)}

    def _queue(self) -> dict[str, str] | str:
        """The state of each of this user's jobs that Slurm still lists, or why squeue failed."""
        command = ["squeue", "--noheader", "--array", f"--user={os.getuid()}", "--format=%i %T"]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if out.returncode:
            return f"`{' '.join(command)}` failed ({out.returncode}): {(out.stderr or out.stdout).strip()}"
        return {parts[0]: parts[1] for line in out.stdout.splitlines() if len(parts := line.split()) >= 2}

    def _logs(self, job: Any) -> str:
        logs = [f"--- {p}\n{text}" for p in (job.paths.stderr, job.paths.stdout) if (text := tail(p))]
        return "\n".join(logs) or f"(no log for job {job.job_id} in {self.folder})"

    def _finished(self, job: Any) -> tuple[Any] | TaskFailure | None:
        """``(result,)`` or a failure once the job's result file is there; None before."""
        path = job.paths.result_pickle
        try:
            owner = path.stat().st_uid
        except FileNotFoundError:
            return None
        if owner != os.getuid():
            return TaskFailure(f"the result of Slurm job {job.job_id} belongs to uid {owner}, not to this user: not unpickled", str(path))
        from submitit.core.utils import pickle_load

        outcome, value = pickle_load(path)
        if outcome == "success":
            return (value,)
        trace = str(value)
        return TaskFailure(error_line(trace, "the job failed"), f"Slurm job {job.job_id}\n{trace}\n{self._logs(job)}")

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        check_graph(tasks)
        if not tasks:
            return
        import submitit

        private_folder(self.folder, create=True)
        executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=0)
        executor.update_parameters(**self.sbatch_parameters())
        roots, cwd = module_roots(self.modules), os.getcwd()
        waiting = sorted(tasks, key=priority_order(tasks))  # not submitted yet; what others wait for first
        jobs: dict[str, Any] = {}  # submitted, no outcome yet
        by_key = {t.key: t for t in tasks}
        queued: set[str] = set()  # tasks whose job squeue last showed PENDING: no result to look for yet
        gone_since: dict[str, float] = {}
        state = GraphState()
        last_squeue = last_idle = queue_ok = time.monotonic()
        try:
            while waiting or jobs:
                progressed = False
                # 1. a task whose dependency failed never reaches Slurm
                for task in list(waiting):
                    skipped = failed_dependency(task, state.failed)
                    if skipped is not None:
                        waiting.remove(task)
                        progressed = True
                        yield state.finish(task, skipped)
                # 2. ready tasks as job arrays, while the queue has room
                ready = [t for t in waiting if state.ready(t)][:max(0, self.max_queued - len(jobs))]
                for start in range(0, len(ready), self.array_size):
                    chunk = ready[start:start + self.array_size]
                    jobs.update(self._submit(executor, chunk, roots, cwd))
                    queued |= {t.key for t in chunk}
                submitted = {t.key for t in ready}
                waiting = [t for t in waiting if t.key not in submitted]
                # 3. which jobs still wait, and which left the queue
                queue = None
                if time.monotonic() - last_squeue >= self.squeue_s:
                    last_squeue, answer = time.monotonic(), self._queue()
                    if isinstance(answer, str):  # Slurm unreachable: read result files meanwhile, but not forever
                        queued.clear()
                        if time.monotonic() - queue_ok > self.squeue_patience_s:
                            raise UadbenchError(f"Slurm has not answered for {self.squeue_patience_s:.0f} s: {answer}")
                    else:
                        queue, queue_ok = answer, time.monotonic()
                        queued = {key for key, job in jobs.items() if queue.get(job.job_id) == "PENDING"}
                # 4. outcomes from the result files
                for key, job in list(jobs.items()):
                    if key in queued:
                        continue
                    result = self._finished(job)
                    if result is None and queue is not None:
                        status = queue.get(job.job_id, "GONE")
                        if status in _ACTIVE:
                            gone_since.pop(key, None)
                        elif time.monotonic() - gone_since.setdefault(key, time.monotonic()) > self.result_grace_s:
                            what = "left the queue" if status == "GONE" else f"ended in state {status}"
                            result = TaskFailure(f"Slurm job {job.job_id} {what} without a result (time limit, memory, "
                                                 f"node failure or scancel?)", self._logs(job))
                    if result is None:
                        continue
                    del jobs[key]
                    progressed = True
                    yield state.finish(by_key[key], result if isinstance(result, TaskFailure) else result[0])
                if (waiting or jobs) and not progressed:
                    if time.monotonic() - last_idle >= self.idle_every:
                        last_idle = time.monotonic()
                        self.idle()
                    time.sleep(self.poll_s)
        finally:
            self._cancel([job.job_id for job in jobs.values() if not job.paths.result_pickle.exists()])

    @staticmethod
    def _cancel(job_ids: Sequence[str]) -> None:
        if job_ids:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)

    def describe(self) -> str:
        limits = [f"partition {self.partition}" if self.partition else "default partition",
                  f"{self.threads} cpu{'s' if self.threads > 1 else ''}", f"{self.gpus} gpu{'s' if self.gpus != 1 else ''}"]
        if self.time_min:
            limits.append(f"{self.time_min} min")
        if self.mem:
            limits.append(f"{self.mem} memory")
        return f"slurm, job arrays of up to {self.array_size} ready tasks ({', '.join(limits)}; logs in {self.folder})"
