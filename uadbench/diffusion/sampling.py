"""Reverse diffusion chains: the posterior q(x_{t-1} | x_t, x0), ancestral (DDPM) and DDIM steps,
conversions between x0 and noise predictors, and respacing (skipping steps).

Pure maths on tensors, beside :mod:`uadbench.diffusion.process` (METHOD_SPEC_DIFFUSION.md §1):

- ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with ``a_t`` the cumulative signal fraction
  (``alpha_bar``) of the schedule at index t, and ``a_prev = 1`` after the last step;
- posterior (Ho et al. 2020, Eq. 6-7): mean ``c1 x0 + c2 x_t`` with
  ``c1 = sqrt(a_prev) beta / (1 - a_t)``, ``c2 = sqrt(1 - beta) (1 - a_prev) / (1 - a_t)`` and
  variance ``beta (1 - a_prev) / (1 - a_t)``, where ``beta = 1 - a_t / a_prev``;
- ancestral step: posterior mean plus ``sigma z`` with ``sigma^2`` the posterior variance
  (``"small"``) or ``beta`` (``"large"``); no noise on the last step;
- DDIM step (Song et al. 2021, Eq. 12): ``sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z``
  with ``sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)``; ``eta = 0`` is
  deterministic.

A chain visits a decreasing subsequence of schedule indices (:class:`ChainStep`, made by
:func:`chain_steps`); each step uses ``a`` at its own index and at the next visited one, which is
the respacing of improved-diffusion (``beta_i = 1 - a_{tau_i} / a_{tau_{i-1}}``): the formulas
above apply unchanged to the short chain, and the network still receives the original index.

Every model is seen as an x0 predictor ``(x_t, t) -> x0_hat`` (the project's networks are);
:func:`x0_predictor` wraps a noise (eps) predictor. The x0 estimate is clamped to [-1, 1] before a
step when ``clip`` is set (the reference default); the DDIM noise is derived from the clamped x0.
Random draws come from a ``noise(like) -> Tensor`` callable, so a chain can use Gaussian or
simplex noise and stays reproducible under the caller's generator.

The public API: :class:`ChainStep`, :func:`chain_steps`, :func:`respaced_betas`,
:func:`x0_from_eps`, :func:`eps_from_x0`, :func:`x0_predictor`, :func:`posterior_mean_variance`,
:func:`ddpm_step`, :func:`ddim_step`, :func:`reverse_chain`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from uadbench.diffusion.schedule import NoiseSchedule
from uadbench.errors import ConfigError

Predictor = Callable[[Tensor, Tensor], Tensor]  # (x_t, t of shape (B,)) -> x0_hat or eps_hat
NoiseFn = Callable[[Tensor], Tensor]  # like -> a noise draw of like's shape, dtype and device
StepHook = Callable[["ChainStep", Tensor, Tensor], Tensor]  # (step, x_prev, x0_hat) -> x_prev to continue from
SAMPLERS = ("ddpm", "ddim")
VARIANCES = ("small", "large")


@dataclass(frozen=True)
class ChainStep:
    """One step of a reverse chain: from schedule index ``index`` to ``prev_index`` (None: to x0)."""

    index: int
    prev_index: int | None
    alpha_bar: float  # a_t at ``index``
    alpha_bar_prev: float  # a at ``prev_index``, 1.0 after the last step

    @property
    def beta(self) -> float:
        """The respaced beta ``1 - a_t / a_prev`` (the schedule's own beta when no step is skipped)."""
        return 1.0 - self.alpha_bar / self.alpha_bar_prev

    @property
    def is_last(self) -> bool:
        return self.prev_index is None


def spaced_indices(start: int, num_steps: int = 0) -> tuple[int, ...]:
    """``num_steps`` schedule indices from ``start`` down to 0, evenly spaced and rounded
    (duplicates dropped); ``num_steps = 0`` or ``>= start + 1`` gives every index."""
    if start < 0 or num_steps < 0:
        raise ConfigError(f"a chain needs a start index >= 0 and num_steps >= 0 (0: every index), got {start}, {num_steps}")
    if num_steps == 0 or num_steps >= start + 1:
        return tuple(range(start, -1, -1))
    if num_steps == 1:
        return (start,)
    return tuple(torch.linspace(start, 0, num_steps, dtype=torch.float64).round().long().unique_consecutive().tolist())


def chain_steps(schedule: NoiseSchedule, indices: Sequence[int]) -> list[ChainStep]:
    """The steps of a chain visiting ``indices`` (strictly decreasing schedule indices) and then x0."""
    idx = [schedule.check_index(i, "chain index") for i in indices]
    if not idx:
        raise ConfigError("a reverse chain needs at least one index")
    if any(a <= b for a, b in zip(idx, idx[1:])):
        raise ConfigError(f"chain indices must be strictly decreasing, got {list(indices)}")
    abar = schedule.alphas_cumprod
    steps = []
    for k, i in enumerate(idx):
        prev = idx[k + 1] if k + 1 < len(idx) else None
        steps.append(ChainStep(i, prev, float(abar[i]), 1.0 if prev is None else float(abar[prev])))
    return steps


def respaced_betas(schedule: NoiseSchedule, kept: Sequence[int]) -> Tensor:
    """improved-diffusion's respacing: betas of the short chain keeping the increasing indices
    ``kept``, ``beta_i = 1 - a_{kept_i} / a_{kept_{i-1}}`` (a = 1 before the first), float64.
    Their cumulative product of ``1 - beta`` is ``a`` at the kept indices."""
    abar = schedule.alphas_cumprod[torch.as_tensor(list(kept), dtype=torch.long)]
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return 1 - abar / prev


# -- conversions ------------------------------------------------------------------------------
def _bcast(value: Tensor | float, like: Tensor) -> Tensor | float:
    if isinstance(value, Tensor) and value.dim() == 1:
        return value.view(-1, *([1] * (like.dim() - 1))).to(like)
    return value


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """``x0 = sqrt(1/a) x_t - sqrt(1/a - 1) eps``; ``alpha_bar`` a float or per-sample (B,)."""
    a = _bcast(alpha_bar, x_t)
    return x_t / a**0.5 - (1 / a - 1) ** 0.5 * eps


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """``eps = (x_t - sqrt(a) x0) / sqrt(1 - a)``; ``alpha_bar`` a float or per-sample (B,)."""
    a = _bcast(alpha_bar, x_t)
    return (x_t - a**0.5 * x0) / (1 - a) ** 0.5


def x0_predictor(model: Predictor, schedule: NoiseSchedule, prediction: Literal["x0", "eps"] = "x0") -> Predictor:
    """An x0 predictor from ``model``: itself for ``"x0"``, the eps-to-x0 conversion for ``"eps"``."""
    if prediction == "x0":
        return model
    if prediction != "eps":
        raise ConfigError(f"unknown prediction {prediction!r}; valid: x0, eps")

    def predict(x_t: Tensor, t: Tensor) -> Tensor:
        return x0_from_eps(x_t, model(x_t, t), schedule.alphas_cumprod.to(x_t.device)[t].to(x_t.dtype))

    return predict


# -- one step ---------------------------------------------------------------------------------
def posterior_mean_variance(x0: Tensor, x_t: Tensor, step: ChainStep) -> tuple[Tensor, float]:
    """Mean and variance of q(x_prev | x_t, x0) for ``step`` (variance 0 on the last step)."""
    a, ap, beta = step.alpha_bar, step.alpha_bar_prev, step.beta
    c1 = math.sqrt(ap) * beta / (1 - a)
    c2 = math.sqrt(1 - beta) * (1 - ap) / (1 - a)
    return c1 * x0 + c2 * x_t, beta * (1 - ap) / (1 - a)


def ddpm_step(
    x_t: Tensor, x0_hat: Tensor, step: ChainStep, noise: Tensor | None, *, variance: str = "small"
) -> Tensor:
    """Ancestral step: posterior mean from ``x0_hat`` plus ``sigma * noise`` (none on the last step);
    ``variance`` "small" is the posterior variance, "large" the (respaced) beta."""
    if variance not in VARIANCES:
        raise ConfigError(f"unknown variance {variance!r}; valid: {', '.join(VARIANCES)}")
    mean, var = posterior_mean_variance(x0_hat, x_t, step)
    if step.is_last:
        return mean
    if noise is None:
        raise ConfigError("an ancestral step before the last needs a noise draw")
    sigma2 = var if variance == "small" else step.beta
    return mean + math.sqrt(sigma2) * noise


def ddim_step(x_t: Tensor, x0_hat: Tensor, step: ChainStep, noise: Tensor | None, *, eta: float = 0.0) -> Tensor:
    """DDIM step (Song et al. 2021, Eq. 12) with the noise implied by ``x0_hat``; ``eta = 0`` is
    deterministic (``noise`` may then be None), ``eta = 1`` the ancestral step with the posterior variance."""
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    a, ap = step.alpha_bar, step.alpha_bar_prev
    eps = eps_from_x0(x_t, x0_hat, a)
    sigma = eta * math.sqrt((1 - ap) / (1 - a)) * math.sqrt(max(1 - a / ap, 0.0))
    out = math.sqrt(ap) * x0_hat + math.sqrt(max(1 - ap - sigma**2, 0.0)) * eps
    if sigma > 0:
        if noise is None:
            raise ConfigError("a DDIM step with eta > 0 needs a noise draw")
        out = out + sigma * noise
    return out


# -- the chain --------------------------------------------------------------------------------
def reverse_chain(
    predict_x0: Predictor,
    x_t: Tensor,
    steps: Sequence[ChainStep],
    noise: NoiseFn | None = None,
    *,
    sampler: str = "ddpm",
    variance: str = "small",
    eta: float = 0.0,
    clip: bool = True,
    on_step: StepHook | None = None,
) -> Tensor:
    """Run ``steps`` from ``x_t`` (noised to ``steps[0].index``) down to x0; one network pass per step.

    1. ``x0_hat = predict_x0(x, index)``, clamped to [-1, 1] when ``clip``;
    2. ``x_prev`` by :func:`ddpm_step` (``sampler="ddpm"``) or :func:`ddim_step` (``"ddim"``), the
       noise drawn by ``noise(x)`` only when the step adds some;
    3. ``on_step(step, x_prev, x0_hat)``, when given, returns the state to continue from (THOR's
       harmonisation replaces it there).

    Returns the state after the last step, which equals that step's ``x0_hat``.
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    if variance not in VARIANCES:
        raise ConfigError(f"unknown variance {variance!r}; valid: {', '.join(VARIANCES)}")
    x = x_t
    for step in steps:
        t = torch.full((x.shape[0],), step.index, dtype=torch.long, device=x.device)
        x0_hat = predict_x0(x, t)
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        needs_noise = not step.is_last and (sampler == "ddpm" or eta > 0)
        if needs_noise and noise is None:
            raise ConfigError(f"a {sampler} chain (eta={eta}) draws noise: pass a noise function")
        z = noise(x) if needs_noise and noise is not None else None
        if sampler == "ddpm":
            x_prev = ddpm_step(x, x0_hat, step, z, variance=variance)
        else:
            x_prev = ddim_step(x, x0_hat, step, z, eta=eta)
        x = on_step(step, x_prev, x0_hat) if on_step is not None else x_prev
    return x


__all__ = [
    "SAMPLERS",
    "VARIANCES",
    "ChainStep",
    "chain_steps",
    "ddim_step",
    "ddpm_step",
    "eps_from_x0",
    "posterior_mean_variance",
    "respaced_betas",
    "reverse_chain",
    "spaced_indices",
    "x0_from_eps",
    "x0_predictor",
]
