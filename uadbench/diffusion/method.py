"""What the diffusion methods (``ddpm``, ``pddpm``, ``cddpm``) share as methods.

The configuration fields they share (``DiffusionConfig``, defaults from the reference code,
METHOD_SPEC.md §1.2, §1.5, §1.6, §7), building the UNet and the process from it, the shared
``cpu`` and ``smoke`` presets, the fit (:func:`fit_diffusion`) with its optional checkpoint
selection on the validation loss, and the :class:`DiffusionReconstruction` mixin that turns a
:class:`~uadbench.diffusion.model.DiffusionModel` into a ``ReconstructionMethod``.

This is the one module of :mod:`uadbench.diffusion` that knows the Method contract and the
training loop; the rest of the folder is the diffusion maths and the model.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import torch
from torch import Tensor

from uadbench.diffusion.model import DiffusionModel
from uadbench.diffusion.noise import create_noise
from uadbench.diffusion.process import DiffusionProcess
from uadbench.diffusion.regions import NoisingStrategy, WholeImage
from uadbench.diffusion.schedule import NoiseSchedule
from uadbench.errors import ConfigError
from uadbench.method import FitContext
from uadbench.nn.unet import DiffusionUNet
from uadbench.nn.utils import eval_mode, module_device
from uadbench.training import train_loop

if TYPE_CHECKING:
    from uadbench.data.slices import SliceDataset

# Shared by the three diffusion methods. On the 64x64 cpu grid, one idle thread: a step takes about
# 0.46 s (ddpm), 0.48 s (pddpm), 0.62 s (cddpm), so 300 steps take 2.3-3.1 min
# (benchmarks/test_bench_diffusion.py).
CPU_PRESET: dict[str, Any] = {
    "base_channels": 16,
    "num_res_blocks": 1,
    "num_head_channels": 32,
    "batch_size": 16,
    "lr": 1e-3,
    "steps": 300,
}
SMOKE_PRESET: dict[str, Any] = {
    "base_channels": 8,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "batch_size": 4,
    "lr": 1e-3,
    "steps": 3,
}


@dataclass(frozen=True)
class DiffusionConfig:
    """Fields shared by the diffusion methods; defaults are the reference code's values."""

    # UNet (§1.2)
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 3
    num_head_channels: int = 64
    dropout: float = 0.0
    # diffusion (§1.5)
    timesteps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    noise: Literal["simplex", "gaussian"] = "simplex"
    simplex_octaves: int = 6
    simplex_persistence: float = 0.8
    simplex_frequency: float = 64.0
    # test time (§1.6); timesteps counted from 1 as in the reference (t_test=500 -> index 499)
    t_test: int = 500
    ensemble: bool = False
    ensemble_t: tuple[int, ...] = (250, 500, 750)
    ddim_steps: int = 0  # 0: single-step x0 estimate (paper); n > 0: DDIM chain of n steps
    # training (§7)
    steps: int = 19200
    batch_size: int = 32
    lr: float = 1e-4
    val_every: int = 0  # > 0: keep the weights with the lowest validation loss, checked this often

    def __post_init__(self) -> None:
        for name in ("base_channels", "num_res_blocks", "timesteps", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult must be positive integers, got {self.channel_mult}")
        for t in (self.t_test, *self.ensemble_t):
            if not 1 <= t <= self.timesteps:
                raise ConfigError(f"test timesteps must lie in [1, {self.timesteps}], got {t}")
        if self.ensemble and not self.ensemble_t:
            raise ConfigError("ensemble=True needs at least one timestep in ensemble_t")
        if self.ddim_steps < 0 or self.lr <= 0 or self.val_every < 0:
            raise ConfigError("ddim_steps and val_every must be >= 0 and lr > 0")

    @property
    def test_indices(self) -> tuple[int, ...]:
        """0-based schedule indices used at test time."""
        return tuple(t - 1 for t in (self.ensemble_t if self.ensemble else (self.t_test,)))


def build_unet(config: DiffusionConfig, cond_dim: int | None = None) -> DiffusionUNet:
    return DiffusionUNet(
        base_channels=config.base_channels,
        channel_mult=config.channel_mult,
        num_res_blocks=config.num_res_blocks,
        num_head_channels=config.num_head_channels,
        dropout=config.dropout,
        cond_dim=cond_dim,
    )


def build_process(config: DiffusionConfig, strategy: NoisingStrategy | None = None) -> DiffusionProcess:
    noise = create_noise(
        config.noise,
        octaves=config.simplex_octaves,
        persistence=config.simplex_persistence,
        frequency=config.simplex_frequency,
    )
    return DiffusionProcess(
        schedule=NoiseSchedule.create(config.schedule, config.timesteps),
        noise=noise,
        strategy=strategy or WholeImage(),
    )


def check_image_shape(image_shape: tuple[int, ...], config: DiffusionConfig) -> None:
    factor = 2 ** (len(config.channel_mult) - 1)
    if len(image_shape) != 2 or any(s % factor for s in image_shape):
        raise ConfigError(
            f"image shape {tuple(image_shape)} must be two sides divisible by {factor} "
            f"(2 ** (len(channel_mult) - 1) for channel_mult={config.channel_mult})"
        )


@torch.no_grad()
def validation_loss(model: DiffusionModel, val: SliceDataset, seed: int, batch_size: int) -> float:
    """L1 diffusion loss on one fixed random slice per validation volume (fixed t and noise)."""
    gen = torch.Generator().manual_seed(seed)
    images = val.epoch(gen)
    device = module_device(model)
    total, n = 0.0, 0
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device)
            total += float(model.loss(chunk, gen)) * chunk.shape[0]
            n += chunk.shape[0]
    return total / max(n, 1)


