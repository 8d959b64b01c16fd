"""A diffusion anomaly model: UNet denoiser, optional condition encoder, and the diffusion process.

``DiffusionModel`` is the one ``nn.Module`` behind the ``ddpm``, ``pddpm``, ``cddpm`` and ``mhd``
methods; they differ only in the noising strategy of the process (whole image vs grid patches), in
whether a condition encoder sees the clean slice, and in how they use the reconstructions. Images
are slices in [0, 1] outside the model and [-1, 1] inside the process. How the model is configured,
trained and validated is :mod:`uadbench.diffusion.method`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uadbench.diffusion.process import Denoiser, DiffusionProcess
from uadbench.errors import ConfigError
from uadbench.nn.unet import DiffusionUNet
from uadbench.nn.utils import eval_mode, module_device


class DiffusionModel(nn.Module):
    """x0-predicting diffusion model on slices in [0, 1]; the encoder (if any) sees the clean slice."""

    def __init__(self, unet: DiffusionUNet, process: DiffusionProcess, encoder: nn.Module | None = None):
        super().__init__()
        self.unet = unet
        self.encoder = encoder
        self.process = process

    def condition(self, images: Tensor) -> Tensor | None:
        """Context vector of the clean slices in [0, 1] (None for an unconditioned model)."""
        return None if self.encoder is None else self.encoder(images)

    def denoiser(self, cond: Tensor | None) -> Denoiser:
        """``(x_t, t) -> x0_hat`` with the condition bound."""
        return lambda x_t, t: self.unet(x_t, t, cond)

    def loss(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Training loss for a batch of clean slices in [0, 1]."""
        cond = self.condition(images)
        return self.process.training_loss(self.denoiser(cond), images * 2 - 1, generator)

    @torch.no_grad()
    def reconstruct(
        self,
        images: Tensor,
        generator: torch.Generator,
        *,
        t_indices: Sequence[int] = (499,),
        ddim_steps: int | None = None,
    ) -> Tensor:
        """One reconstruction in [0, 1] space (not clamped, as the reference), on ``images``' device.

        The mean of the x0 estimates from every index of ``t_indices`` (fresh noise each); the
        model runs in eval mode and the condition is computed once for all of them.
        """
        with eval_mode(self):
            x = images.to(device=module_device(self), dtype=torch.float32)
            cond = self.condition(x)
            recon = self.process.reconstruct(
                self.denoiser(cond), x * 2 - 1, generator, t_indices=t_indices, ddim_steps=ddim_steps
            )
        return ((recon + 1) / 2).to(images.device)

    @torch.no_grad()
    def sample_reconstructions(
        self, images: Tensor, generator: torch.Generator, *, num_samples: int, t_index: int = 499
    ) -> Tensor:
        """``num_samples`` stochastic reconstructions, (N, B, ...) in [0, 1] space, on ``images``' device.

        Each is the single-step x0 estimate from schedule index ``t_index`` with fresh noise (one
        field per sample, shared by the slices of the batch), drawn from ``generator`` in order; the
        condition is computed once for all of them. Sample ``k`` equals what :meth:`reconstruct`
        with ``t_indices=(t_index,)`` returns after ``k`` earlier draws from the same generator.
        """
        if num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples}")
        with eval_mode(self):
            clean = images.to(device=module_device(self), dtype=torch.float32)
            x = clean * 2 - 1
            denoise = self.denoiser(self.condition(clean))
            samples = [
                self.process.reconstruct(denoise, x, generator, t_indices=(t_index,)) for _ in range(num_samples)
            ]
        return ((torch.stack(samples) + 1) / 2).to(images.device)
