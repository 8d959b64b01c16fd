"""A small training loop shared by the neural methods: numbered steps, no hidden state."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from uadbench.checkpoints import random_state, restore_random_state
from uadbench.method import FitContext


class Precision:
    """Mixed precision for a training loop: ``fp32`` (plain), ``bf16`` (autocast) or ``fp16``
    (autocast with a gradient scaler, as the reference code trains)."""

    DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision not in self.DTYPES:
            raise ValueError(f"precision must be one of {', '.join(self.DTYPES)}, got {precision!r}")
        self.dtype = self.DTYPES[precision]
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            opt.step()
        else:
            self.scaler.step(opt)
            self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def train_loop(
    *,
    parameters: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[Tensor, int], Tensor],
    train,
    ctx: FitContext,
    steps: int,
    batch_size: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    log_every: int = 25,
    name: str = "train",
    optimizer: torch.optim.Optimizer | None = None,
    lr_at: Callable[[int], float] | None = None,
    modules: Mapping[str, torch.nn.Module] | None = None,
    generators: Sequence[torch.Generator] = (),
) -> list[float]:
    """Run ``steps`` optimiser steps of ``loss_fn(batch, step)``; returns the loss per step.

    1. draw a batch of healthy slices (one random slice per volume, epoch after epoch);
    2. compute the loss; 3. set the learning rate of the step, ``lr_at(step)``, on every parameter
    group (when given; steps count from 1) and step the optimiser; 4. log every ``log_every`` steps.
    Without ``lr_at`` the optimiser keeps its learning rate (``lr``, or the given ``optimizer``'s).

    With ``ctx.checkpoint`` set, the loop saves a checkpoint (:mod:`uadbench.checkpoints`) every
    ``ctx.checkpoint.every`` steps and at its end, and resumes from the last one: ``modules`` (by
    default the method's) must hold every parameter and buffer the loop changes, and
    ``generators`` every random generator it draws from besides ``ctx.generator``.
    """
    steps = int(ctx.max_steps if ctx.max_steps is not None else steps)
    params = [p for p in parameters if p.requires_grad]
    opt = optimizer or torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    amp = Precision(ctx.precision, ctx.device)
    batches = train.batches(batch_size, ctx.generator)
    losses: list[float] = []
    pending: list[Tensor] = []  # losses still on the device: read back only when needed (no sync per step)

    def flush(step: int) -> None:
        if not pending:
            return
        values = torch.stack(pending).float().tolist()
        pending.clear()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise FloatingPointError(f"{name}: loss became {v} at step {step - len(values) + 1 + i}")
        losses.extend(values)

    report_every = max(1, steps // 10)  # progress lines: about ten per fit
    start = time.perf_counter()
    ckpt = ctx.checkpoint
    saved = dict(modules if modules is not None else ckpt.modules()) if ckpt is not None else {}
    first = 1
    if ckpt is not None and (state := ckpt.load(name)) is not None:
        for key, module in saved.items():
            module.load_state_dict(state["modules"][key])
        opt.load_state_dict(state["optimizer"])
        amp.load_state_dict(state["scaler"])
        batches.load_state_dict(state["batches"])
        restore_random_state(ctx.generator, state["random"])
        for gen, gen_state in zip(generators, state["generators"], strict=True):
            gen.set_state(gen_state)
        losses = [float(v) for v in state["losses"]]
        first = int(state["step"]) + 1
        ctx.progress(f"{name}: resumed from the checkpoint of step {first - 1}")
    for step in range(first, steps + 1):
        batch = next(batches).to(ctx.device, non_blocking=True)
        with amp.autocast():
            loss = loss_fn(batch, step)
        opt.zero_grad(set_to_none=True)
        amp.backward(loss)
        if lr_at is not None:
            step_lr = float(lr_at(step))
            for group in opt.param_groups:
                group["lr"] = step_lr
        amp.step(opt)
        pending.append(loss.detach())
        log_now, report_now = step % log_every == 0 or step == steps, step % report_every == 0 or step == steps
        checkpoint_now = ckpt is not None and ckpt.due(step, steps)
        if log_now or report_now or checkpoint_now or len(pending) >= 256:
            flush(step)
        if log_now:
            window = losses[-log_every:]
            elapsed = time.perf_counter() - start
            speed = (step - first + 1) * batch_size / max(elapsed, 1e-9)
            ctx.log_metrics({f"{name}/loss": sum(window) / len(window), f"{name}/samples_per_s": speed}, step)
        if report_now:
            window = losses[-report_every:]
            elapsed = time.perf_counter() - start
            ctx.progress(f"{name} step {step}/{steps} loss {sum(window) / len(window):.4f} ({elapsed:.0f} s)")
        if ckpt is not None and checkpoint_now:
            ckpt.save(name, {
                "step": step, "modules": {k: m.state_dict() for k, m in saved.items()}, "optimizer": opt.state_dict(),
                "scaler": amp.state_dict(), "batches": batches.state_dict(), "random": random_state(ctx.generator),
                "losses": losses, "generators": [gen.get_state() for gen in generators],
            })
    flush(steps)
    return losses
