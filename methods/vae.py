"""VAE: variational autoencoder with a dense bottleneck; anomaly map ``|x - decoder(mu(x))|``.

Paper: the VAE baseline of Behrendt et al., "Guided Reconstruction with Conditioned Diffusion
Models for Unsupervised Anomaly Detection in Brain MRIs" (arXiv 2312.04215), with beta = 0.001 as
stated there, on the dense VAE of Baur et al., "Autoencoders for unsupervised anomaly segmentation
in brain MR images: a comparative study", Medical Image Analysis 69 (2021) 101952.
Original code: Baur et al.'s comparison, https://github.com/StefanDenn3r/Unsupervised_Anomaly_Detection_Brain_MRI
(the cDDPM repository, https://github.com/FinnBehrendt/Conditioned-Diffusion-Models-UAD, holds no VAE).

Model: the AE layout of :mod:`uadbench.nn.autoencoders` whose dense layer outputs the mean and the
log-variance of a diagonal Gaussian posterior over a 128-d latent. Loss per image:
``sum_pixels |x - x_hat| + beta * KL(q(z|x) || N(0, I))`` with ``x_hat`` decoded from one
reparameterised posterior sample, averaged over the batch (Baur et al.'s reductions, beta from the
cDDPM paper). Test time: the reconstruction is decoded from the posterior mean (no sampling).

Deviations from the paper:
- The cDDPM paper does not publish its VAE's layers or loss reductions; Baur et al.'s are used.
  Baur et al. predict log(sigma) and weight the KL term by 1; here the encoder predicts
  log(sigma^2) (clamped to [-30, 20] for stability) and the KL weight is the paper's beta.
- Baur et al. also apply dropout to the mean and log-sigma outputs; here dropout (0.2) acts on the
  pre-split dense output, i.e. on the same units.
- Step budget in optimiser steps; no checkpoint selection; images whose sides are not multiples
  of ``2**len(channels)`` are zero-padded inside the network and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from uadbench.config import require_positive
from uadbench.errors import ConfigError
from uadbench.method import FitContext, ReconstructionMethod
from uadbench.nn.autoencoders import DenseBottleneckAutoencoder, gaussian_kl, reconstruction_loss
from uadbench.nn.utils import module_device
from uadbench.registry import register_method
from uadbench.training import train_loop


@dataclass(frozen=True)
class VAEConfig:
    channels: tuple[int, ...] = (32, 64, 128, 128)
    latent_dim: int = 128
    kernel_size: int = 5
    dropout: float = 0.2
    beta: float = 0.001
    loss: Literal["l1", "l2"] = "l1"
    lr: float = 1e-4
    batch_size: int = 32
    steps: int = 19200

    def __post_init__(self) -> None:
        require_positive(self, "channels", "latent_dim", "kernel_size")
        if self.beta < 0:
            raise ConfigError(f"beta (the KL weight) must be >= 0, got {self.beta}")


def vae_loss(
    model: DenseBottleneckAutoencoder,
    x: Tensor,
    *,
    beta: float,
    kind: str = "l1",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, reconstruction, kl): ``recon + beta * kl``, each a batch mean of per-image sums."""
    x_hat, mu, logvar = model(x, generator=generator)
    recon = reconstruction_loss(x_hat, x, kind)
    kl = gaussian_kl(mu, logvar).mean()
    return recon + beta * kl, recon, kl


@register_method("vae")
class VariationalAutoencoder(ReconstructionMethod):
    """Dense-bottleneck VAE (beta = 0.001); reconstructs from the posterior mean."""

    Config: ClassVar[type] = VAEConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # 64x64 grid: about 65 s on one idle CPU thread.
        "cpu": {"channels": (16, 32, 64, 64), "lr": 1e-3, "batch_size": 16, "steps": 1500},
        "smoke": {"channels": (4, 8), "latent_dim": 8, "kernel_size": 3, "lr": 1e-3, "batch_size": 4, "steps": 3},
    }

    def __init__(self, config: VAEConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        if config.beta < 0:
            raise ConfigError(f"method 'vae'.beta must be >= 0, got {config.beta}")
        self.model = DenseBottleneckAutoencoder(
            self.image_shape, tuple(config.channels), config.latent_dim, config.kernel_size,
            config.dropout, variational=True,
        )

    def fit(self, train, val, ctx: FitContext) -> None:
        cfg = self.config
        self.model.to(ctx.device).train()
        # The reparameterisation noise comes from its own generator, seeded from the context's.
        noise = torch.Generator(device=ctx.device).manual_seed(
            int(torch.randint(2**62, (1,), generator=ctx.generator))
        )
        last: dict[str, float] = {}

        def loss_fn(batch: Tensor, step: int) -> Tensor:
            total, recon, kl = vae_loss(self.model, batch, beta=cfg.beta, kind=cfg.loss, generator=noise)
            last.update(recon=float(recon.detach()), kl=float(kl.detach()))
            if step % 25 == 0:
                ctx.log_metrics({"vae/recon": last["recon"], "vae/kl": last["kl"]}, step)
            return total

        train_loop(
            parameters=self.model.parameters(), loss_fn=loss_fn, train=train, ctx=ctx,
            steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, name="vae", generators=[noise],
        )
        self.model.eval()
        if val is not None:
            x = val.epoch(ctx.generator).to(ctx.device)
            with torch.no_grad():
                total, recon, kl = vae_loss(self.model, x, beta=cfg.beta, kind=cfg.loss, generator=noise)
            ctx.log_metrics({"vae/val_loss": float(total), "vae/val_recon": float(recon), "vae/val_kl": float(kl)}, 0)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        self.model.eval()
        mu, _ = self.model.encode(images.to(module_device(self.model)))
        return self.model.decode(mu).to(images.device)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "image_shape": list(self.image_shape)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.model.eval()
