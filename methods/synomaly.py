"""Synomaly: a DDPM trained on Synomaly noise, restored in several stages fused with the input.

Paper: Bi et al., "Synomaly Noise and Multi-Stage Diffusion: A Novel Approach for Unsupervised
Anomaly Detection in Medical Images" (arXiv 2411.04004; Medical Image Analysis 2025, 103737).
Original code: https://github.com/yuan-12138/Synomaly (``scripts_guided_diffusion/``:
``gaussian_diffusion.py::generate_synomaly_noise``, ``anomaly_detection.py::run_inference``,
``json_args/args_brats*.json``). METHOD_SPEC_DIFFUSION.md §5.

1. Synomaly noise (:func:`synomaly_noise`), per image: a Gaussian field ``g ~ N(0, 1)``; a shape
   mask from ``g`` blurred with sigma ``anomaly_sigma``, min-max stretched to [0, 255] and
   thresholded (``> anomaly_threshold``); inside the mask ``direction * (u + anomaly_offset)`` is
   added to ``g``, with one ``u ~ U(0, 1)`` per image. BraTS values: sigma 3 px at 128 px,
   threshold 175, offset 0.5, direction +1.
2. Training: an epsilon-predicting DDPM (cosine schedule, T = 1000, ``t ~ U{0..T-1}``); the noise
   added to the slice in [-1, 1] is Synomaly noise and the regression target is that noise itself,
   blobs included, so the network learns to remove bright blobs as noise. Loss: MSE on epsilon.
3. Inference (:meth:`Synomaly.restore`), up to ``max_stages`` (5) stages from ``c = x``:
   noise ``c`` to ``t_test`` with plain Gaussian noise; one UNet pass gives
   ``x0_hat = clamp(x0 from epsilon, -1, 1)``; the difference map ``D = |blur_k(x) - blur_k(x0_hat)|``
   (Gaussian blur with a ``k x k`` kernel, OpenCV's sigma for k), set to 0 below ``diff_threshold``,
   components (4-connected) smaller than 30 px at 128 px removed; fusion ``c = x0_hat * D + x * (1 - D)``
   with the original input ``x`` (D is the thresholded residual value, not a binary mask, as in the
   reference). A slice stops when ``|area(D_prev) - area(D)| / max(area(D_prev), 500 px at 128 px)``
   is at most ``stop_tolerance`` (0.01), ``D_prev`` starting as all ones.

Deviations from the paper / the reference code:
- The anomaly map (``anomaly_map="residual"``, the default) is the last stage's blurred residual
  ``|blur_k(x) - blur_k(x0_hat)|`` before the ``diff_threshold`` cut and the component removal, in
  [0, 1] image units: the harness post-processes and thresholds every method's map itself, and the
  cut would tie most pixels at 0. ``anomaly_map="fused"`` returns the reference's final ``D``
  (halved to [0, 1] image units).
- Sizes stated at the reference's 128-px slices scale with the slice: the blob sigma with the side,
  the minimal component (30 px) and the minimal area (500 px) with the area. The blur kernel ``k``
  is given in pixels of the working grid. ``t_test``, ``blur_kernel`` and ``diff_threshold`` are
  not the paper's: the reference picks them per run by test-set Dice over t in {100..300},
  k in {3..17}, theta in {0.10..0.45}; the defaults here (t = 200, k = 7, theta = 0.2) are from the
  middle of those grids, untuned. One version of the reference computes the fusion map with k = 3,
  theta = 0.1 and only the final map with (k, theta); here one map serves both (§5.3).
- Loss: MSE on epsilon only; the reference's ``loss-type: vlb`` adds the variational bound term
  (with fixed variances). No flips, no resizing; the network is the project's ADM-style UNet
  (attention in the middle block only) rather than guided-diffusion's (attention at 32/16/8).
- The ``paper`` preset: lr 1e-5, batch 8 (the reference's), 144,000 steps = 3000 epochs of one
  slice per training volume (385 // 8 = 48 steps per epoch, as the project counts epochs for
  DDPM); the reference's epochs run over up to 10,000 slices. Network widths are the project's
  DDPM defaults. No EMA, no gradient clipping (the reference clips at 1). The ``cpu``/``smoke``
  presets are small.
- Inference is batched (every slice of a batch runs its own stopping rule); noise is drawn for the
  whole batch at every stage, so a slice's result does not depend on when the others stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from uadbench.diffusion.method import (
    CPU_PRESET,
    SMOKE_PRESET,
    DiffusionConfig,
    DiffusionReconstruction,
    build_process,
    build_unet,
    check_image_shape,
)
from uadbench.diffusion.model import DiffusionModel
from uadbench.diffusion.process import DiffusionProcess
from uadbench.errors import ConfigError
from uadbench.method import AnomalyOutput, ReconstructionMethod
from uadbench.nn.filters import gaussian_filter
from uadbench.nn.unet import DiffusionUNet
from uadbench.nn.utils import eval_mode, module_device
from uadbench.registry import register_method

REFERENCE_SIDE = 128  # the reference's slice side; sizes given at 128 px scale from it
MAP_KINDS = ("residual", "fused")


# -- Synomaly noise ------------------------------------------------------------------------------
def synomaly_noise(
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    sigma: float = 3.0,
    threshold: float = 175.0,
    offset: float = 0.5,
    direction: int = 1,
) -> tuple[Tensor, Tensor]:
    """(noise, blob mask) of ``shape`` (B, C, H, W): Gaussian fields with added blobs, one per image.

    ``sigma`` is in pixels of the given grid. The mask is where the blurred field, min-max
    stretched to [0, 255] per image, exceeds ``threshold``; there ``direction * (u + offset)`` is
    added, ``u ~ U(0, 1)`` drawn once per image.
    """
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    blurred = gaussian_filter(g, sigma, dims=(-2, -1), mode="mirror")
    low = blurred.amin(dim=(-2, -1), keepdim=True)
    high = blurred.amax(dim=(-2, -1), keepdim=True)
    stretched = (blurred - low) / (high - low).clamp_min(1e-12) * 255
    mask = stretched > threshold
    u = torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=generator, dtype=torch.float64)
    noise = g + mask * direction * (u + offset)
    return noise.float(), mask


# -- the difference map --------------------------------------------------------------------------
def opencv_sigma(kernel_size: int) -> float:
    """The sigma OpenCV's GaussianBlur uses for a ``k x k`` kernel given sigma 0."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def blurred_difference(x: Tensor, x_hat: Tensor, kernel_size: int) -> Tensor:
    """``|blur(x) - blur(x_hat)|`` with OpenCV's ``GaussianBlur((k, k), 0)`` (reflect-101 border)."""
    sigma, radius = opencv_sigma(kernel_size), (kernel_size - 1) // 2
    blur = lambda v: gaussian_filter(v, sigma, dims=(-2, -1), radius=radius, mode="mirror")  # noqa: E731
    return (blur(x) - blur(x_hat)).abs()


