"""The Method contract, checked for every registered method with no per-method test code, by the
check a plugin author runs (:func:`uadbench.testing.check_method`), and that check's own teeth:
small methods defined here that break one rule each must fail it with a message naming the rule."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

import uadbench
from uadbench.data.volume import Volume
from uadbench.method import AnomalyOutput, FitContext, Method
from uadbench.testing import check_method


@pytest.mark.parametrize("name", uadbench.list_methods())
def test_method_contract(name):
    check_method(name)


# -- the check catches what it says it catches -------------------------------------------------------------------
@dataclass(frozen=True)
class MeanConfig:
    scale: float = 1.0


class MeanDistance(Method):
    """A tiny honest method: the map is |x - the mean training slice| times a learnt-free scale, plus
    generator-drawn noise (so determinism is tested on randomness, not on a constant)."""

    Config = MeanConfig
    presets: dict[str, dict[str, Any]] = {"paper": {}, "cpu": {}, "smoke": {}}

    def fit(self, train, val, ctx: FitContext) -> None:
        batch = train.epoch(ctx.generator)
        self.mean = batch.mean(dim=0, keepdim=True) + 0.01 * torch.rand(1, generator=ctx.generator)

    def noise(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return 1e-3 * torch.rand(images.shape, generator=generator)

    def predict(self, images, *, generator):
        return AnomalyOutput(anomaly_map=self.config.scale * (images - self.mean).abs() + self.noise(images, generator))

    def state_dict(self):
        return {"mean": self.mean}

    def load_state_dict(self, state):
        self.mean = state["mean"]


class PeeksAtLesionMasks(MeanDistance):
    """Walks up the call stack in predict to find the volumes being predicted and uses their lesion masks."""

    def predict(self, images, *, generator):
        out = super().predict(images, generator=generator)
        frame = sys._getframe(1)
        while frame is not None:
            for value in list(frame.f_locals.values()):
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, Volume) and v.lesion_mask is not None:
                        mask = torch.from_numpy(np.moveaxis(v.lesion_mask, -1, 0))[:, None].float()
                        if mask.shape == images.shape:
                            return AnomalyOutput(anomaly_map=out.anomaly_map + mask)
            frame = frame.f_back
        return out


class UnseededNoise(MeanDistance):
    """Draws its noise from fresh OS entropy instead of the generator it is given."""

    def noise(self, images, generator):
        return torch.from_numpy(np.random.default_rng().random(images.shape).astype(np.float32)) * 1e-3


class GlobalRNGInPredict(MeanDistance):
    """Draws its noise from torch's global RNG instead of the generator it is given."""

    def noise(self, images, generator):
        return 1e-3 * torch.rand(images.shape)


class ForgetsItsState(MeanDistance):
    def state_dict(self):
        return {"mean": torch.zeros_like(self.mean)}


class WrongShape(MeanDistance):
    def predict(self, images, *, generator):
        return AnomalyOutput(anomaly_map=super().predict(images, generator=generator).anomaly_map[:, :, :-1])


class NoSmokePreset(MeanDistance):
    presets = {"paper": {}, "cpu": {}}


class UnknownPresetKey(MeanDistance):
    presets = {"paper": {}, "cpu": {}, "smoke": {"scael": 2.0}}


def test_an_honest_method_passes():
    check_method(MeanDistance)


@pytest.mark.parametrize("cls, message", [
    (PeeksAtLesionMasks, r"read a lesion mask \(PeeksAtLesionMasks.predict at "),
    (UnseededNoise, "two fits with seed 0 gave different anomaly maps|same generator seed gave other maps"),
    (GlobalRNGInPredict, "from its generator argument"),
    (ForgetsItsState, "load_state_dict"),
    (WrongShape, r"anomaly_map is \(6, 1, 31, 32\) for input slices \(6, 1, 32, 32\)"),
    (NoSmokePreset, "lacks the preset\\(s\\) smoke"),
    (UnknownPresetKey, "preset 'smoke' does not build a config: unknown config key 'scael'"),
])
def test_check_method_catches_a_broken_rule(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_method(cls)


def test_the_lesion_spy_names_where_the_mask_was_read_and_leaves_volume_as_it_was():
    with pytest.raises(AssertionError, match=rf"read a lesion mask \(PeeksAtLesionMasks.predict at {__file__}:\d+\)"):
        check_method(PeeksAtLesionMasks)
    assert Volume.__dict__["lesion_mask"] is None  # the dataclass default, restored
    v = Volume(np.zeros((2, 2, 2), np.float32), np.eye(4), np.ones((2, 2, 2), bool), "s", lesion_mask=np.ones((2, 2, 2)))
    assert v.lesion_mask.dtype == bool and v.__dict__["lesion_mask"] is v.lesion_mask


def test_a_non_deterministic_fit_is_caught():
    class RandomFit(MeanDistance):
        def fit(self, train, val, ctx):
            super().fit(train, val, ctx)
            self.mean = self.mean + float(np.random.default_rng().random())

    with pytest.raises(AssertionError, match="two fits with seed 0 gave different anomaly maps"):
        check_method(RandomFit)


def test_check_method_leaves_the_global_rngs_as_they_were():
    torch.manual_seed(123)
    np.random.seed(123)
    expected = torch.rand(3), np.random.random(3)
    torch.manual_seed(123)
    np.random.seed(123)
    check_method(MeanDistance)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.random(3), expected[1])


def test_a_name_that_is_not_a_method_is_refused():
    with pytest.raises(AssertionError, match="is not a uadbench.Method subclass"):
        check_method(MeanConfig)
