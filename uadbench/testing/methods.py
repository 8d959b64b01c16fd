"""check_method: the Method contract (see :mod:`uadbench.testing`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from uadbench.testing.base import brainlike_volumes, fail

if TYPE_CHECKING:
    from uadbench.data.volume import Volume
    from uadbench.method import AnomalyOutput, Method

#: The presets every method declares.
PRESETS = ("paper", "cpu", "smoke")


class _LesionMaskSpy:
    """Put on ``Volume.lesion_mask`` while a check runs: records where a method reads a lesion mask."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.watching: str | None = None

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return None  # the dataclass default
        if self.watching is not None:
            frame = sys._getframe(1)
            self.reads.append(f"{self.watching} at {frame.f_code.co_filename}:{frame.f_lineno}")
        return obj.__dict__.get("lesion_mask")

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["lesion_mask"] = value

    @contextlib.contextmanager
    def watch(self, what: str) -> Iterator[None]:
        self.watching = what
        try:
            yield
        finally:
            self.watching = None


@contextlib.contextmanager
def _spied_lesion_masks() -> Iterator[_LesionMaskSpy]:
    """Every lesion-mask read of a Volume, while the context lasts, goes through a spy; global RNG
    states are restored afterwards (the checks seed them as the runner does)."""
    import torch

    from uadbench.data.volume import Volume

    saved, torch_state, numpy_state = Volume.__dict__["lesion_mask"], torch.get_rng_state(), np.random.get_state()
    spy = _LesionMaskSpy()
    setattr(Volume, "lesion_mask", spy)  # noqa: B010  (a descriptor on the class, for the duration)
    try:
        yield spy
    finally:
        setattr(Volume, "lesion_mask", saved)  # noqa: B010
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)


def _method_class(method: str | type) -> tuple[type[Method], str]:
    from uadbench.method import Method
    from uadbench.registry import METHODS

    cls = METHODS.get(method) if isinstance(method, str) else method
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise fail(f"{method!r} is not a uadbench.Method subclass; pass a registered method name or the class")
    return cls, method if isinstance(method, str) else (cls.registered_name or cls.__qualname__)


def _config(cls: type[Method], name: str, preset: str) -> Any:
    from uadbench.config import build_config
    from uadbench.errors import ConfigError

    try:
        return build_config(cls.Config, cls.presets, preset, {}, owner=f"method {name!r}")
    except ConfigError as exc:
        raise fail(f"method {name!r}: preset {preset!r} does not build a config: {exc}") from exc


def _check_method_class(cls: type[Method], name: str) -> None:
    config_cls = getattr(cls, "Config", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls) and config_cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise fail(f"method {name!r}: Config must be a frozen dataclass (@dataclass(frozen=True)) whose defaults are the paper's values")
    missing = [p for p in PRESETS if p not in getattr(cls, "presets", {})]
    if missing:
        raise fail(f"method {name!r} lacks the preset(s) {', '.join(missing)}; presets needs at least {', '.join(PRESETS)} "
                   "(each the Config fields that differ from the paper's defaults)")
    for preset in PRESETS:
        _config(cls, name, preset)


def _fit(cls: type[Method], name: str, spy: _LesionMaskSpy, *, preset: str, image_shape: tuple[int, int], seed: int,
         max_steps: int) -> Method:
    """Build and fit the method as the runner does (global RNGs seeded first), on healthy slices."""
    import torch

    from uadbench.data.slices import SliceDataset
    from uadbench.method import FitContext

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    method = cls(_config(cls, name, preset), image_shape=image_shape)
    vols, _, _ = brainlike_volumes(6, shape=(*image_shape, 6), seed=0)
    ctx = FitContext(generator=torch.Generator().manual_seed(seed), seed=seed, max_steps=max_steps)
    with spy.watch(f"{name}.fit"):
        method.fit(SliceDataset(vols[:4]), SliceDataset(vols[4:]), ctx)
    for module in method.modules().values():
        module.eval()
    return method