def remove_small_components(values: Tensor, min_size: int) -> Tensor:
    """``values`` with the 4-connected components of ``values > 0`` smaller than ``min_size`` set to 0."""
    flat = values.detach().cpu().numpy().reshape(-1, *values.shape[-2:])
    keep = np.zeros(flat.shape, dtype=bool)
    for i, image in enumerate(flat):
        labels, _ = ndimage.label(image > 0)
        sizes = np.bincount(labels.ravel())
        keep[i] = (sizes[labels] >= min_size) & (labels > 0)
    return values * torch.from_numpy(keep.reshape(values.shape)).to(values.device)


def scaled_pixels(pixels: float, image_shape: tuple[int, int]) -> int:
    """A pixel count stated at 128 x 128, scaled to ``image_shape``'s area (at least 1)."""
    return max(1, round(pixels * image_shape[0] * image_shape[1] / REFERENCE_SIDE**2))


# -- the method ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynomalyConfig(DiffusionConfig):
    noise: Literal["simplex", "gaussian"] = "gaussian"  # inference noise; training adds the blobs
    steps: int = 144000
    batch_size: int = 8
    lr: float = 1e-5
    t_test: int = 200  # counted from 1 (index 199)
    # Synomaly noise (BraTS values; sigma in px at 128 px, scaled with the slice side)
    anomaly_sigma: float = 3.0
    anomaly_threshold: float = 175.0
    anomaly_offset: float = 0.5
    anomaly_direction: int = 1
    # multi-stage inference
    max_stages: int = 5
    blur_kernel: int = 7
    diff_threshold: float = 0.2  # in [-1, 1] units, as the reference
    min_component: float = 30.0  # px at 128 px, scaled with the slice area
    min_area: float = 500.0  # px at 128 px, scaled with the slice area
    stop_tolerance: float = 0.01
    anomaly_map: str = "residual"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise != "gaussian":
            raise ConfigError(f"synomaly noises with Gaussian fields (plus blobs in training); noise must be 'gaussian', got {self.noise!r}")
        if self.ensemble or self.ddim_steps:
            raise ConfigError("synomaly restores in stages of one pass each: ensemble must be False and ddim_steps 0")
        if self.anomaly_direction not in (1, -1):
            raise ConfigError(f"anomaly_direction must be 1 (brighter) or -1 (darker), got {self.anomaly_direction}")
        if self.anomaly_sigma <= 0 or not 0 <= self.anomaly_threshold <= 255:
            raise ConfigError("anomaly_sigma must be > 0 and anomaly_threshold in [0, 255]")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ConfigError(f"blur_kernel must be a positive odd integer, got {self.blur_kernel}")
        if self.max_stages < 1 or self.diff_threshold < 0 or self.stop_tolerance < 0:
            raise ConfigError("max_stages must be >= 1, diff_threshold and stop_tolerance >= 0")
        if self.min_component < 0 or self.min_area <= 0:
            raise ConfigError("min_component must be >= 0 and min_area > 0")
        if self.anomaly_map not in MAP_KINDS:
            raise ConfigError(f"unknown anomaly_map {self.anomaly_map!r}; valid: {', '.join(MAP_KINDS)}")


