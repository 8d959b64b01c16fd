"""A small training loop shared by the neural methods: numbered steps, no hidden state."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from uadbench.checkpoints import random_state, restore_random_state
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
    batches = train.batches(batch_size, ctx.generator)
    losses: list[float] = []
    report_every = max(1, steps // 10)  # progress lines: about ten per fit
    start = time.perf_counter()
    ckpt = ctx.checkpoint
    saved = dict(modules if modules is not None else ckpt.modules()) if ckpt is not None else {}
    first = 1
    if ckpt is not None and (state := ckpt.load(name)) is not None:
        for key, module in saved.items():
            module.load_state_dict(state["modules"][key])
        opt.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["batches"])
        restore_random_state(ctx.generator, state["random"])
        for gen, gen_state in zip(generators, state["generators"], strict=True):
            gen.set_state(gen_state)
        losses = [float(v) for v in state["losses"]]
        first = int(state["step"]) + 1
        ctx.progress(f"{name}: resumed from the checkpoint of step {first - 1}")
    for step in range(first, steps + 1):
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
        if ckpt is not None and ckpt.due(step, steps):
            ckpt.save(name, {
                "step": step, "modules": {k: m.state_dict() for k, m in saved.items()}, "optimizer": opt.state_dict(),
                "batches": batches.state_dict(), "random": random_state(ctx.generator), "losses": losses,
                "generators": [gen.get_state() for gen in generators],
            })
    if steps and not math.isfinite(losses[-1]):
        raise FloatingPointError(f"{name}: final loss is not finite")
    return losses
