"""PatchCore: nearest-neighbour distance of each patch feature to a coreset memory bank of healthy ones.

Paper: Roth et al., "Towards Total Recall in Industrial Anomaly Detection" (CVPR 2022,
arXiv 2106.08265). Reference code: https://github.com/amazon-science/patchcore-inspection
(``src/patchcore/patchcore.py``, ``common.py``, ``sampler.py``); anomalib's port
(https://github.com/openvinotoolkit/anomalib, ``models/image/patchcore``) was read as well.
METHOD_SPEC_FEATURES.md §1.

1. Features: a frozen timm backbone (:mod:`uadbench.nn.backbones`) returns the maps ``layers``
   (layer2 and layer3 of a WideResNet-50 in the paper).
2. Local aggregation: each map is averaged over a ``aggregation`` x ``aggregation`` neighbourhood
   (stride 1, zero padding counted, anomalib's ``AvgPool2d(3, 1, 1)``); deeper maps are upsampled
   bilinearly (align_corners False) to the first map's grid and concatenated per position; with
   ``embed_dim`` > 0 the concatenated vector is average-pooled to ``embed_dim`` values (the
   reference's final adaptive average pooling).
3. Memory bank: the patch features of ``train_slices`` healthy training slices, reduced by greedy
   k-center coreset selection (:func:`greedy_coreset`) on a random Gaussian projection to
   ``projection_dim`` values, keeping ``int(N * coreset_ratio)`` patches.
4. Patch score: mean Euclidean distance to the ``num_neighbors`` nearest bank features (1: the
   distance to the nearest, anomalib and the reference README); the map is the patch-score grid
   upsampled bilinearly to the slice and Gaussian-smoothed (``smooth_sigma`` pixels).
5. Slice score (:meth:`PatchCore.slice_scores`): the maximum patch score, the reference's image
   score (the harness's detection metrics score every method alike, from its map).

Deviations from the paper:
- Backbone weights: the papers use ImageNet weights on RGB images; nothing is downloaded here. The
  backbone is pretrained on the healthy slices (masked-image modelling, the default), read from a
  sha256-checked file or left random, then its BatchNorm statistics are re-estimated on healthy
  slices; :mod:`uadbench.nn.backbones` says how (the choice is in the config hash).
- Local aggregation is a channel-preserving 3x3 average (anomalib), not the reference's
  unfold-then-adaptive-pool to 1024 values per layer; ``embed_dim`` reduces the fused vector as
  the reference's last step does.
- Slices are 96x96 (``paper`` preset upsamples them by 2 before the backbone, a 24x24 layer-2 grid;
  the paper resizes to 256 and crops 224, a 28x28 grid). Smoothing sigma 4 was set for 224 px; the
  ``paper`` preset uses the same relative width at 96 px (1.7), ``cpu`` at 64 px (1.1).
- The ``cpu`` preset (64x64 slices, ResNet-18) fuses layer1 and layer2, a 16x16 grid: layer2 and
  layer3 give an 8x8 grid, too coarse for small lesions at that size.
- The bank is built from at most ``train_slices`` training slices (every slice when there are
  fewer; else one random slice per volume per pass); the coreset starts at a random patch and is always greedy over all patches
  (the reference's approximate variant starts from 10 random points). The ``cpu`` preset projects
  to 64 values instead of 128 (its coreset selection about 3x faster on one CPU thread).
- Distances are plain Euclidean (the reference's faiss index ranks by squared L2, which blurs to a
  different map); the slice score is the plain maximum, without the paper's Eq. 7 re-weighting
  (the reference omits it too). The map covers the whole slice; the harness restricts it to the
  eroded brain mask, as for every method.
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
def greedy_coreset(features: Tensor, size: int, *, projection_dim: int, generator: torch.Generator) -> Tensor:
    """Indices (``size``,) of a greedy k-center coreset of ``features`` (N, D), unique and in selection order.

    The features are projected on a random Gaussian matrix (D, ``projection_dim``) when
    ``projection_dim`` < D; the first centre is a random point, each next one the point farthest from
    the centres chosen so far (Euclidean, in the projection; ranked by squared distances)."""
    n = features.shape[0]
    if not 1 <= size <= n:
        raise UadbenchError(f"a coreset of {size} points cannot be drawn from {n}")
    x = features.float()
    if projection_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], projection_dim, generator=generator).to(x.device) / projection_dim**0.5
        x = x @ proj
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = torch.empty(size, dtype=torch.long, device=x.device)
    chosen[0] = first
    sq = (x * x).sum(dim=1)

    def sq_dist(i: Tensor | int) -> Tensor:  # squared distances of every point to point i, one matrix-vector product
        return torch.addmv(sq, x, x[i], alpha=-2).add_(sq[i]).clamp_(min=0)

    min_dist = sq_dist(first)
    min_dist[first] = -1.0  # never chosen twice, even among duplicate points
    for i in range(1, size):
        nxt = torch.argmax(min_dist)
        chosen[i] = nxt
        min_dist = torch.minimum(min_dist, sq_dist(nxt))  # centres chosen earlier stay at -1
        min_dist[nxt] = -1.0
    return chosen


def knn_scores(queries: Tensor, bank: Tensor, k: int = 1, chunk_elements: int = 1 << 24) -> Tensor:
    """Mean Euclidean distance of each query (Q, D) to its ``k`` nearest rows of ``bank`` (M, D), (Q,)."""
    k = min(k, bank.shape[0])
    bank = bank.float()
    bank_sq = (bank * bank).sum(dim=1)
    rows = max(1, chunk_elements // max(1, bank.shape[0]))
    out = []
    for part in queries.float().split(rows):
        d2 = (part * part).sum(dim=1, keepdim=True) + bank_sq[None] - 2 * part @ bank.T
        index = d2.topk(k, dim=1, largest=False).indices  # (q, k); the distances recomputed directly,
        out.append((part[:, None] - bank[index]).norm(dim=2).mean(dim=1))  # without the expansion's cancellation
    return torch.cat(out) if out else queries.new_zeros(0)


# -- the method ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchCoreConfig(BackboneConfig):
    """PatchCore settings; defaults follow the paper (WideResNet-50 layer2 + layer3, 10 % coreset)."""

    layers: tuple[int, ...] = (2, 3)
    input_scale: int = 2
    aggregation: int = 3
    embed_dim: int = 1024  # 0: keep the concatenated features
    coreset_ratio: float = 0.1
    projection_dim: int = 128
    train_slices: int = 2000
    num_neighbors: int = 1
    smooth_sigma: float = 1.7
    batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "layers", "aggregation", "projection_dim", "train_slices", "num_neighbors")
        if self.aggregation % 2 == 0:
            raise ConfigError(f"aggregation must be an odd neighbourhood size (3 in the paper), got {self.aggregation}")
        if not 0 < self.coreset_ratio <= 1:
            raise ConfigError(f"coreset_ratio must lie in (0, 1] (0.1 in the paper), got {self.coreset_ratio}")
        if self.embed_dim < 0 or self.smooth_sigma < 0:
            raise ConfigError("embed_dim must be >= 0 (0: no reduction) and smooth_sigma >= 0 (0: no smoothing)")


@register_method("patchcore")
class PatchCore(FeatureEmbeddingMethod):
    """Coreset memory bank of healthy patch features; the map is the nearest-neighbour distance."""

    Config: ClassVar[type] = PatchCoreConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # 64x64 slices: layer1 + layer2 (a 16x16 grid; layer2 + layer3 give 8x8 and 28 AUPRC instead of 37 on the phantom)
        "cpu": {"backbone": "resnet18", "layers": (1, 2), "input_scale": 1, "embed_dim": 0, "train_slices": 256,
                "smooth_sigma": 1.1, "pretrain_steps": 150, "pretrain_batch_size": 16, "pretrain_decoder_width": 64,
                "adapt_slices": 256, "projection_dim": 64},
        "smoke": {"backbone": "resnet10t", "input_scale": 1, "embed_dim": 0, "train_slices": 16, "smooth_sigma": 1.0,
                  "pretrain_steps": 2, "pretrain_batch_size": 4, "pretrain_decoder_width": 16, "adapt_slices": 8,
                  "batch_size": 8},
    }

    fitted_tensors: ClassVar[tuple[str, ...]] = ("bank",)

    def __init__(self, config: PatchCoreConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        self.bank: Tensor | None = None

    def embed(self, images: Tensor) -> Tensor:
        """Patch features (B, D, h, w) of slices (B, 1, H, W)."""
        return self.patch_features(images, self.config.aggregation, self.config.embed_dim)

    def fit(self, train, val, ctx: FitContext) -> None:
        cfg = self.config
        # 1. the backbone: its weights, BatchNorm statistics, frozen
        fit_backbone(self.backbone, cfg, train, ctx, cfg.batch_size)
        # 2. patch features of the healthy training slices
        slices = training_slices(train, cfg.train_slices, ctx.generator)
        feats = torch.cat([
            self.embed(batch).permute(0, 2, 3, 1).reshape(-1, self.feature_dim).cpu() for batch in slices.split(cfg.batch_size)
        ])
        # 3. coreset memory bank
        size = max(1, int(feats.shape[0] * cfg.coreset_ratio))
        if size < feats.shape[0]:
            index = greedy_coreset(feats.to(ctx.device), size, projection_dim=cfg.projection_dim, generator=ctx.generator)
            feats = feats[index.cpu()]
        self.bank = feats.to(ctx.device).contiguous()
        ctx.progress(f"patchcore: memory bank of {self.bank.shape[0]} patches x {self.bank.shape[1]} features")
        ctx.log_metrics({"patchcore/bank_size": float(self.bank.shape[0])}, 0)

    @property
    def feature_dim(self) -> int:
        total = sum(feature_channels(self.backbone))
        return self.config.embed_dim if 0 < self.config.embed_dim < total else total

    def patch_scores(self, images: Tensor) -> Tensor:
        """Nearest-neighbour patch scores (B, 1, h, w) on the first feature map's grid."""
        if self.bank is None:
            raise UadbenchError("patchcore has no memory bank yet: call fit or load_state_dict first")
        feats = self.embed(images)
        b, d, h, w = feats.shape
        scores = knn_scores(feats.permute(0, 2, 3, 1).reshape(-1, d), self.bank.to(feats.device), self.config.num_neighbors)
        return scores.reshape(b, 1, h, w)

    @torch.no_grad()
    def slice_scores(self, images: Tensor) -> Tensor:
        """The reference's image score: the largest patch score of each slice, (B,)."""
        return self.patch_scores(images).amax(dim=(1, 2, 3)).to(images.device)

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        scores = self.patch_scores(images)
        return self.anomaly_output(scores, images)

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.bank is None:
            raise UadbenchError("patchcore has no memory bank to save: call fit first")
        return {"backbone": self.backbone.state_dict(), "bank": self.bank.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "bank" not in state or "backbone" not in state:
            raise UadbenchError("a patchcore checkpoint holds 'backbone' and 'bank'")
        self.bank = state["bank"].float().to(self.load_backbone(state["backbone"]))