class _BestWeights(TypedDict):
    loss: float
    state: dict[str, Any] | None
    step: int


def fit_diffusion(
    model: DiffusionModel,
    config: DiffusionConfig,
    train: SliceDataset,
    val: SliceDataset | None,
    ctx: FitContext,
    *,
    name: str = "train",
) -> list[float]:
    """Adam on every parameter (UNet and encoder jointly), L1 x0 loss, ``config.steps`` steps.

    With ``config.val_every > 0`` and a validation set, the weights with the lowest validation loss
    are kept (the reference checkpoints on the minimum validation loss, METHOD_SPEC.md §7).
    """
    model.to(ctx.device).train()
    best: _BestWeights = {"loss": float("inf"), "state": None, "step": 0}
    track = bool(config.val_every) and val is not None and len(val) > 0

    def check_val(step: int) -> None:
        assert val is not None  # only called when tracking, which needs a validation set
        loss = validation_loss(model, val, seed=ctx.seed + 1, batch_size=config.batch_size)
        ctx.log_metrics({f"{name}/val_loss": loss}, step)
        if loss < best["loss"]:
            best.update({"loss": loss, "state": copy.deepcopy(model.state_dict()), "step": step})

    def loss_fn(batch: Tensor, step: int) -> Tensor:
        if track and step > 1 and (step - 1) % config.val_every == 0:
            check_val(step - 1)  # weights after step-1 updates
        return model.loss(batch, ctx.generator)

    if ctx.compile:
        model.unet.compile()  # in place: the state dict keeps its keys

    losses = train_loop(
        parameters=model.parameters(),
        loss_fn=loss_fn,
        train=train,
        # the best-weights record is not part of a checkpoint: a fit that keeps it is not resumed
        ctx=dataclasses.replace(ctx, checkpoint=None) if track else ctx,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        name=name,
    )
    if track:
        check_val(len(losses))
        if best["state"] is not None and best["step"] != len(losses):
            model.load_state_dict(best["state"])
            ctx.progress(f"{name}: restored the weights of step {best['step']} (val loss {best['loss']:.4f})")
    model.eval()
    return losses


class DiffusionReconstruction:
    """What the diffusion methods share on top of ``ReconstructionMethod``: training with
    :func:`fit_diffusion`, reconstruction at the config's test timestep(s) and the model state.

    A method class lists it first: ``class DDPM(DiffusionReconstruction, ReconstructionMethod)``
    and sets ``self.model`` (a :class:`DiffusionModel`) in ``__init__``.
    """

    model: DiffusionModel
    config: DiffusionConfig
    registered_name: str

    def fit(self, train: SliceDataset, val: SliceDataset | None, ctx: FitContext) -> None:
        fit_diffusion(self.model, self.config, train, val, ctx, name=self.registered_name)

    def reconstruct(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        cfg = self.config
        return self.model.reconstruct(
            images, generator, t_indices=cfg.test_indices, ddim_steps=cfg.ddim_steps or None
        )

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
