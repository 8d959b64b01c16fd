"""The Method contract every anomaly-detection method meets.

A method sees healthy image slices only. The harness owns data loading, preprocessing,
post-processing, thresholds and metrics; a method owns its model and its training loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from uadbench.checkpoints import Checkpointer
from uadbench.config import create_config
from uadbench.registry import METHODS


@dataclass(frozen=True)
class AnomalyOutput:
    """What ``Method.predict`` returns for a batch of slices."""

    anomaly_map: Tensor  # (B,1,H,W), higher = more anomalous, same grid as the input
    reconstruction: Tensor | None = None  # (B,1,H,W) when the method reconstructs


def _no_log(metrics: dict[str, float], step: int) -> None:
    return None


def _no_progress(message: str) -> None:
    return None


@dataclass
class FitContext:
    """Everything a method's ``fit`` may use from the harness."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    seed: int = 0
    max_steps: int | None = None  # overrides the config's step budget when set
    log_metrics: Callable[[dict[str, float], int], None] = _no_log
    progress: Callable[[str], None] = _no_progress
    # fitted methods this one builds on (see Method.dependencies), by registered name
    dependencies: dict[str, Method] = field(default_factory=dict)
    # where training loops save checkpoints and resume from (None: no checkpoints)
    checkpoint: Checkpointer | None = None
    # training arithmetic: "fp32", "bf16" (autocast) or "fp16" (autocast and a gradient scaler)
    precision: str = "fp32"
    # compile the networks that dominate a step with torch.compile (methods that support it)
    compile: bool = False


class Method(ABC):
    """Base class of every registered method.

    Subclasses define ``Config`` (a frozen dataclass whose defaults are the paper's values) and
    ``presets`` (at least "paper", "cpu" and "smoke": the field values that differ from the
    defaults). The harness builds them through :func:`create_method`.
    """

    Config: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu": {}, "smoke": {}}
    # True: ``predict`` must receive every axial slice of one volume, in order, as one batch
    # (the runner then ignores the grid's eval_batch_size for this method)
    whole_volume: ClassVar[bool] = False
    # the method's own version: raise it when a change to the code changes its numbers (part of every fit key)
    version: ClassVar[str] = "1"
    registered_name: ClassVar[str] = ""

    def __init__(self, config: Any, *, image_shape: tuple[int, int]) -> None:
        self.config = config
        self.image_shape = tuple(int(s) for s in image_shape)

    @classmethod
    def dependencies(cls, config: Any) -> dict[str, tuple[str, dict[str, Any]]]:
        """Other registered methods this one reuses, as {name: (preset, overrides)}.

        The runner fits (or loads from its cache) each of them on the same training data, seed and
        grid, and hands the fitted instances to ``fit`` as ``ctx.dependencies[name]``. A method
        that trains on its own returns {} (the default).
        """
        return {}

    @abstractmethod
    def fit(self, train: Any, val: Any, ctx: FitContext) -> None:
        """Train on healthy slices. ``train``/``val`` are :class:`uadbench.data.SliceDataset`."""

    @abstractmethod
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        """Anomaly maps for a batch of slices (B,1,H,W) in [0,1]."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to predict after a restart (tensors and plain values only)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # -- conveniences shared by all methods ---------------------------------------------------
    def to(self, device: torch.device | str) -> Method:
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.to(device)
        return self

    def modules(self) -> dict[str, torch.nn.Module]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.nn.Module)}

    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.modules().values() for p in m.parameters())


class ReconstructionMethod(Method):
    """A method whose anomaly map is the absolute residual ``|x - reconstruct(x)|``."""

    @abstractmethod
    def reconstruct(self, images: Tensor, *, generator: torch.Generator) -> Tensor: ...

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        recon = self.reconstruct(images, generator=generator)
        return AnomalyOutput(anomaly_map=(images - recon).abs(), reconstruction=recon)


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def create_method(
    name: str,
    preset: str = "paper",
    *,
    image_shape: tuple[int, int] = (96, 96),
    config: Any = None,
    **overrides: Any,
) -> Method:
    """Build a registered method from a preset and overrides (unknown keys are rejected), or
    from a ready ``config`` (as a grid's FitJob holds it)."""
    if config is not None and overrides:
        raise TypeError("create_method takes either config or overrides, not both")
    if config is None:
        config = create_config(name, preset, overrides)
    return method_class(name)(config, image_shape=image_shape)


__all__ = ["AnomalyOutput", "FitContext", "Method", "ReconstructionMethod", "create_config", "create_method", "method_class"]
