"""A fit interrupted mid-training resumes from its last checkpoint and ends bit for bit where an
uninterrupted fit with the same seed ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uadbench import FitContext, create_method
from uadbench.checkpoints import Checkpointer
from uadbench.data.slices import SliceDataset

SHAPE = (32, 32)


class Interrupted(Exception):
    pass


def _data(seed: int) -> SliceDataset:
    rng = np.random.default_rng(seed)
    vols = rng.random((4, *SHAPE, 6)).astype(np.float32)
    return SliceDataset(list(vols), [f"s{i}" for i in range(4)])


def _fit(name: str, overrides: dict, ckpt: Checkpointer | None, stop_at: int | None = None):
    torch.manual_seed(0)
    method = create_method(name, "smoke", image_shape=SHAPE, **overrides)
    if ckpt is not None:
        ckpt.modules = method.modules

    calls = []

    def progress(message: str) -> None:
        if " step " in message:
            calls.append(message)
            if stop_at is not None and len(calls) >= stop_at:
                raise Interrupted(message)  # a kill in the middle of a training step

    def log(metrics, step):
        if ckpt is not None:
            ckpt.history.append((step, metrics))

    ctx = FitContext(generator=torch.Generator().manual_seed(0), seed=0, checkpoint=ckpt, log_metrics=log, progress=progress)
    method.fit(_data(0), _data(1), ctx)
    return method


CASES = {
    "ae": {"steps": 12},
    "vae": {"steps": 12},
    "pddpm": {"steps": 12},
    "dae": {"steps": 12, "lr_period": 4},
    "ddpm": {"steps": 12},
    "cddpm": {"steps": 12, "pretrain": True, "pretrain_steps": 6},
    "fanogan": {"gan_steps": 4, "encoder_steps": 12},
    "fpi": {"steps": 12},
    "nsa": {"steps": 12, "gamma_offset": 0.15},
}


def _flat(d: dict, prefix: str = "") -> list:
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_interrupted_fit_resumes_bit_for_bit(tmp_path, name):
    overrides = CASES[name]
    reference = _fit(name, overrides, None)
    ckpt = Checkpointer(tmp_path / "work", every=1)
    with pytest.raises(Interrupted):
        _fit(name, overrides, ckpt, stop_at=10)
    saved = sorted(p.name for p in (tmp_path / "work").iterdir())
    assert saved, "no checkpoint was written before the interruption"
    resumed = _fit(name, overrides, Checkpointer(tmp_path / "work", every=1))
    a, b = reference.state_dict(), resumed.state_dict()
    pairs = dict(_flat(b))
    for key, value in _flat(a):
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, pairs[key]), f"{name}: {key} differs after resuming"
        else:
            assert value == pairs[key]
