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
from uadbench.errors import UadbenchError
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


class ReusingMethod(Method):
    """A method that trains nothing of its own and builds on a fitted ``base_method`` (another
    registered method): :meth:`dependencies` names it, so the runner fits or loads it and hands it to
    ``fit`` in ``ctx.dependencies``; standalone, ``fit`` fits one itself with the same context.

    The Config holds ``base_preset`` and ``base_overrides`` (sorted pairs,
    :func:`uadbench.config.normalise_overrides`). The fitted base is ``self.base``; the checkpoint
    holds its state under the base method's name, and :meth:`modules` lists its modules under that
    prefix.
    """

    base_method: ClassVar[str]

    def __init__(self, config: Any, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        self.base: Method | None = None

    @classmethod
    def dependencies(cls, config: Any) -> dict[str, tuple[str, dict[str, Any]]]:
        return {cls.base_method: (config.base_preset, dict(config.base_overrides))}

    def new_base(self) -> Method:
        """An unfitted base method with this config's ``base_preset`` and ``base_overrides``."""
        h, w = self.image_shape
        return create_method(self.base_method, self.config.base_preset, image_shape=(h, w), **dict(self.config.base_overrides))

    def fit(self, train: Any, val: Any, ctx: FitContext) -> None:
        name, base_name = self.registered_name, self.base_method
        base = ctx.dependencies.get(base_name)
        if base is None:  # standalone: fit the base here
            ctx.progress(f"{name}: no fitted {base_name} handed over; fitting one")
            base = self.new_base()
            base.fit(train, val, ctx)
        if tuple(base.image_shape) != tuple(self.image_shape):
            raise UadbenchError(f"the {base_name} was fitted on {base.image_shape} slices, {name} expects {self.image_shape}")
        self.base = base

    def require_base(self) -> Method:
        """The fitted base method (an error naming what to call before it is there)."""
        if self.base is None:
            raise UadbenchError(f"{self.registered_name} has no {self.base_method} yet: call fit or load_state_dict first")
        return self.base

    def state_dict(self) -> dict[str, Any]:
        return {self.base_method: self.require_base().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.base_method not in state:
            raise UadbenchError(f"a {self.registered_name} checkpoint must hold the {self.base_method!r} state it builds on")
        base = self.new_base()
        base.load_state_dict(state[self.base_method])
        self.base = base

    def modules(self) -> dict[str, torch.nn.Module]:
        if self.base is None:
            return {}
        return {f"{self.base_method}.{k}": v for k, v in self.base.modules().items()}

    def to(self, device: torch.device | str) -> ReusingMethod:
        if self.base is not None:
            self.base.to(device)
        return self


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


__all__ = ["AnomalyOutput", "FitContext", "Method", "ReconstructionMethod", "ReusingMethod", "create_config", "create_method", "method_class"]
