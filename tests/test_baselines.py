"""Reconstruction baselines: AE, VAE, f-AnoGAN, DAE (smoke presets, tiny synthetic slices)."""

from __future__ import annotations

import dataclasses
import importlib
import io

import pytest
import torch

from uadbench.data import SliceDataset
from uadbench.errors import ConfigError, UadbenchError
from uadbench.method import AnomalyOutput, FitContext, create_config, create_method
from uadbench.registry import METHODS

BASELINES = ["ae", "vae", "fanogan", "dae"]
H = W = 32


def _volumes(n: int = 4, z: int = 6, seed: int = 0) -> torch.Tensor:
    """(N, H, W, Z) blobs in [0, 1] on a zero background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    vols = torch.zeros(n, H, W, z)
    for i in range(n):
        for k in range(z):
            a, b = 0.5 + 0.3 * torch.rand(2, generator=g)
            inside = (xx / a) ** 2 + (yy / b) ** 2 < 1
            vols[i, :, :, k] = inside * (0.4 + 0.4 * torch.rand(H, W, generator=g))
    return vols


@pytest.fixture(scope="module")
def train_data() -> SliceDataset:
    return SliceDataset(_volumes())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _volumes(n=1, z=3, seed=7).permute(0, 3, 1, 2).reshape(-1, 1, H, W)


def _ctx(seed: int = 0, **kwargs) -> FitContext:
    return FitContext(generator=torch.Generator().manual_seed(seed), seed=seed, **kwargs)


@pytest.fixture(scope="module")
def fitted(train_data):
    """Each baseline trained once with its smoke preset."""
    out = {}
    for name in BASELINES:
        torch.manual_seed(0)
        method = create_method(name, "smoke", image_shape=(H, W))
        method.fit(train_data, train_data, _ctx())
        out[name] = method
    return out


# -- contract checks shared by every baseline -----------------------------------------------------


@pytest.mark.parametrize("name", BASELINES)
def test_registered_with_required_presets(name):
    cls = METHODS.get(name)
    assert {"paper", "cpu", "smoke"} <= set(cls.presets)
    assert dataclasses.is_dataclass(cls.Config)
    assert cls.presets["paper"] == {}  # the defaults are the paper's values
    for preset in ("paper", "cpu", "smoke"):
        create_config(name, preset)
    doc = __import__(cls.__module__, fromlist=["_"]).__doc__
    assert "Deviations from the paper" in doc and "http" in doc


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_override_is_rejected(name):
    with pytest.raises(ConfigError, match="valid keys"):
        create_method(name, "smoke", image_shape=(H, W), not_a_field=1)


@pytest.mark.parametrize("name", BASELINES)
def test_predict_is_finite_and_seeded(name, fitted, images):
    method = fitted[name]
    out = method.predict(images, generator=torch.Generator().manual_seed(3))
    assert isinstance(out, AnomalyOutput)
    assert out.anomaly_map.shape == images.shape
    assert torch.isfinite(out.anomaly_map).all()
    assert (out.anomaly_map >= 0).all()
    if out.reconstruction is not None:
        assert out.reconstruction.shape == images.shape
        torch.testing.assert_close(out.anomaly_map, (images - out.reconstruction).abs())
    again = method.predict(images, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.anomaly_map, again.anomaly_map, rtol=0, atol=0)


@pytest.mark.parametrize("name", BASELINES)
def test_state_dict_round_trip(name, fitted, images):
    method = fitted[name]
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = create_method(name, "smoke", image_shape=(H, W))
    before = fresh.predict(images, generator=torch.Generator().manual_seed(1)).anomaly_map
    fresh.load_state_dict(state)
    a = method.predict(images, generator=torch.Generator().manual_seed(1))
    b = fresh.predict(images, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map, rtol=0, atol=0)
    assert not torch.equal(before, b.anomaly_map)  # loading really replaced the weights


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("shape", [(64, 64), (96, 96), (40, 56)])
def test_architecture_adapts_to_image_size(name, shape):
    method = create_method(name, "smoke", image_shape=shape)
    x = torch.rand(2, 1, *shape)
    out = method.predict(x, generator=torch.Generator().manual_seed(0))
    assert out.anomaly_map.shape == x.shape


@pytest.mark.parametrize("name", BASELINES)
def test_max_steps_and_logging_are_honoured(name, train_data):
    logged: list[tuple[dict, int]] = []
    messages: list[str] = []
    method = create_method(name, "smoke", image_shape=(H, W))
    ctx = _ctx(max_steps=2, log_metrics=lambda m, s: logged.append((m, s)), progress=messages.append)
    method.fit(train_data, None, ctx)
    assert logged and messages
    assert all(s <= 2 for _, s in logged)
    assert all(torch.isfinite(torch.tensor(v)) for m, _ in logged for v in m.values())


# -- AE ---------------------------------------------------------------------------------------------


def test_ae_training_reduces_reconstruction_error(train_data):
    torch.manual_seed(0)
    method = create_method("ae", "smoke", image_shape=(H, W), steps=60, lr=3e-3)
    x = train_data.all_slices()
    before = method.predict(x, generator=torch.Generator()).anomaly_map.mean()
    losses = []
    method.fit(train_data, None, _ctx(log_metrics=lambda m, s: losses.append(m["ae/loss"]) if "ae/loss" in m else None))
    after = method.predict(x, generator=torch.Generator()).anomaly_map.mean()
    assert after < 0.5 * before
    assert losses[-1] < losses[0]


def test_ae_rejects_bad_architecture():
    with pytest.raises(UadbenchError, match="kernel_size"):
        create_method("ae", "smoke", image_shape=(H, W), kernel_size=4)
    with pytest.raises(UadbenchError, match="image_shape"):
        create_method("ae", "smoke", image_shape=(2, 2))


# -- VAE --------------------------------------------------------------------------------------------


def test_gaussian_kl_matches_closed_form():
    from torch.distributions import Normal, kl_divergence

    from uadbench.nn.autoencoders import gaussian_kl

    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 7, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 7, generator=g, dtype=torch.float64)
    reference = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), reference)
    # hand-computed: mu = 1, sigma^2 = e  ->  0.5 * (1 + e - 1 - 1) = (e - 1) / 2 per dimension
    one = gaussian_kl(torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64))
    torch.testing.assert_close(one, torch.tensor([1.5 * (torch.e - 1)], dtype=torch.float64))
    assert gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0


def test_vae_loss_adds_beta_times_kl(images):
    vae_module = importlib.import_module("uadbench.methods.vae")
    method = create_method("vae", "smoke", image_shape=(H, W))
    model = method.model.eval()  # no dropout, BatchNorm running stats: the loss is a function of beta
    losses = {}
    for beta in (0.0, 0.001, 2.0):
        losses[beta] = vae_module.vae_loss(model, images, beta=beta, generator=torch.Generator().manual_seed(4))
    total0, recon0, kl0 = losses[0.0]
    assert kl0 > 0
    torch.testing.assert_close(total0, recon0)
    for beta in (0.001, 2.0):
        total, recon, kl = losses[beta]
        torch.testing.assert_close(recon, recon0)
        torch.testing.assert_close(total, recon0 + beta * kl0)
    assert create_config("vae", "paper").beta == 0.001


def test_vae_beta_pulls_posterior_to_prior(train_data):
    x = train_data.all_slices()
    kls = {}
    for beta in (0.0, 10.0):
        torch.manual_seed(0)
        method = create_method("vae", "smoke", image_shape=(H, W), steps=40, beta=beta)
        method.fit(train_data, None, _ctx())
        with torch.no_grad():
            from uadbench.nn.autoencoders import gaussian_kl

            kls[beta] = float(gaussian_kl(*method.model.encode(x)).mean())
    assert kls[10.0] < 0.5 * kls[0.0]


def test_vae_reconstructs_from_posterior_mean(fitted, images):
    method = fitted["vae"]
    mu, _ = method.model.encode(images)
    expected = method.model.decode(mu)
    recon = method.predict(images, generator=torch.Generator().manual_seed(0)).reconstruction
    torch.testing.assert_close(recon, expected)


# -- f-AnoGAN ---------------------------------------------------------------------------------------


class _LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so the penalty is (||w|| - 1)^2."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1), x


def test_gradient_penalty_closed_form():
    from uadbench.nn.gan import gradient_penalty

    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 6, 6, generator=g, dtype=torch.float64)
    critic = _LinearCritic(w)
    real = torch.rand(4, 1, 6, 6, generator=g, dtype=torch.float64)
    fake = torch.rand(4, 1, 6, 6, generator=g, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(1))
    torch.testing.assert_close(gp, (w.norm() - 1) ** 2)
    # the penalty is differentiable w.r.t. the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    gp.backward()
    torch.testing.assert_close(critic.w.grad, 2 * (w.norm() - 1) * w / w.norm())
    unit = _LinearCritic(w / w.norm())
    assert gradient_penalty(unit, real, fake).abs() < 1e-12


def test_gradient_penalty_uses_interpolates():
    """A quadratic critic's gradient depends on where it is evaluated: check against a hand count."""
    from uadbench.nn.gan import gradient_penalty

    class Quadratic(torch.nn.Module):
        def forward(self, x):
            return 0.5 * x.pow(2).flatten(1).sum(1)  # grad = x

    real = torch.full((3, 1, 2, 2), 1.0, dtype=torch.float64)
    fake = torch.full((3, 1, 2, 2), 3.0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    alpha = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    interp = real + alpha * (fake - real)
    expected = (interp.flatten(1).norm(dim=1) - 1).pow(2).mean()
    torch.testing.assert_close(gradient_penalty(Quadratic(), real, fake, gen), expected)


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_fanogan_two_stage_training(train_data):
    torch.manual_seed(0)
    logged: dict[str, list[float]] = {}

    def log(metrics, step):
        for k, v in metrics.items():
            logged.setdefault(k, []).append(v)

    method = create_method("fanogan", "smoke", image_shape=(H, W), gan_steps=3, encoder_steps=4)
    g0, d0 = _params(method.generator), _params(method.critic)
    ctx = _ctx(log_metrics=log)
    method.fit_gan(train_data, ctx)
    g1, d1, e1 = _params(method.generator), _params(method.critic), _params(method.encoder)
    assert any(not torch.equal(g0[k], g1[k]) for k in g0), "stage 1 must train the generator"
    assert any(not torch.equal(d0[k], d1[k]) for k in d0), "stage 1 must train the critic"
    gp = logged["fanogan/gradient_penalty"]
    assert gp and all(v > 0 and torch.isfinite(torch.tensor(v)) for v in gp)
    assert "fanogan/wasserstein" in logged

    method.fit_encoder(train_data, train_data, ctx)
    g2, d2, e2 = _params(method.generator), _params(method.critic), _params(method.encoder)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), f"generator {k} changed while the encoder trained"
    for k in d1:
        assert torch.equal(d1[k], d2[k]), f"critic {k} changed while the encoder trained"
    assert any(not torch.equal(e1[k], e2[k]) for k in e1), "stage 2 must train the encoder"
    assert all(not p.requires_grad for p in method.generator.parameters())
    assert "fanogan_encoder/loss" in logged and "fanogan_encoder/val_loss" in logged


