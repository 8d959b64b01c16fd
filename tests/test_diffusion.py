"""Diffusion core (UNet, encoder, schedule, simplex noise, process) and the ddpm/pddpm/cddpm methods."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import uadbench
from synthetic import brainlike_volumes
from uadbench.data import SliceDataset
from uadbench.diffusion.method import DiffusionConfig, build_process, build_unet, validation_loss
from uadbench.diffusion.model import DiffusionModel
from uadbench.diffusion.noise import (
    NORM_2D,
    SQUISH_2D,
    STRETCH_2D,
    GaussianNoise,
    SimplexNoise,
    create_noise,
    opensimplex2d,
    simplex_octaves,
)
from uadbench.diffusion.process import DiffusionProcess
from uadbench.diffusion.regions import GridPatches, WholeImage
from uadbench.diffusion.schedule import NoiseSchedule
from uadbench.errors import ConfigError, UadbenchError
from uadbench.method import FitContext
from uadbench.methods.cddpm import pretrain_encoder
from uadbench.nn.encoders import create_condition_encoder
from uadbench.nn.masked_image import MaskedImageModel, random_patch_mask
from uadbench.nn.unet import DiffusionUNet, count_parameters, timestep_embedding

# -- parameter counts of the paper-sized networks (METHOD_SPEC.md §1.2) -----------------------


@pytest.mark.parametrize(
    "cond_dim, expected",
    [(512, 44.07e6), (None, 37.51e6)],
    ids=["conditional", "unconditional"],
)
def test_paper_unet_parameter_count(cond_dim, expected):
    unet = DiffusionUNet(base_channels=128, channel_mult=(1, 2, 2), num_res_blocks=3, cond_dim=cond_dim)
    assert abs(count_parameters(unet) - expected) / expected < 0.005


def test_paper_encoder_parameter_count():
    enc = create_condition_encoder("resnet50", cond_dim=512)
    assert abs(count_parameters(enc) - 24.55e6) / 24.55e6 < 0.005


def test_paper_presets_build_the_paper_networks():
    ddpm = uadbench.create_method("ddpm", "paper")
    assert abs(ddpm.num_parameters() - 37.51e6) / 37.51e6 < 0.005
    cfg = uadbench.create_config("cddpm", "paper")
    assert (cfg.encoder, cfg.cond_dim, cfg.ensemble, cfg.steps, cfg.lr, cfg.batch_size) == (
        "resnet50", 512, True, 14400, 1e-4, 32,
    )
    assert uadbench.create_config("pddpm", "paper").steps == 19200


def test_unknown_encoder_is_a_user_error():
    with pytest.raises(ConfigError, match="unknown timm encoder"):
        create_condition_encoder("resnet5O")


# -- UNet ---------------------------------------------------------------------------------------


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0, 7])
    emb = timestep_embedding(t, 8)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    assert torch.allclose(emb[1], torch.cat([torch.cos(7 * freqs), torch.sin(7 * freqs)]))
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_unet_shapes_zero_output_and_condition_checks():
    unet = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_head_channels=8, cond_dim=4)
    x = torch.randn(2, 1, 16, 16)
    out = unet(x, torch.tensor([1, 500]), torch.randn(2, 4))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output convolution
    with pytest.raises(ValueError, match="conditioned"):
        unet(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible"):
        unet(torch.randn(1, 1, 15, 16), torch.tensor([1]), torch.randn(1, 4))


def test_unet_condition_changes_the_output_through_film():
    torch.manual_seed(0)
    unet = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_head_channels=8, cond_dim=4)
    for p in unet.parameters():  # leave the zero init so the condition path is observable
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([10])
    a = unet(x, t, torch.zeros(1, 4))
    b = unet(x, t, torch.ones(1, 4))
    assert not torch.allclose(a, b)


# -- schedule -----------------------------------------------------------------------------------


def test_cosine_schedule_values():
    sched = NoiseSchedule.create("cosine", 1000)
    ab = sched.alphas_cumprod
    assert ab.shape == (1000,)
    np.testing.assert_allclose(ab[[249, 499, 749]].numpy(), [0.847, 0.494, 0.144], atol=5e-4)
    assert torch.all(ab[1:] < ab[:-1])
    with pytest.raises(ConfigError, match="schedule"):
        NoiseSchedule.create("quadratic")


# -- simplex noise --------------------------------------------------------------------------------

_G2 = [5, 2, 2, 5, -5, 2, -2, 5, 5, -2, 2, -5, -5, -2, -2, -5]


def _opensimplex_scalar(x: float, y: float, perm: list[int]) -> float:
    """K. Spencer's scalar OpenSimplex 2D (the branchy original), as the reference."""

    def extrapolate(xsb, ysb, dx, dy):
        i = perm[(perm[xsb & 0xFF] + ysb) & 0xFF] & 0x0E
        return _G2[i] * dx + _G2[i + 1] * dy

    so = (x + y) * STRETCH_2D
    xs, ys = x + so, y + so
    xsb, ysb = math.floor(xs), math.floor(ys)
    sq = (xsb + ysb) * SQUISH_2D
    dx0, dy0 = x - (xsb + sq), y - (ysb + sq)
    xins, yins = xs - xsb, ys - ysb
    value = 0.0
    for ox, oy in ((1, 0), (0, 1)):
        dx, dy = dx0 - ox - SQUISH_2D, dy0 - oy - SQUISH_2D
        a = 2 - dx * dx - dy * dy
        if a > 0:
            value += a**4 * extrapolate(xsb + ox, ysb + oy, dx, dy)
    if xins + yins <= 1:
        zins = 1 - xins - yins
        if zins > xins or zins > yins:
            if xins > yins:
                ext = (xsb + 1, ysb - 1, dx0 - 1, dy0 + 1)
            else:
                ext = (xsb - 1, ysb + 1, dx0 + 1, dy0 - 1)
        else:
            ext = (xsb + 1, ysb + 1, dx0 - 1 - 2 * SQUISH_2D, dy0 - 1 - 2 * SQUISH_2D)
    else:
        zins = 2 - xins - yins
        if zins < xins or zins < yins:
            if xins > yins:
                ext = (xsb + 2, ysb, dx0 - 2 - 2 * SQUISH_2D, dy0 - 2 * SQUISH_2D)
            else:
                ext = (xsb, ysb + 2, dx0 - 2 * SQUISH_2D, dy0 - 2 - 2 * SQUISH_2D)
        else:
            ext = (xsb, ysb, dx0, dy0)
        xsb, ysb = xsb + 1, ysb + 1
        dx0, dy0 = dx0 - 1 - 2 * SQUISH_2D, dy0 - 1 - 2 * SQUISH_2D
    for vx, vy, dx, dy in ((xsb, ysb, dx0, dy0), ext):
        a = 2 - dx * dx - dy * dy
        if a > 0:
            value += a**4 * extrapolate(vx, vy, dx, dy)
    return value / NORM_2D