def _check_output(name: str, out: AnomalyOutput, images: Any) -> None:
    import torch

    from uadbench.method import AnomalyOutput

    if not isinstance(out, AnomalyOutput):
        raise fail(f"method {name!r}: predict returned {type(out).__name__}, expected uadbench.AnomalyOutput")
    for field, value in (("anomaly_map", out.anomaly_map), ("reconstruction", out.reconstruction)):
        if value is None and field == "reconstruction":
            continue
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(images.shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise fail(f"method {name!r}: {field} is {shape} for input slices {tuple(images.shape)}; expected a tensor of the input's shape")
        if not torch.isfinite(value).all():
            raise fail(f"method {name!r}: {field} holds NaN or infinite values")


def _predict(method: Method, name: str, volumes: list[Volume], spy: _LesionMaskSpy, seed: int = 1) -> list[Any]:
    """The runner's way: every axial slice of each volume as one batch, the lesion-bearing volumes
    in this frame; returns each volume's anomaly map."""
    import torch

    maps = []
    for volume in volumes:
        images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume.image, -1, 0)))[:, None].float()
        with torch.no_grad(), spy.watch(f"{name}.predict"):
            out = method.predict(images, generator=torch.Generator().manual_seed(seed))
        _check_output(name, out, images)
        maps.append(out.anomaly_map.detach().float().cpu())
    return maps


def _no_reads(name: str, spy: _LesionMaskSpy) -> None:
    if spy.reads:
        raise fail(f"method {name!r} read a lesion mask ({spy.reads[0]}); methods see healthy image slices in fit and images in "
                   "predict, never masks or labels")


def _same_maps(a: list[Any], b: list[Any]) -> float | None:
    """None when the maps are identical, else the largest difference."""
    import torch

    if all(torch.equal(x, y) for x, y in zip(a, b, strict=True)):
        return None
    return max(float((x - y).abs().nan_to_num(math.inf).max()) for x, y in zip(a, b))


def check_method(method: str | type, *, preset: str = "smoke", image_shape: tuple[int, int] = (32, 32), max_steps: int = 3,
                 seed: int = 0) -> None:
    """Check a method (a registered name or a :class:`uadbench.Method` subclass) against the contract.

    Fits it three times on small synthetic healthy slices (``preset``, ``max_steps`` steps; seeds
    ``seed``, ``seed + 1``, ``seed``) and predicts two lesion-bearing volumes; see the module for
    what is checked. Runs on the CPU in seconds with a ``smoke`` preset."""
    import torch

    from uadbench.data.volume import Volume

    cls, name = _method_class(method)
    _check_method_class(cls, name)
    images, brains, lesions = brainlike_volumes(2, shape=(*image_shape, 6), seed=7, lesion=True)
    volumes = [Volume(image, np.eye(4), brain, f"lesion-{i}", lesion_mask=lesion)
               for i, (image, brain, lesion) in enumerate(zip(images, brains, lesions))]
    fit = functools.partial(_fit, cls, name, preset=preset, image_shape=image_shape, max_steps=max_steps)
    with _spied_lesion_masks() as spy:
        first = fit(spy, seed=seed)
        maps = _predict(first, name, volumes, spy)
        _no_reads(name, spy)
        torch.manual_seed(seed + 1001)
        np.random.seed((seed + 1001) % 2**32)
        diff = _same_maps(maps, _predict(first, name, volumes, spy))
        if diff is not None:
            raise fail(f"method {name!r}: predicting the same slices with the same generator seed gave other maps (up to {diff:.3g} apart) "
                       "once torch's global RNG had moved on; draw every random number in predict from its generator argument")
        fit(spy, seed=seed + 1)
        again = fit(spy, seed=seed)
        diff = _same_maps(maps, _predict(again, name, volumes, spy))
        if diff is not None:
            raise fail(f"method {name!r}: two fits with seed {seed} gave different anomaly maps (up to {diff:.3g} apart); draw every random "
                       "number from ctx.generator or ctx.seed (the runner seeds torch and numpy before fit) and keep no state between instances")
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)
        buffer.seek(0)
        try:
            state = torch.load(buffer, weights_only=True)
        except Exception as exc:
            raise fail(f"method {name!r}: its state_dict does not load with torch.load(weights_only=True) ({type(exc).__name__}: {exc}); "
                       "keep tensors and plain values only") from exc
        fresh = cls(_config(cls, name, preset), image_shape=image_shape)
        fresh.load_state_dict(state)
        for module in fresh.modules().values():
            module.eval()
        diff = _same_maps(maps, _predict(fresh, name, volumes, spy))
        if diff is not None:
            raise fail(f"method {name!r}: a fresh instance given load_state_dict(state_dict()) predicts other maps (up to {diff:.3g} apart); "
                       "the state must hold everything predict needs")
        _no_reads(name, spy)