def test_fanogan_map_is_the_residual_of_the_encoder_generator_reconstruction(fitted, images):
    method = fitted["fanogan"]
    out = method.predict(images, generator=torch.Generator().manual_seed(0))
    x = images * 2 - 1
    x_rec = out.reconstruction * 2 - 1
    image_term = (x - x_rec).pow(2).mean()
    feature_term = (method.critic(x)[1] - method.critic(x_rec)[1]).pow(2).mean()
    torch.testing.assert_close(method.izif_loss(x), image_term + method.config.kappa * feature_term)
    assert feature_term > 0
    torch.testing.assert_close(out.reconstruction, (method.generator(method.encoder(x)) + 1) / 2)
    assert (out.reconstruction >= 0).all() and (out.reconstruction <= 1).all()


def test_fanogan_paper_config():
    cfg = create_config("fanogan", "paper")
    assert (cfg.latent_dim, cfg.lr, cfg.architecture, cfg.n_critic, cfg.gp_weight) == (128, 1e-4, "resnet", 5, 10.0)
    with pytest.raises(ConfigError, match="architecture"):
        create_method("fanogan", "smoke", image_shape=(H, W), architecture="mlp")


def test_fanogan_resnet_architecture_runs(train_data):
    method = create_method("fanogan", "smoke", image_shape=(40, 56), architecture="resnet", width=2)
    x = torch.rand(2, 1, 40, 56)
    out = method.predict(x, generator=torch.Generator())
    assert out.anomaly_map.shape == x.shape and torch.isfinite(out.anomaly_map).all()
    _, feats = method.critic(x * 2 - 1)
    assert feats.shape == (2, 16, 5, 7)  # 8 * width channels at 1/8 of the padded (40, 56)
    small = create_method("fanogan", "smoke", image_shape=(H, W), architecture="resnet", width=2, gan_steps=1)
    small.fit(train_data, None, _ctx())


