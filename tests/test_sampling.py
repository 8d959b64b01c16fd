"""The reverse-chain core (uadbench.diffusion.sampling) against closed forms: the posterior by Bayes'
rule for Gaussians, the forward marginals a chain with a perfect x0 predictor must reproduce, DDIM's
determinism and its eta = 1 identity, the eps/x0 conversions and the respaced schedules."""

from __future__ import annotations

import math

import pytest
import torch

from uadbench.diffusion.noise import GaussianNoise
from uadbench.diffusion.process import DiffusionProcess
from uadbench.diffusion.sampling import (
    ChainStep,
    chain_steps,
    ddim_step,
    ddpm_step,
    eps_from_x0,
    posterior_mean_variance,
    respaced_betas,
    reverse_chain,
    spaced_indices,
    x0_from_eps,
    x0_predictor,
)
from uadbench.diffusion.schedule import NoiseSchedule, cosine_betas, linear_betas
from uadbench.errors import ConfigError


@pytest.fixture(params=["cosine", "linear"])
def schedule(request):
    return NoiseSchedule.create(request.param, 1000)


def _bayes_posterior(x0, x_t, abar_prev, alpha):
    """q(x_prev | x_t, x0) ∝ N(x_prev; sqrt(abar_prev) x0, 1 - abar_prev) N(x_t; sqrt(alpha) x_prev, 1 - alpha)."""
    beta = 1 - alpha
    precision = 1 / (1 - abar_prev) + alpha / beta
    var = 1 / precision
    mean = var * (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(alpha) * x_t / beta)
    return mean, var