def test_vectorised_opensimplex_matches_scalar_algorithm():
    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(256, generator=g)
    pts = torch.rand(1500, 2, generator=g, dtype=torch.float64) * 60 - 30
    expected = torch.tensor([_opensimplex_scalar(float(a), float(b), perm.tolist()) for a, b in pts], dtype=torch.float64)
    got = opensimplex2d(pts[:, 0], pts[:, 1], perm)
    assert expected.abs().max() > 0.3
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_simplex_octaves_sum_scaled_fields():
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    field = simplex_octaves(12, 10, perm, octaves=2, persistence=0.8, frequency=64)
    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(10.0), indexing="ij")
    ref = opensimplex2d(xs / 64, ys / 64, perm) + 0.8 * opensimplex2d(xs / 32, ys / 32, perm)
    torch.testing.assert_close(field, ref)


def test_simplex_noise_statistics_sharing_and_determinism():
    noise = SimplexNoise()  # 6 octaves, persistence 0.8, frequency 64
    g = torch.Generator().manual_seed(0)
    stds, fields = [], []
    for _ in range(40):
        batch = noise((3, 1, 96, 96), g)
        assert torch.equal(batch[0], batch[1]) and torch.equal(batch[0], batch[2])  # shared field
        stds.append(float(batch[0].std()))
        fields.append(batch[0])
    # not unit variance: per-image std about 0.5-0.66 at 96x96, pooled about 0.58 (METHOD_SPEC §1.5)
    assert 0.5 < float(np.median(stds)) < 0.62, stds
    assert 0.5 < float(torch.stack(fields).std()) < 0.66
    assert float(torch.stack(fields).abs().max()) < 2.5
    a = noise((2, 1, 32, 32), torch.Generator().manual_seed(5))
    b = noise((2, 1, 32, 32), torch.Generator().manual_seed(5))
    c = noise((2, 1, 32, 32), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    per_sample = SimplexNoise(shared=False)((2, 1, 32, 32), torch.Generator().manual_seed(5))
    assert not torch.equal(per_sample[0], per_sample[1])


def test_noise_factory_and_errors():
    assert isinstance(create_noise("gaussian"), GaussianNoise)
    with pytest.raises(ConfigError, match="valid: simplex, gaussian"):
        create_noise("perlin")
    with pytest.raises(ConfigError):
        SimplexNoise(octaves=0)


# -- diffusion process ----------------------------------------------------------------------------


class LinearDenoiser:
    """A deterministic stand-in network that records what it was called with."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_t, t):
        self.calls.append((x_t.clone(), t.clone()))
        return 0.7 * x_t + t.float().view(-1, 1, 1, 1) / 1000


def _images(b=3, size=16, seed=0):
    return torch.rand(b, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_q_sample_formula():
    proc = DiffusionProcess()
    x0, eps = _images(), _images(seed=1)
    t = torch.tensor([0, 499, 999])
    ab = proc.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(proc.q_sample(x0, t, eps), ab.sqrt() * x0 + (1 - ab).sqrt() * eps)


def test_ensemble_averages_single_step_reconstructions():
    proc = DiffusionProcess()
    x0 = _images()
    den = LinearDenoiser()
    recon = proc.reconstruct(den, x0, torch.Generator().manual_seed(4), t_indices=(249, 499, 749))
    g = torch.Generator().manual_seed(4)
    singles = [proc.single_step_x0(den, x0, t, proc.sample_noise(x0, g)) for t in (249, 499, 749)]
    torch.testing.assert_close(recon, sum(singles) / 3)
    assert not torch.allclose(singles[0], singles[1])
    assert [int(t[0]) for _, t in den.calls[:3]] == [249, 499, 749]


def test_ddim_with_one_step_equals_single_step_estimate():
    x0 = _images()
    for strategy in (WholeImage(), GridPatches(2)):
        proc = DiffusionProcess(strategy=strategy)
        eps = proc.sample_noise(x0, torch.Generator().manual_seed(0))
        one = proc.ddim_x0(LinearDenoiser(), x0, 499, eps, num_steps=1)
        torch.testing.assert_close(one, proc.single_step_x0(LinearDenoiser(), x0, 499, eps))
        den = LinearDenoiser()
        multi = proc.ddim_x0(den, x0, 499, eps, num_steps=5)
        assert [int(t[0]) for _, t in den.calls[:5]] == [499, 374, 250, 125, 0]
        assert not torch.allclose(multi, one)


def test_ddim_recovers_x0_with_an_oracle_denoiser():
    proc = DiffusionProcess()
    x0 = _images()
    eps = proc.sample_noise(x0, torch.Generator().manual_seed(0))
    recon = proc.ddim_x0(lambda x_t, t: x0, x0, 700, eps, num_steps=4)
    torch.testing.assert_close(recon, x0)


def test_patch_training_noises_only_one_box_and_loss_comes_from_it():
    proc = DiffusionProcess(strategy=GridPatches(2))
    x0 = _images(b=8, size=16)
    batch = proc.training_batch(x0, torch.Generator().manual_seed(0))
    quadrants = GridPatches(2).box_masks(16, 16)
    for i in range(8):
        changed = (batch.x_t[i] != x0[i]).float()
        assert torch.equal(batch.x_t[i] * (1 - batch.region[i]), x0[i] * (1 - batch.region[i]))
        assert any(torch.equal(batch.region[i], q) for q in quadrants)
        assert changed.sum() > 0.9 * 64 and torch.all(changed <= batch.region[i])
    # a network that is wrong everywhere is only penalised inside the box; mean over all pixels
    wrong = lambda x_t, t: torch.full_like(x_t, 5.0)
    loss = proc.training_loss(wrong, x0, torch.Generator().manual_seed(0))
    expected = ((5.0 - x0).abs() * batch.region).mean()
    torch.testing.assert_close(loss, expected)


def test_patch_reconstruction_uses_four_passes_one_noise_field():
    proc = DiffusionProcess(strategy=GridPatches(2))
    x0 = _images(b=2, size=16)
    den = LinearDenoiser()
    eps = proc.sample_noise(x0, torch.Generator().manual_seed(0))
    recon = proc.single_step_x0(den, x0, 499, eps)
    assert len(den.calls) == 4
    full = proc.q_sample(x0, torch.full((2,), 499), eps)
    for (x_t, _), box in zip(den.calls, GridPatches(2).box_masks(16, 16)):
        torch.testing.assert_close(x_t, box * full + (1 - box) * x0)  # same field, one box noised
        torch.testing.assert_close(recon * box, (0.7 * x_t + 0.499) * box)  # box pasted


def test_whole_image_loss_is_plain_l1():
    proc = DiffusionProcess(noise=GaussianNoise())
    x0 = _images()
    loss = proc.training_loss(lambda x_t, t: x_t, x0, torch.Generator().manual_seed(2))
    batch = proc.training_batch(x0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(loss, (batch.x_t - x0).abs().mean())


def test_tiny_model_overfits_one_slice():
    torch.manual_seed(0)
    cfg = DiffusionConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_head_channels=8)
    model = DiffusionModel(build_unet(cfg), build_process(cfg))
    vols, _, _ = brainlike_volumes(1, shape=(16, 16, 3), seed=0)
    x = torch.from_numpy(vols[0][..., 1])[None, None].repeat(4, 1, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = model.loss(x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses



def test_sample_reconstructions_are_successive_single_step_reconstructions():
    torch.manual_seed(0)
    cfg = DiffusionConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_head_channels=8)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 4))
    model = DiffusionModel(build_unet(cfg, cond_dim=4), build_process(cfg), encoder)
    with torch.no_grad():  # the UNet's zero-initialised output layers would make every sample 0.5
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    x = _images(b=2).clamp(0, 1)
    model.train()
    samples = model.sample_reconstructions(x, torch.Generator().manual_seed(3), num_samples=3, t_index=299)
    assert samples.shape == (3, *x.shape) and model.training  # train mode restored
    g = torch.Generator().manual_seed(3)
    for k in range(3):  # sample k: what reconstruct gives after k earlier draws from the generator
        torch.testing.assert_close(samples[k], model.reconstruct(x, g, t_indices=(299,)), rtol=0, atol=0)
    assert not torch.equal(samples[0], samples[1])
    with pytest.raises(ConfigError, match="num_samples"):
        model.sample_reconstructions(x, g, num_samples=0)


# -- methods --------------------------------------------------------------------------------------

SHAPE = (16, 16)


def _data(n=3):
    vols, _, _ = brainlike_volumes(n, shape=(*SHAPE, 4), seed=0)
    return SliceDataset(vols)


@pytest.mark.parametrize("name", ["ddpm", "pddpm", "cddpm"])
def test_method_predict_is_deterministic_and_state_round_trips(name):
    torch.manual_seed(0)
    method = uadbench.create_method(name, "smoke", image_shape=SHAPE)
    method.fit(_data(), None, FitContext(generator=torch.Generator().manual_seed(0), max_steps=2))
    images = _data(1).all_slices()[:3]
    out1 = method.predict(images, generator=torch.Generator().manual_seed(9))
    out2 = method.predict(images, generator=torch.Generator().manual_seed(9))
    out3 = method.predict(images, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(out1.anomaly_map, out2.anomaly_map, rtol=0, atol=0)
    torch.testing.assert_close(out1.anomaly_map, (images - out1.reconstruction).abs())
    assert not torch.equal(out1.anomaly_map, out3.anomaly_map)
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    clone = uadbench.create_method(name, "smoke", image_shape=SHAPE)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    out4 = clone.predict(images, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out4.anomaly_map, out1.anomaly_map)


def test_cddpm_encoder_sees_the_clean_slice():
    method = uadbench.create_method("cddpm", "smoke", image_shape=SHAPE)
    seen = []
    method.model.encoder.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    images = _data(1).all_slices()[:2]
    method.model.loss(images, torch.Generator().manual_seed(0))
    method.predict(images, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2  # once in training, once per test batch (shared by the whole ensemble)
    for x in seen:
        torch.testing.assert_close(x, images)


def test_cddpm_encoder_is_trained_jointly():
    method = uadbench.create_method("cddpm", "smoke", image_shape=SHAPE)
    before = {k: v.clone() for k, v in method.model.encoder.state_dict().items()}
    # give the UNet non-zero output weights so gradients reach the condition path at once
    torch.nn.init.normal_(method.model.unet.out_conv.weight, std=0.1)
    method.fit(_data(), None, FitContext(generator=torch.Generator().manual_seed(0), max_steps=2))
    after = method.model.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())


def test_method_config_errors_are_user_errors():
    with pytest.raises(UadbenchError, match="divisible"):
        uadbench.create_method("ddpm", "smoke", image_shape=(17, 17))
    with pytest.raises(UadbenchError, match="test timesteps"):
        uadbench.create_config("ddpm", "smoke", t_test=0)
    with pytest.raises(UadbenchError, match="noise"):
        uadbench.create_config("ddpm", "smoke", noise="perlin")
    with pytest.raises(UadbenchError, match="patch_grid"):
        uadbench.create_config("pddpm", "smoke", patch_grid=0)


def test_ensemble_flag_selects_test_indices():
    assert uadbench.create_config("ddpm", "paper").test_indices == (499,)
    assert uadbench.create_config("ddpm", "paper", ensemble=True).test_indices == (249, 499, 749)
    assert uadbench.create_config("cddpm", "paper").test_indices == (249, 499, 749)


# -- masked-image pretraining of the cDDPM encoder ------------------------------------------------


def test_patch_mask_keeps_35_percent_of_a_3x3_grid():
    mask = random_patch_mask(50, (3, 3), 0.65, torch.Generator().manual_seed(0))
    assert mask.shape == (50, 3, 3)
    assert torch.all((1 - mask).sum(dim=(1, 2)) == 3)  # round(9 * 0.35) patches kept
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 10  # uniformly random choices


def test_masked_loss_ignores_visible_patches():
    enc = create_condition_encoder("resnet10t", cond_dim=8)
    mim = MaskedImageModel(enc, (64, 64), decoder_width=16)
    assert mim.stride == 32 and mim.grid == (2, 2)
    x = torch.rand(2, 1, 64, 64)
    loss = mim.loss(x, 0.65, torch.Generator().manual_seed(0))
    mask = random_patch_mask(2, (2, 2), 0.65, torch.Generator().manual_seed(0))
    mask = mask.repeat_interleave(32, 1).repeat_interleave(32, 2)[:, None]
    pred = mim.decoder(enc.forward_features(x * (1 - mask)))
    torch.testing.assert_close(loss, ((pred - x) ** 2 * mask).sum() / mask.sum())


def test_cddpm_pretraining_updates_backbone_and_reinitialises_head():
    torch.manual_seed(0)
    method = uadbench.create_method("cddpm", "smoke", image_shape=(64, 64), pretrain=True)
    enc = method.model.encoder
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    vols, _, _ = brainlike_volumes(2, shape=(64, 64, 2), seed=0)
    losses = pretrain_encoder(enc, method.config, SliceDataset(vols), FitContext(max_steps=2))
    assert len(losses) == 2 and all(np.isfinite(losses))
    after = enc.state_dict()
    assert not torch.equal(before["conv1.0.weight"], after["conv1.0.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])  # fresh head, not trained
    assert after["fc.weight"].shape == (16, enc.num_features)


def test_validation_tracking_logs_and_keeps_the_best_weights():
    logged = []
    method = uadbench.create_method("ddpm", "smoke", image_shape=SHAPE, val_every=1, lr=0.05)
    ctx = FitContext(generator=torch.Generator().manual_seed(0), max_steps=4, log_metrics=lambda m, s: logged.append((s, m)))
    method.fit(_data(), _data(2), ctx)
    val = {s: m["ddpm/val_loss"] for s, m in logged if "ddpm/val_loss" in m}
    assert sorted(val) == [1, 2, 3, 4]
    final = validation_loss(method.model, _data(2), seed=ctx.seed + 1, batch_size=method.config.batch_size)
    assert final == pytest.approx(min(val.values()), rel=1e-5)