class SynomalyModel(DiffusionModel):
    """Epsilon-predicting DDPM trained on Synomaly noise (the UNet's output is epsilon, not x0)."""

    def __init__(self, unet: DiffusionUNet, process: DiffusionProcess, config: SynomalyConfig,
                 image_shape: tuple[int, int]) -> None:
        super().__init__(unet, process)
        self.config = config
        self.blob_sigma = config.anomaly_sigma * min(image_shape) / REFERENCE_SIDE

    def loss(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """1. draw t; 2. draw Synomaly noise; 3. noise the slice; 4. MSE between predicted and drawn noise."""
        cfg = self.config
        x0 = images * 2 - 1
        t = torch.randint(self.process.schedule.timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        noise, _ = synomaly_noise(tuple(x0.shape), generator, sigma=self.blob_sigma, threshold=cfg.anomaly_threshold,
                                  offset=cfg.anomaly_offset, direction=cfg.anomaly_direction)
        noise = noise.to(device=x0.device, dtype=x0.dtype)
        eps = self.unet(self.process.q_sample(x0, t, noise), t)
        return F.mse_loss(eps.float(), noise.float())

    def x0_estimate(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``clamp((x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t), -1, 1)`` from one UNet pass."""
        a = self.process.schedule.signal(t).view(-1, 1, 1, 1)
        s = self.process.schedule.noise_scale(t).view(-1, 1, 1, 1)
        return ((x_t - s * self.unet(x_t, t)) / a).clamp(-1, 1)


@register_method("synomaly")
class Synomaly(DiffusionReconstruction, ReconstructionMethod):
    """DDPM trained on Synomaly noise; multi-stage restoration fused with the input (Synomaly)."""

    Config: ClassVar[type] = SynomalyConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu": CPU_PRESET, "smoke": SMOKE_PRESET}
    model: SynomalyModel

    def __init__(self, config: SynomalyConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        check_image_shape(self.image_shape, config)
        self.model = SynomalyModel(build_unet(config), build_process(config), config, self.image_shape)

    @torch.no_grad()
    def restore(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x0_hat, residual, D, stages) of the multi-stage restoration of slices in [0, 1].

        ``x0_hat`` is in [0, 1]; ``residual`` (the blurred difference before the cut) and ``D`` are in
        [-1, 1] units; ``stages`` (B,) counts the stages each slice ran.
        """
        cfg, model = self.config, self.model
        h, w = images.shape[-2:]
        min_component = scaled_pixels(cfg.min_component, (h, w))
        min_area = float(scaled_pixels(cfg.min_area, (h, w)))
        with eval_mode(model):
            x = images.to(device=module_device(model), dtype=torch.float32) * 2 - 1
            b = x.shape[0]
            t = torch.full((b,), model.process.schedule.check_index(cfg.t_test - 1), dtype=torch.long, device=x.device)
            c, x0_hat = x, x
            residual, fused = torch.zeros_like(x), torch.zeros_like(x)
            prev_area = torch.full((b,), float(h * w), device=x.device)
            active = torch.ones(b, dtype=torch.bool, device=x.device)
            stages = torch.zeros(b, dtype=torch.long, device=x.device)
            for _ in range(cfg.max_stages):
                noise = model.process.sample_noise(x, generator)  # drawn for every slice, active or not
                estimate = model.x0_estimate(model.process.q_sample(c, t, noise), t)
                diff = blurred_difference(x, estimate, cfg.blur_kernel)
                d = remove_small_components(diff * (diff >= cfg.diff_threshold), min_component)
                keep = active.view(-1, 1, 1, 1)
                x0_hat = torch.where(keep, estimate, x0_hat)
                residual = torch.where(keep, diff, residual)
                fused = torch.where(keep, d, fused)
                c = torch.where(keep, estimate * d + x * (1 - d), c)
                stages = stages + active.long()
                area = (d > 0).flatten(1).sum(dim=1).float()
                change = (prev_area - area).abs() / prev_area.clamp_min(min_area)
                prev_area = torch.where(active, area, prev_area)
                active = active & (change > cfg.stop_tolerance)
                if not bool(active.any()):
                    break
        return ((x0_hat + 1) / 2).to(images.device), residual.to(images.device), fused.to(images.device), stages.cpu()

    def reconstruct(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        return self.restore(images, generator)[0]

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        recon, residual, fused, _ = self.restore(images, generator)
        chosen = residual if self.config.anomaly_map == "residual" else fused
        return AnomalyOutput(anomaly_map=chosen / 2, reconstruction=recon)

