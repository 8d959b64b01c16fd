"""f-AnoGAN: WGAN-GP trained on healthy slices, then an izi_f encoder into its latent space.

Paper: Schlegl et al., "f-AnoGAN: Fast unsupervised anomaly detection with generative adversarial
networks", Medical Image Analysis 54 (2019) 30-44; used as the "AnoGAN" baseline (latent size 128,
learning rate 1e-4) by Behrendt et al., arXiv 2312.04215.
Original code: https://github.com/tSchlegl/f-AnoGAN (TensorFlow); the brain-MRI reimplementation
of Baur et al. (2021) is at https://github.com/StefanDenn3r/Unsupervised_Anomaly_Detection_Brain_MRI.

Training, two stages:
1. WGAN-GP (Gulrajani et al. 2017): ``n_critic = 5`` critic updates per generator update, a fresh
   real batch per critic update, gradient-penalty weight 10, ``z ~ N(0, I)``, Adam with lr 1e-4 and
   betas (0.5, 0.9) for both networks.
2. izi_f encoder: the generator and critic are frozen; the encoder E (tanh output) is trained on
   ``mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)`` with ``kappa = 1``, ``f`` the
   critic's last feature map.

Test time: the anomaly map is the residual ``|x - G(E(x))|`` (in [0, 1] intensity units), as the
paper evaluates every method by its voxel maps. f-AnoGAN's slice score ``A(x) = mean((x -
G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)`` is the encoder's training loss
(:meth:`FAnoGAN.izif_loss`); the voxel-level protocol does not use it.

Deviations from the paper:
- The generator and critic follow the original's residual design as Baur et al. reimplement it
  (base width 64, 8w channels at 1/8 resolution) but start from the grid's own 1/8 size (12x12 at
  96x96) instead of a fixed 64x64 input, and normalise with GroupNorm(1, C) (layer norm over
  C, H, W) where Baur et al. normalise each channel over H, W.
- The critic reads the score out as a linear map of the spatially averaged last feature map.
- The encoder is Baur et al.'s strided-convolution encoder (5x5, 32/64/128 filters) with a dense
  tanh output, as in their reimplementation; it was not checked against the original TensorFlow
  encoder.
- Adam betas (0.5, 0.9) follow Baur et al.'s reimplementation; the paper states only the lr.
- Step budgets: ``gan_steps`` generator updates, then ``encoder_steps`` encoder updates (the paper
  trains in epochs). ``FitContext.max_steps`` caps each stage separately.
- Images whose sides are not multiples of 8 (16 for "dcgan") are padded with background inside
  the networks.
- The ``cpu`` and ``smoke`` presets use a light DCGAN-style generator/critic (``architecture =
  "dcgan"``) and fewer critic steps; they are budget presets, not the paper's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from uadbench.config import require_positive
from uadbench.errors import ConfigError
from uadbench.method import AnomalyOutput, FitContext, Method
from uadbench.nn.gan import LatentEncoder, build_gan, gradient_penalty
from uadbench.nn.utils import module_device
from uadbench.registry import register_method
from uadbench.training import train_loop


@dataclass(frozen=True)
class FAnoGANConfig:
    latent_dim: int = 128
    architecture: Literal["resnet", "dcgan"] = "resnet"
    width: int = 64
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    n_critic: int = 5
    gp_weight: float = 10.0
    kappa: float = 1.0
    batch_size: int = 32
    gan_steps: int = 19200
    encoder_steps: int = 19200

    def __post_init__(self) -> None:
        require_positive(self, "latent_dim", "width", "encoder_channels", "n_critic")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas (Adam's) must lie in [0, 1), got {self.betas}")
        if self.gp_weight < 0 or self.kappa < 0:
            raise ConfigError(f"gp_weight and kappa must be >= 0, got {self.gp_weight} and {self.kappa}")


def _freeze(module: torch.nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


@register_method("fanogan")
class FAnoGAN(Method):
    """f-AnoGAN: WGAN-GP plus izi_f encoder; residual map of the encoder-generator reconstruction."""

    Config: ClassVar[type] = FAnoGANConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # 64x64 grid: about 95 s on one idle CPU thread (GAN stage about 75 s); light DCGAN networks
        # and 2 critic steps per generator step buy more generator updates within the budget.
        "cpu": {
            "architecture": "dcgan", "width": 16, "encoder_channels": (16, 32, 64), "lr": 5e-4,
            "n_critic": 2, "batch_size": 16, "gan_steps": 500, "encoder_steps": 300,
        },
        "smoke": {
            "latent_dim": 8, "architecture": "dcgan", "width": 2, "encoder_channels": (4, 4, 4), "n_critic": 2, "batch_size": 4,
            "gan_steps": 2, "encoder_steps": 3,
        },
    }

    def __init__(self, config: FAnoGANConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        if config.n_critic < 1:
            raise ConfigError(f"method 'fanogan'.n_critic must be >= 1, got {config.n_critic}")
        if len(config.encoder_channels) < 1:
            raise ConfigError("method 'fanogan'.encoder_channels must list at least one width")
        if min(self.image_shape) < 8:
            raise ConfigError(f"image_shape must be at least 8x8 for f-AnoGAN, got {self.image_shape}")
        self.generator, self.critic = build_gan(config.architecture, self.image_shape, config.latent_dim, config.width)
        self.encoder = LatentEncoder(self.image_shape, tuple(config.encoder_channels), config.latent_dim)

    # -- training -------------------------------------------------------------------------------
    def fit(self, train, val, ctx: FitContext) -> None:
        self.fit_gan(train, ctx)
        self.fit_encoder(train, val, ctx)

    def _noise_generator(self, ctx: FitContext) -> torch.Generator:
        seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
        return torch.Generator(device=ctx.device).manual_seed(seed)

    def fit_gan(self, train, ctx: FitContext) -> None:
        """Stage 1: WGAN-GP on healthy slices (``n_critic`` critic steps per generator step)."""
        cfg = self.config
        self.generator.to(ctx.device).train()
        self.critic.to(ctx.device).train()
        for p in list(self.generator.parameters()) + list(self.critic.parameters()):
            p.requires_grad_(True)
        steps = int(ctx.max_steps if ctx.max_steps is not None else cfg.gan_steps)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        noise = self._noise_generator(ctx)
        batches = train.batches(cfg.batch_size, ctx.generator)

        def sample_z(n: int) -> Tensor:
            return torch.randn(n, cfg.latent_dim, generator=noise, device=ctx.device)

        log: dict[str, float] = {}
        for step in range(1, steps + 1):
            # 1. critic: maximise D(real) - D(fake), keep its gradient norm near 1
            for _ in range(cfg.n_critic):
                real = next(batches).to(ctx.device) * 2 - 1
                with torch.no_grad():
                    fake = self.generator(sample_z(real.shape[0]))
                d_real, _ = self.critic(real)
                d_fake, _ = self.critic(fake)
                gp = gradient_penalty(self.critic, real, fake, noise)
                loss_d = d_fake.mean() - d_real.mean() + cfg.gp_weight * gp
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            # 2. generator: maximise D(G(z))
            for p in self.critic.parameters():
                p.requires_grad_(False)
            loss_g = -self.critic(self.generator(sample_z(cfg.batch_size)))[0].mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for p in self.critic.parameters():
                p.requires_grad_(True)
            if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
                raise FloatingPointError(f"fanogan: GAN losses became non-finite at step {step}")
            log = {
                "fanogan/critic_loss": float(loss_d.detach()),
                "fanogan/generator_loss": float(loss_g.detach()),
                "fanogan/gradient_penalty": float(gp.detach()),
                "fanogan/wasserstein": float((d_real.mean() - d_fake.mean()).detach()),
            }
            if step % 25 == 0 or step == steps:
                ctx.log_metrics(log, step)
                ctx.progress(f"fanogan gan step {step}/{steps} critic {log['fanogan/critic_loss']:.4f}")
        self.last_gan_metrics = log
        _freeze(self.generator)
        _freeze(self.critic)

    def izif_loss(self, x: Tensor) -> Tensor:
        """Batch-mean izi_f loss for images ``x`` in [-1, 1]: image MSE + kappa * feature MSE."""
        x_rec = self.generator(self.encoder(x))
        _, f_x = self.critic(x)
        _, f_rec = self.critic(x_rec)
        return (x - x_rec).pow(2).mean() + self.config.kappa * (f_x - f_rec).pow(2).mean()

    def fit_encoder(self, train, val, ctx: FitContext) -> None:
        """Stage 2: train the encoder with the generator and critic frozen."""
        cfg = self.config
        _freeze(self.generator)
        _freeze(self.critic)
        self.generator.to(ctx.device)
        self.critic.to(ctx.device)
        self.encoder.to(ctx.device).train()
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        train_loop(
            parameters=self.encoder.parameters(), loss_fn=lambda batch, step: self.izif_loss(batch * 2 - 1),
            train=train, ctx=ctx, steps=cfg.encoder_steps, batch_size=cfg.batch_size, lr=cfg.lr,
            betas=tuple(cfg.betas), name="fanogan_encoder",
        )
        self.encoder.eval()
        if val is not None:
            with torch.no_grad():
                loss = self.izif_loss(val.epoch(ctx.generator).to(ctx.device) * 2 - 1)
            ctx.log_metrics({"fanogan_encoder/val_loss": float(loss)}, 0)

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        for m in (self.generator, self.critic, self.encoder):
            m.eval()
        x = images.to(module_device(self.generator)) * 2 - 1
        x_rec = self.generator(self.encoder(x))
        recon = ((x_rec + 1) / 2).to(images.device)
        return AnomalyOutput(anomaly_map=(images - recon).abs(), reconstruction=recon)

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "encoder": self.encoder.state_dict(),
            "image_shape": list(self.image_shape),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.encoder.load_state_dict(state["encoder"])
        for m in (self.generator, self.critic, self.encoder):
            m.eval()