# -- DAE --------------------------------------------------------------------------------------------


def _dae():
    return importlib.import_module("uadbench.methods.dae")


def test_coarse_noise_grid_values_have_std_0_2():
    """With corners aligned, a 31-pixel side puts the 16 grid values on every second pixel."""
    dae = _dae()
    field = dae.coarse_noise_field((200, 1, 31, 31), generator=torch.Generator().manual_seed(0), roll=False)
    nodes = field[..., ::2, ::2]
    assert nodes.shape[-2:] == (16, 16)
    n = nodes.numel()  # 51,200 i.i.d. N(0, 0.2^2) draws: std within ~1 %
    assert abs(nodes.std().item() - 0.2) < 0.2 * 4 / (2 * n) ** 0.5 * 2
    assert abs(nodes.mean().item()) < 4 * 0.2 / n**0.5
    scaled = dae.coarse_noise_field((50, 1, 31, 31), generator=torch.Generator().manual_seed(0), std=0.5, roll=False)
    assert abs(scaled[..., ::2, ::2].std().item() - 0.5) < 0.02


def test_coarse_noise_pixel_std_matches_bilinear_closed_form():
    """Between grid nodes the std is 0.2 * sqrt(sum of squared interpolation weights)."""
    import torch.nn.functional as F

    dae = _dae()
    size = 96
    basis = torch.eye(16 * 16).view(256, 1, 16, 16)
    weights = F.interpolate(basis, size=(size, size), mode="bilinear", align_corners=True)
    expected_var = (0.2**2 * weights.pow(2).sum(dim=0)).mean()  # pooled over pixels
    field = dae.coarse_noise_field((64, 1, size, size), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(field.var(), expected_var, rtol=0.05, atol=0)
    assert 0.12 < field.std() < 0.2


def test_coarse_noise_is_spatially_coarse():
    dae = _dae()
    field = dae.coarse_noise_field((16, 1, 96, 96), generator=torch.Generator().manual_seed(2))
    a, b = field[..., :, :-1].flatten(), field[..., :, 1:].flatten()
    neighbour_corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert neighbour_corr > 0.9  # white noise would give ~0
    # almost no energy above twice the 16x16 grid's Nyquist frequency (8 cycles per image)
    spectrum = torch.fft.rfft2(field).abs().pow(2).mean(dim=(0, 1))
    fy = torch.fft.fftfreq(96).abs().view(-1, 1) * 96
    fx = torch.fft.rfftfreq(96).view(1, -1) * 96
    high = (fy > 16) | (fx > 16)
    assert spectrum[high].sum() / spectrum.sum() < 0.05  # (the roll's wrap-around seam adds a little)
    white = torch.fft.rfft2(torch.randn(16, 1, 96, 96) * 0.2).abs().pow(2).mean(dim=(0, 1))
    assert white[high].sum() / white.sum() > 0.8


def test_coarse_noise_is_zero_outside_foreground_and_seeded():
    dae = _dae()
    images = _volumes(n=1, z=4, seed=3).permute(0, 3, 1, 2).reshape(-1, 1, H, W)
    noise = dae.coarse_noise(images, generator=torch.Generator().manual_seed(0))
    background = images <= 0
    assert background.any() and (~background).any()
    assert (noise[background] == 0).all()
    assert (noise[~background] != 0).float().mean() > 0.99
    again = dae.coarse_noise(images, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise, again, rtol=0, atol=0)
    other = dae.coarse_noise(images, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(noise, other)


def test_coarse_noise_roll_translates_the_field():
    dae = _dae()
    shape = (2, 1, 40, 40)
    rolled = dae.coarse_noise_field(shape, generator=torch.Generator().manual_seed(4), roll=True)
    plain = dae.coarse_noise_field(shape, generator=torch.Generator().manual_seed(4), roll=False)
    matches = [
        (dy, dx)
        for dy in range(40)
        for dx in range(40)
        if torch.equal(torch.roll(plain, shifts=(dy, dx), dims=(-2, -1)), rolled)
    ]
    assert len(matches) == 1  # the same field, translated by one (dy, dx) for the whole batch


def test_dae_loss_is_foreground_l2(images):
    dae = _dae()
    method = create_method("dae", "smoke", image_shape=(H, W))
    model = method.model.eval()
    noise = dae.coarse_noise(images, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(images + noise)
        expected = ((out - images) ** 2 * (images > 0)).mean()
        torch.testing.assert_close(dae.dae_loss(model, images, noise), expected)


def test_dae_background_residual_is_zero(fitted, images):
    out = fitted["dae"].predict(images, generator=torch.Generator())
    assert (out.anomaly_map[images <= 0] == 0).all()


def test_dae_unet_layout():
    from uadbench.nn.dae_unet import DenoisingUNet, WSConv2d, group_count

    assert [group_count(c) for c in (64, 128, 256, 512, 16)] == [8, 16, 16, 32, 4]
    net = DenoisingUNet(depth=4, base_channels=64)
    convs = [m for m in net.modules() if isinstance(m, WSConv2d)]
    assert sorted({c.out_channels for c in convs}) == [64, 128, 256, 512]
    assert any(isinstance(m, torch.nn.SiLU) for m in net.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    conv = convs[0]
    w = conv.weight
    standardised = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(w.var(dim=(1, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, standardised, conv.bias))


def test_cosine_lr_matches_torch_scheduler():
    dae = _dae()
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for step in range(1, 31):
        assert dae.cosine_lr(step, 0.1, 10) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()


def test_dae_learns_to_remove_noise(train_data):
    dae = _dae()
    torch.manual_seed(0)
    method = create_method("dae", "smoke", image_shape=(H, W), steps=40, lr=3e-3)
    x = train_data.all_slices()
    noise = dae.coarse_noise(x, generator=torch.Generator().manual_seed(9))
    before = dae.dae_loss(method.model.eval(), x, noise).item()
    method.fit(train_data, None, _ctx())
    with torch.no_grad():
        after = dae.dae_loss(method.model.eval(), x, noise).item()
    noisy = (noise**2).mean().item()  # the loss of the identity map
    assert after < before and after < noisy
