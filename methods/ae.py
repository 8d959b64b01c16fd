"""AE: convolutional autoencoder with a dense bottleneck; anomaly map ``|x - x_hat|``.

Paper: the AE baseline of Behrendt et al., "Guided Reconstruction with Conditioned Diffusion
Models for Unsupervised Anomaly Detection in Brain MRIs" (arXiv 2312.04215), which follows the
dense-bottleneck autoencoders of Baur et al., "Autoencoders for unsupervised anomaly segmentation
in brain MR images: a comparative study", Medical Image Analysis 69 (2021) 101952.
Original code: the cDDPM repository (https://github.com/FinnBehrendt/Conditioned-Diffusion-Models-UAD)
holds no AE code; Baur et al.'s comparison code is at https://github.com/StefanDenn3r/Unsupervised_Anomaly_Detection_Brain_MRI.

Training: Adam, learning rate 1e-4, batch 32, one random axial slice per training volume per
epoch, 1600 epochs (cDDPM paper, §7 of the project spec: about 19.2k steps for 385 IXI volumes).

Architecture (Baur et al.'s dense AE, see :mod:`uadbench.nn.autoencoders`): 5x5 stride-2
convolutions with 32, 64, 128, 128 filters, a 1x1 squeeze to 16 channels, a 128-d dense latent
with dropout 0.2, a mirrored transposed-convolution decoder; loss: l1 summed over pixels,
averaged over the batch.

Deviations from the paper:
- The cDDPM paper does not publish its AE's layers; the layout above is Baur et al.'s. Baur et al.
  stop downsampling at an 8x8 grid for 128x128 inputs; here the number of levels is
  ``len(channels)`` (4 levels give a 6x6 grid at 96x96).
- The step budget is expressed in optimiser steps, not epochs; no checkpoint selection on a
  validation loss (the final weights are kept); the validation loss is only logged.
- Images whose sides are not multiples of 16 are zero-padded inside the network and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from uadbench.config import require_positive
from uadbench.method import FitContext, ReconstructionMethod
from uadbench.nn.autoencoders import DenseBottleneckAutoencoder, reconstruction_loss
from uadbench.nn.utils import module_device
from uadbench.registry import register_method
from uadbench.training import train_loop


@dataclass(frozen=True)
class AEConfig:
    channels: tuple[int, ...] = (32, 64, 128, 128)
    latent_dim: int = 128
    kernel_size: int = 5
    dropout: float = 0.2
    loss: Literal["l1", "l2"] = "l1"
    lr: float = 1e-4
    batch_size: int = 32
    steps: int = 19200

    def __post_init__(self) -> None:
        require_positive(self, "channels", "latent_dim", "kernel_size")


@register_method("ae")
class Autoencoder(ReconstructionMethod):
    """Convolutional autoencoder with a dense bottleneck (Baur et al. 2021 style)."""

    Config: ClassVar[type] = AEConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # 64x64 grid: about 65 s on one idle CPU thread.
        "cpu": {"channels": (16, 32, 64, 64), "lr": 1e-3, "batch_size": 16, "steps": 1500},
        "smoke": {"channels": (4, 8), "latent_dim": 8, "kernel_size": 3, "lr": 1e-3, "batch_size": 4, "steps": 3},
    }

    def __init__(self, config: AEConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        self.model = DenseBottleneckAutoencoder(
            self.image_shape, tuple(config.channels), config.latent_dim, config.kernel_size, config.dropout
        )

    def fit(self, train, val, ctx: FitContext) -> None:
        cfg = self.config
        self.model.to(ctx.device).train()

        def loss_fn(batch: Tensor, step: int) -> Tensor:
            return reconstruction_loss(self.model(batch), batch, cfg.loss)

        train_loop(
            parameters=self.model.parameters(), loss_fn=loss_fn, train=train, ctx=ctx,
            steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, name="ae",
        )
        self.model.eval()
        if val is not None:
            x = val.epoch(ctx.generator).to(ctx.device)
            with torch.no_grad():
                ctx.log_metrics({"ae/val_loss": float(reconstruction_loss(self.model(x), x, cfg.loss))}, 0)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        self.model.eval()
        return self.model(images.to(module_device(self.model))).to(images.device)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "image_shape": list(self.image_shape)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.model.eval()
