"""The shared training loop: step count, the learning-rate hook."""

from __future__ import annotations

import math

import pytest
import torch

from uadbench.data import SliceDataset
from uadbench.method import FitContext
from uadbench.training import train_loop


def _run(steps: int, **kwargs) -> list[float]:
    param = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([param], lr=0.1)
    seen: list[float] = []
    opt.register_step_pre_hook(lambda o, args, kw: seen.append(o.param_groups[0]["lr"]))
    train = SliceDataset(torch.rand(2, 4, 4, 3, generator=torch.Generator().manual_seed(0)))
    losses = train_loop(
        parameters=[param], loss_fn=lambda batch, step: (param * batch).mean(), train=train,
        ctx=FitContext(), steps=steps, batch_size=2, lr=0.1, optimizer=opt, **kwargs,
    )
    assert len(losses) == steps
    return seen


def test_without_lr_at_the_optimiser_keeps_its_learning_rate():
    seen = _run(4)
    assert seen == [0.1] * 4


def test_lr_at_sets_the_learning_rate_of_every_step_from_one():
    seen = _run(5, lr_at=lambda step: 0.01 * step)
    assert seen == [0.01 * step for step in range(1, 6)]


def test_lr_at_reproduces_a_torch_scheduler():
    seen = _run(12, lr_at=lambda step: 0.1 * (1 + math.cos(math.pi * (step - 1) / 5)) / 2)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    expected = []
    for _ in range(12):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(expected, abs=1e-9)
