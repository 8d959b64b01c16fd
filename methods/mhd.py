"""MHD: pixel-wise Mahalanobis distance of the input under stochastic cDDPM reconstructions.

Paper: Behrendt et al., "Leveraging the Mahalanobis Distance to Enhance Unsupervised Brain MRI
Anomaly Detection" (MICCAI 2024). Original code:
https://github.com/FinnBehrendt/Mahalanobis-Unsupervised-Anomaly-Detection
(``configs/experiment/MHD/cDDPM_MHD.yaml``, ``src/models/DDPM_2D.py``, ``src/utils/mh_dist.py``,
``src/utils/utils_eval.py``). METHOD_SPEC.md §2.4.

MHD trains nothing: it reuses a fitted cDDPM (``Method.dependencies`` names it, the runner fits or
loads it and hands it over). At test time, per volume (one batch of its axial slices):

1. Encode the clean slices once, then draw ``num_samples`` (10) reconstructions, each the
   single-step x0 estimate from t = 500 with fresh simplex noise
   (``DiffusionModel.sample_reconstructions`` of the cDDPM).
2. Mahalanobis map (:func:`mahalanobis_map`). Reading of the reference's ``mh_dist.py``: the
   covariance is **not** per pixel and not a local patch or channel covariance. For each slice it
   takes the P foreground pixels as one P-dimensional vector and forms the full P x P pixel-by-pixel
   covariance over the N samples, ``S = C^T C / (N - 1)`` with ``C`` the N x P centred samples
   (rank at most N - 1), adds ``1e-2 I``, inverts it, and with ``d = x - mean`` stores per pixel the
   i-th term of the quadratic form, ``m_i = d_i (S^-1 d)_i`` (so ``sum_i m_i`` is the squared
   Mahalanobis distance of the whole slice). The map is ``sqrt(m_i)``; where ``m_i < 0`` (possible,
   the terms are not squares) the square root is NaN and the reference sets it to 0, as it does with
   inf. Slices are independent (window size 1, as in the paper).
3. Min-max normalise the map, Gaussian-smooth it (sigma 1; the reference smooths the whole
   H x W x D volume with ``scipy.ndimage.gaussian_filter``).
4. Multiply by ``(1 - SSIM)`` between the mean reconstruction and the input (torchmetrics SSIM,
   Gaussian window of 11 with sigma 1, full-resolution map, ``residualmode: ssim``) and by the
   foreground; the reference skips the usual post-processing (``no_postproc: True``), which is the
   harness's business here.

Deviations from the reference:
- The foreground is ``input > 0`` (methods never see brain masks); the reference uses the
  preprocessing brain mask for both the Mahalanobis pixels and the final product.
- ``S + lambda I`` is never formed or inverted: ``(S + lambda I)^-1 d`` is computed exactly
  (up to rounding) with the Woodbury identity through an N x N system, in float32 (the reference
  inverts the P x P matrix and casts the inverse to float16). Negative terms are clamped to 0
  before the square root, which equals the reference's NaN -> 0.
- The t = 500 reconstructions use schedule index 499; the reference passes ``t - 1`` twice
  (index 498). The reconstructions are the cDDPM's own single-step estimates (its ensemble
  setting is ignored), one simplex field per sample shared by the slices of the batch.
- Min-max normalisation, the SSIM window and the smoothing act on the batch handed to ``predict``.
  MHD declares ``whole_volume = True``: the runner hands it every axial slice of one volume, in
  order, as one batch, so the batch is the reference's volume (min-max over the volume, 3D
  smoothing and SSIM across slices, ``across_slices=True``). ``across_slices=False`` smooths and
  computes SSIM in-plane only (the normalisation stays per batch). Called directly with a partial
  volume, the normalisation is per batch and the 3D filters see reflected batch edges. The SSIM
  data range is torchmetrics' default (the larger of the two images' value ranges over the batch).
- Standalone use: when ``fit`` gets no fitted cDDPM in ``ctx.dependencies`` it fits one itself
  (``base_preset`` / ``base_overrides``, same context), so the method also works without the runner.
- The ``cpu`` / ``smoke`` presets draw fewer samples (4 / 3) and build on the matching cDDPM preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from uadbench.config import normalise_overrides
from uadbench.errors import ConfigError, UadbenchError
from uadbench.method import AnomalyOutput, Method, ReusingMethod, create_config
from uadbench.nn.filters import gaussian_filter, ssim_map
from uadbench.registry import register_method

BASE_METHOD = "cddpm"


# -- the Mahalanobis map ------------------------------------------------------------------------
def mahalanobis_terms(
    images: Tensor, samples: Tensor, mask: Tensor | None = None, *, regulariser: float = 1e-2
) -> Tensor:
    """Per-pixel terms ``d_i ((S + lambda I)^-1 d)_i`` of each slice's squared Mahalanobis distance.

    ``images``: (B, ...) slices; ``samples``: (N, B, ...) reconstructions of them; ``mask``: bool
    (B, ...), True where a pixel takes part (None: every pixel). For each slice the pixels inside the
    mask form one vector; ``S`` is their sample covariance over the N samples (divisor N - 1) and
    ``d`` the image minus the sample mean. Pixels outside the mask get 0 and do not influence the
    others. The terms of a slice sum to its squared Mahalanobis distance; single terms may be
    negative. With more pixels than samples this uses the Woodbury identity (an N x N solve per
    slice) and never forms S; otherwise it solves with S directly.
    """
    if regulariser <= 0 or not math.isfinite(regulariser):
        raise UadbenchError(f"the covariance regulariser must be a positive number, got {regulariser}")
    if samples.dim() < 2 or tuple(samples.shape[1:]) != tuple(images.shape):
        raise UadbenchError(
            f"samples must have shape (N, *images.shape) = (N, {', '.join(map(str, images.shape))}), "
            f"got {tuple(samples.shape)}"
        )
    n = samples.shape[0]
    if n < 2:
        raise UadbenchError(f"a sample covariance needs at least 2 samples, got {n}")
    b = images.shape[0]
    x = images.reshape(b, -1).double()
    r = samples.reshape(n, b, -1).transpose(0, 1).double()  # (B, N, P)
    mean = r.mean(dim=1)
    c = r - mean[:, None]
    d = x - mean
    if mask is not None:
        if tuple(mask.shape) != tuple(images.shape):
            raise UadbenchError(f"mask shape {tuple(mask.shape)} differs from the images' {tuple(images.shape)}")
        keep = mask.reshape(b, -1).to(device=x.device, dtype=x.dtype)
        # zero columns make S block-diagonal: the masked-out block is lambda * I, decoupled
        c = c * keep[:, None]
        d = d * keep
    p = c.shape[2]
    if p <= n:  # few pixels: solve with the P x P covariance itself
        cov = c.transpose(1, 2) @ c / (n - 1) + regulariser * torch.eye(p, dtype=c.dtype, device=c.device)
        inv_d = torch.linalg.solve(cov, d[:, :, None])[:, :, 0]
    else:  # (C^T C / (N-1) + lam I)^-1 = (I - C^T (lam (N-1) I + C C^T)^-1 C) / lam
        gram = c @ c.transpose(1, 2) + regulariser * (n - 1) * torch.eye(n, dtype=c.dtype, device=c.device)
        z = torch.linalg.solve(gram, (c @ d[:, :, None]))  # (B, N, 1)
        inv_d = (d - (c.transpose(1, 2) @ z)[:, :, 0]) / regulariser
    terms = d * inv_d
    if mask is not None:
        terms = terms * keep
    return terms.to(images.dtype).reshape(images.shape)


def mahalanobis_map(
    images: Tensor, samples: Tensor, mask: Tensor | None = None, *, regulariser: float = 1e-2
) -> Tensor:
    """``sqrt`` of :func:`mahalanobis_terms`, negative terms set to 0 (the reference's NaN -> 0)."""
    return mahalanobis_terms(images, samples, mask, regulariser=regulariser).clamp(min=0).sqrt()


# -- the method ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MHDConfig:
    """MHD test-time settings (reference values) and the cDDPM it builds on."""

    base_preset: str = "paper"
    base_overrides: Any = ()  # cDDPM overrides: a table or (key, value) pairs, kept as sorted pairs
    num_samples: int = 10
    t_test: int = 500
    regulariser: float = 1e-2
    smooth_sigma: float = 1.0
    ssim_weighting: bool = True
    ssim_sigma: float = 1.0
    ssim_kernel: int = 11
    # smooth and compute SSIM along the slice axis of the batch too (a predict batch is one whole
    # volume, see MHD.whole_volume); False: in-plane only
    across_slices: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_overrides", normalise_overrides(self.base_overrides, BASE_METHOD))
        if self.num_samples < 2:
            raise ConfigError(f"num_samples must be at least 2 (a covariance needs two samples), got {self.num_samples}")
        if not (self.regulariser > 0 and math.isfinite(self.regulariser)):
            raise ConfigError(f"regulariser must be a positive number, got {self.regulariser}")
        if self.smooth_sigma < 0 or self.ssim_sigma <= 0:
            raise ConfigError("smooth_sigma must be >= 0 (0: no smoothing) and ssim_sigma > 0")
        if self.ssim_kernel < 1 or self.ssim_kernel % 2 == 0:
            raise ConfigError(f"ssim_kernel must be a positive odd integer, got {self.ssim_kernel}")
        base = self.base_config()  # validates the preset and the overrides
        if not 1 <= self.t_test <= base.timesteps:
            raise ConfigError(f"t_test must lie in [1, {base.timesteps}] (the cDDPM's timesteps), got {self.t_test}")

    def base_config(self):
        return create_config(BASE_METHOD, self.base_preset, **dict(self.base_overrides))


@register_method("mhd")
class MHD(ReusingMethod):
    """Mahalanobis distance of the input under an ensemble of stochastic cDDPM reconstructions."""

    Config: ClassVar[type] = MHDConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {"base_preset": "cpu", "num_samples": 4},
        "smoke": {"base_preset": "smoke", "num_samples": 3},
    }
    # the map is normalised and filtered per volume: predict gets one whole volume per batch
    whole_volume: ClassVar[bool] = True

    base_method: ClassVar[str] = BASE_METHOD

    @property
    def cddpm(self) -> Method | None:
        """The fitted cDDPM whose reconstructions are sampled (None before fit or load_state_dict)."""
        return self.base

    def sample_reconstructions(self, images: Tensor, *, generator: torch.Generator) -> Tensor:
        """``num_samples`` single-step cDDPM reconstructions from ``t_test``: (N, B, 1, H, W) in [0, 1] space."""
        model = self.require_base().model
        return model.sample_reconstructions(
            images, generator, num_samples=self.config.num_samples, t_index=self.config.t_test - 1
        )

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        cfg = self.config
        x = images.float()
        samples = self.sample_reconstructions(x, generator=generator)
        foreground = x > 0
        md = mahalanobis_map(x, samples.to(x.device), foreground, regulariser=cfg.regulariser)
        md = torch.nan_to_num(md, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = md.min(), md.max()
        md = (md - lo) / (hi - lo) if hi > lo else torch.zeros_like(md)
        # (Z, 1, H, W): axis 0 is the slice axis, the batch being one volume (whole_volume)
        dims = (0, 2, 3) if cfg.across_slices else (2, 3)
        md = gaussian_filter(md.double(), cfg.smooth_sigma, dims=dims)
        recon = samples.mean(dim=0)
        amap = md
        if cfg.ssim_weighting:
            ssim = ssim_map(recon, x, sigma=cfg.ssim_sigma, kernel_size=cfg.ssim_kernel, dims=dims)
            amap = amap * (1 - ssim)
        amap = (amap * foreground).to(x.dtype)
        return AnomalyOutput(anomaly_map=amap, reconstruction=recon)
