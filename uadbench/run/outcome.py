"""What a grid's tasks gave so far, gathered in the grid's own process as the tasks finish."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uadbench.executors import Task, TaskFailure
from uadbench.grid import FitJob
from uadbench.progress import GridProgress
from uadbench.records import Failure, ResultRecord, ResultsFile
from uadbench.run.cells import EvalContext
from uadbench.run.live import LiveReader, step_of


@dataclass
class Outcome:
    """What a grid's tasks gave so far: fit metas, records (written as they come) and failures."""

    results: ResultsFile
    tracker: Any
    ectx: EvalContext
    live: LiveReader
    fits: list[FitJob] = field(default_factory=list)
    bar: GridProgress | None = None
    # how records name their subjects before anything is written or logged (pseudonyms by default)
    name_subjects: Callable[[ResultRecord], ResultRecord] = lambda record: record
    log_examples: bool = False  # each cell's example volume to MLflow too (by default it stays in the cache)
    fit_metas: dict[str, dict] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    streamed: dict[str, set[int]] = field(default_factory=dict)  # history rows already on each fit's MLflow run

    def poll(self) -> None:
        """Read what running fits logged since the last poll: metrics to MLflow, steps to the bars."""
        for job in self.fits:
            if job.key in self.fit_metas:
                continue
            for entry in self.live.read(job.key):
                if "metrics" in entry:
                    self.tracker.log_live(job, [(entry["step"], entry["metrics"])])
                    self.streamed.setdefault(job.key, set()).add(entry["i"])
                elif self.bar is not None and (at := step_of(entry["msg"])) is not None:
                    self.bar.fit(job.key, f"{job.method.display} seed {job.seed}", *at)

    def take(self, task: Task, result: Any) -> str:
        """Record one finished task; returns a line that names it."""
        job, kind = task.args[0], task.key.split(":")[0]
        if kind == "fit":
            self.poll()
            if self.bar is not None:
                self.bar.fit_done(job.key)
            self.live.forget(job.key)
        if isinstance(result, TaskFailure):
            if kind == "eval" and result.dependency is not None:  # its fit's failure is recorded already
                return f"{kind} {job.method.display} seed {job.seed} not run"
            self.failures.append(Failure(kind, job.method.display, job.seed, result.error, "" if kind == "fit" else "all cells"))
        elif kind == "fit":
            self.fit_metas[job.key] = result
            self.tracker.log_fit(job, result, self.streamed.pop(job.key, set()))
        else:
            self.failures += [item for item, _ in result if isinstance(item, Failure)]
            done = [(self.name_subjects(item), cached) for item, cached in result if isinstance(item, ResultRecord)]
            self.results.add(rec for rec, _ in done)
            for rec, cached in done:
                self.tracker.log_cell(rec, cached, self.ectx.example_dir(rec.eval_key) if self.log_examples else None)
        return f"{kind} {job.method.display} seed {job.seed}" + (" FAILED" if isinstance(result, TaskFailure) else "")
