"""Training checkpoints: a long fit resumes where it stopped, with the same numbers.

:func:`uadbench.training.train_loop` saves, every ``every`` steps and at its last step, all that
decides the rest of the loop: the modules' states (parameters and buffers), the optimiser, the
step, the fit's generator and torch's global random state, the batch stream's buffer, the losses
and the metrics logged so far. Resuming restores all of it, so a resumed fit equals an
uninterrupted one with the same seed, bit for bit on the CPU. A loop that finished is skipped on
resume (its last checkpoint holds its end state), so a fit of several stages resumes in the stage
it was in. Files are written atomically with their sha256 beside them and read with
``weights_only=True``; a checkpoint that no longer matches its sha256 is moved aside as
``<name>.pt.corrupt`` (one line says so) and its loop starts again from the beginning.

    <cache>/work/<fit key>/<loop name>.pt
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uadbench.files import atomic_path, read_entry, record_digest


@dataclass
class Checkpointer:
    """Where a fit's training loops save and find their checkpoints."""

    directory: Path
    every: int = 500  # steps between checkpoints (0: never)
    # the method's modules, saved when a loop is not told which modules it trains
    modules: Callable[[], dict[str, torch.nn.Module]] = dict
    history: list = field(default_factory=list)  # the fit's logged metrics, kept across a resume

    def path(self, name: str) -> Path:
        return self.directory / f"{name.replace('/', '_')}.pt"

    def due(self, step: int, steps: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == steps)

    def save(self, name: str, state: dict[str, Any]) -> None:
        state = {**state, "history": [[int(s), dict(m)] for s, m in self.history]}
        with atomic_path(self.path(name), suffix=".pt") as tmp:
            torch.save(state, tmp)
        record_digest(self.path(name))

    def load(self, name: str) -> dict[str, Any] | None:
        state = read_entry(self.path(name), lambda p: torch.load(p, map_location="cpu", weights_only=True), what="training checkpoint")
        if state is None:
            return None
        self.history[:] = [(int(s), dict(m)) for s, m in state.pop("history", [])]
        return state

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def random_state(generator: torch.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_random_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
