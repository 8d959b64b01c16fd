"""The diffusion math shared by DDPM, pDDPM and cDDPM: forward noising, the x0 loss, reconstruction.

Following Behrendt et al. (cDDPM, arXiv 2312.04215; METHOD_SPEC.md §1.5-1.6), images live in
[-1, 1]; the network predicts x0 directly; training draws ``t ~ U{0, ..., T-1}`` per sample and
minimises the mean L1 distance between the prediction and x0. At test time the reconstruction is
the single-step estimate ``f(x_t, t)`` at one index (499 for ``t_test = 500``), or the mean of
single-step estimates at several indices, each with fresh noise (the ensemble 250/500/750). Beyond
the paper, :meth:`DiffusionProcess.ddim_x0` runs a deterministic DDIM chain (Song et al., 2021) from
any index with a chosen number of steps; one step is the single-step estimate.

Everything random is drawn from an explicit ``torch.Generator`` on the CPU and then moved to the
data's device, so the same generator seed gives the same result on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from uadbench.diffusion.noise import NoiseSampler, SimplexNoise
from uadbench.diffusion.regions import NoisingStrategy, WholeImage, composite
from uadbench.diffusion.schedule import NoiseSchedule
from uadbench.errors import ConfigError

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x_t, t) -> x0_hat, condition already bound


@dataclass
class TrainingBatch:
    """What the loss sees for one batch (exposed so tests can inspect the noising)."""

    x0: Tensor
    x_t: Tensor
    t: Tensor
    noise: Tensor
    region: Tensor | None


@dataclass
class DiffusionProcess:
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule.create)
    noise: NoiseSampler = field(default_factory=SimplexNoise)
    strategy: NoisingStrategy = field(default_factory=WholeImage)

    # -- forward process ----------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, per-sample t of shape (B,)."""
        a = self.schedule.signal(t).view(-1, *([1] * (x0.dim() - 1)))
        s = self.schedule.noise_scale(t).view(-1, *([1] * (x0.dim() - 1)))
        return a * x0 + s * noise

    def sample_noise(self, like: Tensor, generator: torch.Generator) -> Tensor:
        return self.noise(tuple(like.shape), generator, like.device).to(dtype=like.dtype)

    # -- training -----------------------------------------------------------------------------
    def training_batch(self, x0: Tensor, generator: torch.Generator) -> TrainingBatch:
        """1. draw t per sample; 2. draw noise; 3. pick the noised region; 4. noise it."""
        t = torch.randint(self.schedule.timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        noise = self.sample_noise(x0, generator)
        region = self.strategy.train_region(tuple(x0.shape), generator)
        if region is not None:
            region = region.to(device=x0.device, dtype=x0.dtype)
        x_t = composite(self.q_sample(x0, t, noise), x0, region)
        return TrainingBatch(x0=x0, x_t=x_t, t=t, noise=noise, region=region)

    def training_loss(self, denoiser: Denoiser, x0: Tensor, generator: torch.Generator) -> Tensor:
        """Mean L1 between x0 and the prediction (clean outside the noised region)."""
        batch = self.training_batch(x0, generator)
        pred = composite(denoiser(batch.x_t, batch.t), x0, batch.region)
        return F.l1_loss(pred.float(), x0.float())

    # -- reconstruction -----------------------------------------------------------------------
    def _index(self, t_index: int, b: int, device) -> Tensor:
        self.schedule.check_index(t_index)
        return torch.full((b,), int(t_index), dtype=torch.long, device=device)

    def single_step_x0(self, denoiser: Denoiser, x0: Tensor, t_index: int, noise: Tensor) -> Tensor:
        """Noise to ``t_index`` and predict x0 once per test region; paste the regions together."""
        t = self._index(t_index, x0.shape[0], x0.device)
        x_t_full = self.q_sample(x0, t, noise)
        recon = torch.zeros_like(x0)
        for region in self.strategy.test_regions(tuple(x0.shape)):
            if region is None:
                return denoiser(x_t_full, t)
            region = region.to(device=x0.device, dtype=x0.dtype)
            pred = denoiser(composite(x_t_full, x0, region), t)
            recon = recon + region * pred
        return recon

    def ddim_x0(
        self, denoiser: Denoiser, x0: Tensor, t_index: int, noise: Tensor, num_steps: int
    ) -> Tensor:
        """Deterministic DDIM chain from ``t_index`` down to 0 in ``num_steps`` network calls.

        The visited indices are ``linspace(t_index, 0, num_steps)`` rounded; at each one the model
        predicts x0, the implied noise is ``(x_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t)``, and the next
        state re-noises x0_hat with it. With a patch strategy every step keeps the image clean outside
        the region being reconstructed, as in training.
        """
        if num_steps < 1:
            raise ConfigError(f"ddim_steps must be at least 1, got {num_steps}")
        t0 = self._index(t_index, x0.shape[0], x0.device)
        indices = torch.linspace(t_index, 0, num_steps).round().long().unique_consecutive().tolist()
        x_t_full = self.q_sample(x0, t0, noise)
        recon = torch.zeros_like(x0)
        for region in self.strategy.test_regions(tuple(x0.shape)):
            if region is not None:
                region = region.to(device=x0.device, dtype=x0.dtype)
            x_t = composite(x_t_full, x0, region)
            for k, idx in enumerate(indices):
                t = self._index(idx, x0.shape[0], x0.device)
                pred = composite(denoiser(x_t, t), x0, region)
                if k == len(indices) - 1:
                    break
                t_next = self._index(indices[k + 1], x0.shape[0], x0.device)
                a = self.schedule.signal(t).view(-1, 1, 1, 1)
                s = self.schedule.noise_scale(t).view(-1, 1, 1, 1)
                eps = (x_t - a * pred) / s
                x_t = composite(self.q_sample(pred, t_next, eps), x0, region)
            if region is None:
                return pred
            recon = recon + region * pred
        return recon

    def reconstruct(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        generator: torch.Generator,
        *,
        t_indices: Sequence[int] = (499,),
        ddim_steps: int | None = None,
    ) -> Tensor:
        """Mean over ``t_indices`` of the x0 estimate, fresh noise (one shared field) per index."""
        if not t_indices:
            raise ConfigError("at least one test timestep is needed")
        total = torch.zeros_like(x0)
        for t_index in t_indices:
            noise = self.sample_noise(x0, generator)
            if ddim_steps is None:
                total = total + self.single_step_x0(denoiser, x0, t_index, noise)
            else:
                total = total + self.ddim_x0(denoiser, x0, t_index, noise, ddim_steps)
        return total / len(t_indices)
