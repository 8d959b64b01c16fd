"""The Method contract, checked for every registered method with no per-method test code."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import uadbench
from synthetic import brainlike_volumes
from uadbench.data import SliceDataset
from uadbench.method import AnomalyOutput, FitContext, Method

SHAPE = (32, 32)


def _datasets():
    vols, _, _ = brainlike_volumes(6, shape=(*SHAPE, 6), seed=0)
    train = SliceDataset(vols[:4])
    val = SliceDataset(vols[4:])
    return train, val


def _fit(name: str, seed: int = 0) -> Method:
    torch.manual_seed(seed)
    method = uadbench.create_method(name, preset="smoke", image_shape=SHAPE)
    train, val = _datasets()
    ctx = FitContext(generator=torch.Generator().manual_seed(seed), seed=seed, max_steps=3)
    method.fit(train, val, ctx)
    return method


def _eval_mode(method: Method) -> None:
    for m in method.modules().values():
        m.eval()


@pytest.fixture(scope="module")
def images():
    vols, _, _ = brainlike_volumes(1, shape=(*SHAPE, 6), seed=7, lesion=True)
    return torch.from_numpy(np.moveaxis(vols[0], -1, 0))[:, None].float()


@pytest.mark.parametrize("name", uadbench.list_methods())
def test_method_contract(name, images, tmp_path):
    cls = uadbench.METHODS.get(name)
    assert issubclass(cls, Method)
    assert {"paper", "cpu", "smoke"} <= set(cls.presets)
    method = _fit(name)
    _eval_mode(method)
    out = method.predict(images, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, AnomalyOutput)
    assert out.anomaly_map.shape == images.shape
    assert torch.isfinite(out.anomaly_map).all()
    if out.reconstruction is not None:
        assert out.reconstruction.shape == images.shape

    # same seed, same numbers: fitting and predicting again reproduces the map exactly
    again = _fit(name)
    _eval_mode(again)
    out2 = again.predict(images, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.anomaly_map, out2.anomaly_map, rtol=0, atol=0)

    # state_dict round-trips through a safe checkpoint load into a fresh instance
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = uadbench.create_method(name, preset="smoke", image_shape=SHAPE)
    fresh.load_state_dict(state)
    _eval_mode(fresh)
    out3 = fresh.predict(images, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.anomaly_map, out3.anomaly_map, rtol=0, atol=0)


@pytest.mark.parametrize("name", uadbench.list_methods())
def test_fit_never_receives_labels(name, monkeypatch):
    """What reaches fit is image slices only: no masks, no lesion labels, no subject metadata."""
    seen = {}
    cls = uadbench.METHODS.get(name)
    original = cls.fit

    def spy(self, train, val, ctx):
        seen["train"], seen["val"] = train, val
        return original(self, train, val, ctx)

    monkeypatch.setattr(cls, "fit", spy)
    _fit(name)
    for ds in (seen["train"], seen["val"]):
        assert type(ds) is SliceDataset
        tensors = {k for k, v in vars(ds).items() if isinstance(v, (torch.Tensor, np.ndarray))}
        assert tensors == {"volumes"}