@pytest.mark.parametrize("indices", [(600, 599), (100, 99), (1, 0), (700, 450), (300, 37)])
def test_posterior_is_bayes_rule(schedule, indices):
    gen = torch.Generator().manual_seed(0)
    x0, x_t = torch.rand(4, 1, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1, torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    step = chain_steps(schedule, indices)[0]
    abar = schedule.alphas_cumprod
    mean, var = posterior_mean_variance(x0, x_t, step)
    ref_mean, ref_var = _bayes_posterior(x0, x_t, float(abar[indices[1]]), float(abar[indices[0]] / abar[indices[1]]))
    torch.testing.assert_close(mean, ref_mean, rtol=1e-9, atol=1e-9)
    assert var == pytest.approx(ref_var, rel=1e-9)


def test_posterior_uses_the_schedule_betas_on_consecutive_steps():
    """Without skipping, the chain's beta is the schedule's beta and the posterior variance is
    beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al. Eq. 7), from the betas themselves."""
    for kind, betas in (("cosine", cosine_betas(1000)), ("linear", linear_betas(1000))):
        sched = NoiseSchedule.create(kind, 1000)
        abar = torch.cumprod(1 - betas, 0)
        for t in (1, 250, 499, 998):
            step = chain_steps(sched, (t, t - 1))[0]
            assert step.beta == pytest.approx(float(betas[t]), rel=1e-9)
            _, var = posterior_mean_variance(torch.zeros(1), torch.zeros(1), step)
            assert var == pytest.approx(float(betas[t] * (1 - abar[t - 1]) / (1 - abar[t])), rel=1e-9)


def test_posterior_mean_in_eps_form_equals_the_x0_form(schedule):
    """mu = (x_t - beta / sqrt(1 - abar) eps) / sqrt(alpha) (Ho et al. Eq. 11) with x0 = x0_from_eps."""
    gen = torch.Generator().manual_seed(1)
    x_t, eps = torch.randn(2, 1, 6, 6, generator=gen, dtype=torch.float64), torch.randn(2, 1, 6, 6, generator=gen, dtype=torch.float64)
    step = chain_steps(schedule, (400, 399))[0]
    mean, _ = posterior_mean_variance(x0_from_eps(x_t, eps, step.alpha_bar), x_t, step)
    ref = (x_t - step.beta / math.sqrt(1 - step.alpha_bar) * eps) / math.sqrt(1 - step.beta)
    torch.testing.assert_close(mean, ref, rtol=1e-9, atol=1e-9)


def test_last_step_returns_the_x0_estimate(schedule):
    step = chain_steps(schedule, (0,))[0]
    assert step.is_last and step.alpha_bar_prev == 1.0
    x0, x_t = torch.full((1, 1, 2, 2), 0.3), torch.randn(1, 1, 2, 2)
    mean, var = posterior_mean_variance(x0, x_t, step)
    torch.testing.assert_close(mean, x0)
    assert var == 0
    torch.testing.assert_close(ddpm_step(x_t, x0, step, None, variance="large"), x0)
    torch.testing.assert_close(ddim_step(x_t, x0, step, None), x0)


def test_conversions_are_inverse(schedule):
    gen = torch.Generator().manual_seed(2)
    x0, eps = torch.rand(3, 1, 5, 5, generator=gen, dtype=torch.float64), torch.randn(3, 1, 5, 5, generator=gen, dtype=torch.float64)
    t = torch.tensor([10, 500, 900])
    a = schedule.alphas_cumprod[t]
    x_t = a.sqrt().view(-1, 1, 1, 1) * x0 + (1 - a).sqrt().view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(x0_from_eps(x_t, eps, a), x0)
    torch.testing.assert_close(eps_from_x0(x_t, x0, a), eps)
    # an eps predictor that knows the true noise becomes an exact x0 predictor
    predict = x0_predictor(lambda x, tt: eps, schedule, "eps")
    torch.testing.assert_close(predict(x_t, t), x0)
    assert x0_predictor(predict, schedule, "x0") is predict
    with pytest.raises(ConfigError, match="valid: x0, eps"):
        x0_predictor(predict, schedule, "v")  # type: ignore[arg-type]


def _perfect(x0):
    return lambda x_t, t: x0.expand_as(x_t)


@pytest.mark.parametrize("sampler, variance, eta", [("ddpm", "small", 0.0), ("ddim", "small", 0.0), ("ddim", "small", 0.5), ("ddim", "small", 1.0)])
def test_a_perfect_predictor_keeps_the_forward_marginals(sampler, variance, eta):
    """With x0_hat = x0 and x_t ~ q(x_t | x0), every state of the chain is distributed as
    q(x_s | x0) = N(sqrt(abar_s) x0, 1 - abar_s), for the posterior-variance ancestral step and
    DDIM at any eta, also when steps are skipped; the chain ends at x0 exactly."""
    sched = NoiseSchedule.create("cosine", 1000)
    gen = torch.Generator().manual_seed(3)
    n = 200_000
    x0 = torch.full((1, 1, 1, n), 0.4, dtype=torch.float64)
    steps = chain_steps(sched, spaced_indices(480, 7))
    a0 = steps[0].alpha_bar
    x_t = math.sqrt(a0) * x0 + math.sqrt(1 - a0) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    seen = []

    def record(step, x_prev, x0_hat):
        seen.append((step.alpha_bar_prev, x_prev))
        return x_prev

    out = reverse_chain(_perfect(x0), x_t, steps, lambda like: torch.randn(like.shape, generator=gen, dtype=like.dtype),
                        sampler=sampler, variance=variance, eta=eta, on_step=record)
    torch.testing.assert_close(out, x0)
    for abar, x in seen[:-1]:
        assert float(x.mean()) == pytest.approx(math.sqrt(abar) * 0.4, abs=5e-3)
        assert float(x.var()) == pytest.approx(1 - abar, rel=2e-2, abs=2e-3)


def test_large_variance_adds_beta():
    sched = NoiseSchedule.create("cosine", 1000)
    step = chain_steps(sched, (300, 200))[0]
    x0, x_t, z = torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    _, var = posterior_mean_variance(x0, x_t, step)
    assert float(ddpm_step(x_t, x0, step, z, variance="small")) == pytest.approx(math.sqrt(var), rel=1e-6)
    assert float(ddpm_step(x_t, x0, step, z, variance="large")) == pytest.approx(math.sqrt(step.beta), rel=1e-6)
    assert var < step.beta
    with pytest.raises(ConfigError, match="valid: small, large"):
        ddpm_step(x_t, x0, step, z, variance="huge")


def test_ddim_eta0_is_deterministic_and_keeps_the_noise(schedule):
    """DDIM with eta = 0 and a perfect predictor moves x_t = sqrt(a) x0 + sqrt(1-a) eps to
    sqrt(a') x0 + sqrt(1-a') eps with the same eps at every visited index, draws nothing, and
    gives the same result whatever noise function it is handed."""
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    steps = chain_steps(schedule, spaced_indices(700, 9))
    x_t = math.sqrt(steps[0].alpha_bar) * x0 + math.sqrt(1 - steps[0].alpha_bar) * eps

    def check(step, x_prev, x0_hat):
        torch.testing.assert_close(x_prev, math.sqrt(step.alpha_bar_prev) * x0 + math.sqrt(1 - step.alpha_bar_prev) * eps)
        return x_prev

    def forbidden(like):
        raise AssertionError("DDIM with eta = 0 drew noise")

    a = reverse_chain(_perfect(x0), x_t, steps, forbidden, sampler="ddim", on_step=check)
    b = reverse_chain(_perfect(x0), x_t, steps, None, sampler="ddim")
    torch.testing.assert_close(a, b)
    # an imperfect predictor: still deterministic
    model = lambda x, t: 0.5 * x  # noqa: E731
    torch.testing.assert_close(reverse_chain(model, x_t, steps, sampler="ddim"), reverse_chain(model, x_t, steps, sampler="ddim"))


def test_ddim_eta1_is_the_ancestral_step(schedule):
    gen = torch.Generator().manual_seed(5)
    x_t, x0_hat, z = (torch.randn(1, 1, 6, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    for pair in ((500, 499), (800, 300)):
        step = chain_steps(schedule, pair)[0]
        torch.testing.assert_close(ddim_step(x_t, x0_hat, step, z, eta=1.0), ddpm_step(x_t, x0_hat, step, z, variance="small"))


def test_ddim_chain_matches_the_process_ddim(schedule):
    """reverse_chain(ddim, eta 0, no clamp) over the indices DiffusionProcess.ddim_x0 visits gives its result."""
    proc = DiffusionProcess(schedule=schedule, noise=GaussianNoise())
    gen = torch.Generator().manual_seed(6)
    x0 = torch.rand(2, 1, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    model = lambda x, t: torch.tanh(x) * (1 - t.float().view(-1, 1, 1, 1) / 2000)  # noqa: E731
    ref = proc.ddim_x0(model, x0, 400, noise, num_steps=6)
    indices = spaced_indices(400, 6)
    x_t = proc.q_sample(x0, torch.full((2,), 400), noise)
    out = reverse_chain(model, x_t, chain_steps(schedule, indices), sampler="ddim", clip=False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_respacing(schedule):
    kept = [0, 99, 199, 349, 499, 999]
    betas = respaced_betas(schedule, kept)
    torch.testing.assert_close(torch.cumprod(1 - betas, 0), schedule.alphas_cumprod[kept])
    # the chain over the same indices, read backwards, has the same betas
    steps = chain_steps(schedule, kept[::-1])
    torch.testing.assert_close(torch.tensor([s.beta for s in steps[::-1]], dtype=torch.float64), betas)
    # keeping every index gives the schedule's betas back
    for kind, betas in (("cosine", cosine_betas(1000)), ("linear", linear_betas(1000))):
        torch.testing.assert_close(respaced_betas(NoiseSchedule.create(kind, 1000), range(1000)), betas, rtol=1e-9, atol=1e-12)


def test_spaced_indices():
    assert spaced_indices(4) == (4, 3, 2, 1, 0)
    assert spaced_indices(4, 9) == (4, 3, 2, 1, 0)
    assert spaced_indices(480, 5) == (480, 360, 240, 120, 0)
    assert spaced_indices(7, 1) == (7,)
    for start, n in ((480, 10), (99, 7), (3, 3)):
        idx = spaced_indices(start, n)
        assert idx[0] == start and idx[-1] == 0 and len(idx) == n and all(a > b for a, b in zip(idx, idx[1:]))
    with pytest.raises(ConfigError, match="num_steps >= 0"):
        spaced_indices(10, -1)


def test_chain_input_errors(schedule):
    with pytest.raises(ConfigError, match="strictly decreasing"):
        chain_steps(schedule, (10, 20))
    with pytest.raises(ConfigError, match=r"chain index must lie in \[0, 999\]"):
        chain_steps(schedule, (1000, 0))
    steps = chain_steps(schedule, (5, 0))
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ConfigError, match="valid: ddpm, ddim"):
        reverse_chain(_perfect(x), x, steps, sampler="euler")
    with pytest.raises(ConfigError, match="pass a noise function"):
        reverse_chain(_perfect(x), x, steps, sampler="ddpm")
    assert isinstance(steps[0], ChainStep)
