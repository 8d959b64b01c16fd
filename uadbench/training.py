"""A small training loop shared by the neural methods: numbered steps, no hidden state."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from uadbench.method import FitContext


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
) -> list[float]:
    """Run ``steps`` optimiser steps of ``loss_fn(batch, step)``; returns the loss per step.

    1. draw a batch of healthy slices (one random slice per volume, epoch after epoch);
    2. compute the loss; 3. set the learning rate of the step, ``lr_at(step)``, on every parameter
    group (when given; steps count from 1) and step the optimiser; 4. log every ``log_every`` steps.
    Without ``lr_at`` the optimiser keeps its learning rate (``lr``, or the given ``optimizer``'s).
    """
    steps = int(ctx.max_steps if ctx.max_steps is not None else steps)
    params = [p for p in parameters if p.requires_grad]
    opt = optimizer or torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    batches = train.batches(batch_size, ctx.generator)
    losses: list[float] = []
    report_every = max(1, steps // 10)  # progress lines: about ten per fit
    start = time.perf_counter()
    for step in range(1, steps + 1):
        batch = next(batches).to(ctx.device)
        loss = loss_fn(batch, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if lr_at is not None:
            step_lr = float(lr_at(step))
            for group in opt.param_groups:
                group["lr"] = step_lr
        opt.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            window = losses[-log_every:]
            mean = sum(window) / len(window)
            elapsed = time.perf_counter() - start
            ctx.log_metrics({f"{name}/loss": mean, f"{name}/samples_per_s": step * batch_size / max(elapsed, 1e-9)}, step)
        if step % report_every == 0 or step == steps:
            window = losses[-report_every:]
            elapsed = time.perf_counter() - start
            ctx.progress(f"{name} step {step}/{steps} loss {sum(window) / len(window):.4f} ({elapsed:.0f} s)")
    if steps and not math.isfinite(losses[-1]):
        raise FloatingPointError(f"{name}: final loss is not finite")
    return losses
