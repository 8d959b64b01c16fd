"""PaDiM: Mahalanobis distance of each position's feature vector under a Gaussian fitted per position.

Paper: Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization" (ICPR 2021 workshops, arXiv 2011.08785). Reference code: anomalib
(https://github.com/openvinotoolkit/anomalib, ``models/image/padim``,
``models/components/stats/multi_variate_gaussian.py``) and the UPD study's brain-MRI runs
(https://github.com/iolag/UPD_study, ``models/PADIM/PADIMtrainer.py``). METHOD_SPEC_FEATURES.md §2.

1. Features: a frozen timm backbone (:mod:`uadbench.nn.backbones`) returns layer1, layer2 and
   layer3; the deeper maps are upsampled bilinearly (align_corners False, as UPD) to the layer-1
   grid and concatenated; ``num_features`` channels, drawn at random once per fit (550 of a
   WideResNet-50's 1792, 100 of a ResNet-18's 448), are kept.
2. Per position of the grid: the mean and the unbiased (N - 1) covariance of the healthy training
   vectors, plus ``regulariser`` * I (0.01). The sums are accumulated online in float64 over the
   batches (:class:`GaussianAccumulator`) and each covariance is factorised once (Cholesky) at fit.
3. Map: the Mahalanobis distance ``sqrt((x - mu)^T S^-1 (x - mu))`` at every position
   (:func:`mahalanobis_distances`), upsampled bilinearly to the slice and Gaussian-smoothed
   (``smooth_sigma`` pixels), as anomalib (UPD leaves blurring off by default).

Deviations from the paper:
- Backbone weights: the paper uses ImageNet weights on RGB images; nothing is downloaded here. The
  backbone is pretrained on the healthy slices (masked-image modelling, the default), read from a
  sha256-checked file or left random, then its BatchNorm statistics are re-estimated on healthy
  slices; :mod:`uadbench.nn.backbones` says how (the choice is in the config hash).
- Slices are 96x96 (a 24x24 layer-1 grid; the paper crops 224, a 56x56 grid). Smoothing sigma 4
  was set for 224 px; the ``paper`` preset uses the same relative width at 96 px (1.7), ``cpu`` at
  64 px (1.1).
- The Gaussians are fitted on at most ``train_slices`` training slices (every slice when there are
  fewer; else one random slice per volume per pass), as UPD fits on 18 % of its slices; the random
  channel subset is drawn from the fit's seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from uadbench.config import require_positive
from uadbench.errors import ConfigError, UadbenchError
from uadbench.method import AnomalyOutput, FitContext
from uadbench.nn.backbones import BackboneConfig, FeatureEmbeddingMethod, feature_channels, fit_backbone, training_slices
from uadbench.registry import register_method


# -- the maths ----------------------------------------------------------------------------------------------
class GaussianAccumulator:
    """Running sums of vectors at P positions, (B, P, d) at a time, in float64: then the mean and the
    unbiased covariance per position."""

    def __init__(self, positions: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.n = 0
        self.total = torch.zeros(positions, dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(positions, dim, dim, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        x = x.to(self.total.device, torch.float64)
        self.n += x.shape[0]
        self.total += x.sum(dim=0)
        self.outer += torch.einsum("bpi,bpj->pij", x, x)

    def mean_and_covariance(self, regulariser: float) -> tuple[Tensor, Tensor]:
        """Mean (P, d) and covariance (P, d, d), divisor N - 1, plus ``regulariser`` * I."""
        if self.n < 1:
            raise UadbenchError("a Gaussian needs at least one training vector")
        mean = self.total / self.n
        cov = (self.outer - self.n * mean[:, :, None] * mean[:, None, :]) / max(self.n - 1, 1)
        eye = torch.eye(mean.shape[1], dtype=cov.dtype, device=cov.device)
        return mean, cov + regulariser * eye


def mahalanobis_distances(x: Tensor, mean: Tensor, cholesky: Tensor) -> Tensor:
    """Distances (B, P) of vectors ``x`` (B, P, d) to Gaussians with means (P, d) and covariances
    ``L L^T``, ``cholesky`` the lower factors L (P, d, d): ``|| L^-1 (x - mu) ||``."""
    diff = (x - mean[None]).permute(1, 2, 0)  # (P, d, B)
    z = torch.linalg.solve_triangular(cholesky.to(diff.dtype), diff, upper=False)
    return z.pow(2).sum(dim=1).clamp(min=0).sqrt().T


# -- the method ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaDiMConfig(BackboneConfig):
    """PaDiM settings; defaults follow the paper (WideResNet-50 layer1-3, 550 random channels)."""

    layers: tuple[int, ...] = (1, 2, 3)
    num_features: int = 550
    regulariser: float = 0.01
    train_slices: int = 4000  # at most this many training slices (all of them when there are fewer)
    smooth_sigma: float = 1.7
    batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "layers", "num_features", "train_slices")
        if not self.regulariser > 0:
            raise ConfigError(f"regulariser must be > 0 (0.01 in the paper), got {self.regulariser}")
        if self.smooth_sigma < 0:
            raise ConfigError(f"smooth_sigma must be >= 0 (0: no smoothing), got {self.smooth_sigma}")


@register_method("padim")
class PaDiM(FeatureEmbeddingMethod):
    """Per-position Gaussians of healthy feature vectors; the map is the Mahalanobis distance."""

    Config: ClassVar[type] = PaDiMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {"backbone": "resnet18", "num_features": 100, "smooth_sigma": 1.1, "pretrain_steps": 150,
                "pretrain_batch_size": 16, "pretrain_decoder_width": 64, "adapt_slices": 256},
        "smoke": {"backbone": "resnet10t", "num_features": 16, "train_slices": 16, "smooth_sigma": 1.0,
                  "pretrain_steps": 2, "pretrain_batch_size": 4, "pretrain_decoder_width": 16, "adapt_slices": 8,
                  "batch_size": 8},
    }

    fitted_tensors: ClassVar[tuple[str, ...]] = ("mean", "cholesky")

    def __init__(self, config: PaDiMConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        self.channels: Tensor | None = None  # the kept channel indices (d,)
        self.mean: Tensor | None = None  # (P, d)
        self.cholesky: Tensor | None = None  # (P, d, d), lower

    def embed(self, images: Tensor) -> Tensor:
        """Feature vectors (B, d, h, w) of slices (B, 1, H, W) on the layer-1 grid."""
        if self.channels is None:
            raise UadbenchError("padim has no channel subset yet: call fit or load_state_dict first")
        feats = self.patch_features(images, aggregation=1)
        return feats[:, self.channels.to(feats.device)]

    def fit(self, train, val, ctx: FitContext) -> None:
        cfg = self.config
        # 1. the backbone: its weights, BatchNorm statistics, frozen
        fit_backbone(self.backbone, cfg, train, ctx, cfg.batch_size)
        # 2. the random channel subset, drawn once
        total = sum(feature_channels(self.backbone))
        self.channels = torch.randperm(total, generator=ctx.generator)[: min(cfg.num_features, total)].sort().values
        # 3. per-position Gaussians, accumulated over the healthy slices
        slices = training_slices(train, cfg.train_slices, ctx.generator)
        acc: GaussianAccumulator | None = None
        for batch in slices.split(cfg.batch_size):
            x = self.embed(batch).flatten(2).transpose(1, 2)  # (B, P, d), positions row-major
            acc = acc or GaussianAccumulator(x.shape[1], x.shape[2], x.device)
            acc.update(x)
        assert acc is not None
        mean, cov = acc.mean_and_covariance(cfg.regulariser)
        self.mean = mean.float()
        self.cholesky = torch.linalg.cholesky(cov).float()
        ctx.progress(f"padim: Gaussians at {mean.shape[0]} positions, {mean.shape[1]} features, from {acc.n} slices")

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        if self.mean is None or self.cholesky is None:
            raise UadbenchError("padim has no Gaussians yet: call fit or load_state_dict first")
        feats = self.embed(images)
        b, _, h, w = feats.shape
        dist = mahalanobis_distances(feats.flatten(2).transpose(1, 2), self.mean, self.cholesky).reshape(b, 1, h, w)
        return self.anomaly_output(dist, images)

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.channels is None or self.mean is None or self.cholesky is None:
            raise UadbenchError("padim has no Gaussians to save: call fit first")
        return {"backbone": self.backbone.state_dict(), "channels": self.channels.cpu(), "mean": self.mean.cpu(),
                "cholesky": self.cholesky.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("backbone", "channels", "mean", "cholesky") if k not in state]
        if missing:
            raise UadbenchError(f"a padim checkpoint lacks {', '.join(missing)}")
        device = self.load_backbone(state["backbone"])
        self.channels = state["channels"].long()
        self.mean, self.cholesky = state["mean"].float().to(device), state["cholesky"].float().to(device)
