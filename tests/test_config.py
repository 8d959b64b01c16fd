from dataclasses import FrozenInstanceError, dataclass

import pytest

from uadbench.config import build_config, config_hash, flatten
from uadbench.errors import ConfigError


@dataclass(frozen=True)
class Cfg:
    lr: float = 1e-4
    steps: int = 100
    mults: tuple[int, ...] = (1, 2, 2)
    noise: str = "simplex"
    ensemble: bool = False


PRESETS = {"paper": {}, "cpu": {"steps": 10, "mults": [1, 2]}, "smoke": {"steps": 1}}


def test_preset_then_overrides():
    cfg = build_config(Cfg, PRESETS, "cpu", {"lr": 1})
    assert cfg == Cfg(lr=1.0, steps=10, mults=(1, 2))
    assert isinstance(cfg.lr, float) and isinstance(cfg.mults, tuple)
    with pytest.raises(FrozenInstanceError):
        cfg.lr = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"stepz": 3}, "unknown config key 'stepz'.*valid keys: ensemble, lr, mults, noise, steps"),
        ({"steps": "many"}, "steps must be an integer"),
        ({"ensemble": 1}, "ensemble must be true or false"),
        ({"mults": 3}, "mults must be a list"),
        ({"lr": "fast"}, "lr must be a number"),
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config(Cfg, PRESETS, "paper", overrides)


def test_hash_is_stable_and_sensitive():
    a = config_hash("m", build_config(Cfg, PRESETS, "cpu"))
    b = config_hash("m", build_config(Cfg, PRESETS, "cpu", {"steps": 10}))
    c = config_hash("m", build_config(Cfg, PRESETS, "cpu", {"steps": 11}))
    d = config_hash("other", build_config(Cfg, PRESETS, "cpu"))
    assert a == b and a != c and a != d and len(a) == 12


def test_flatten():
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}}) == {"a": 1, "b.c": 2, "b.d.e": 3}
