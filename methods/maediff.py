"""MAEDiff: patched diffusion with overlapping upper-level patches and MAE masking of the context.

Paper: Xu, Wang, Du, "MAEDiff: Masked Autoencoder-enhanced Diffusion Models for Unsupervised
Anomaly Detection in Brain Images" (arXiv 2401.10561, 2024). Original code: none public (no
repository of the authors was found; METHOD_SPEC_DIFFUSION.md §4.1), so this module is built from
the paper's abstract and third-party summaries (§4.2). Everything the sources leave open (§4.3) is
an assumption, listed below.

Method, as stated by the sources: a hierarchical patch partition of the slice. Upper-level patches
are large and overlap; in training one of them is noised while the rest of the slice stays clean as
context, as in pDDPM (:mod:`uadbench.methods.pddpm`). Sub-level patches are small, do not overlap
and tile the slice; a masked-autoencoder mechanism acts on them "to enhance the condition on the
unnoised regions". At test time every upper-level patch is noised and reconstructed in turn and the
overlapping reconstructions are averaged.

As built here (:class:`HierarchicalPatches`, :class:`MAEDiffModel`):

1. The slice is tiled by a ``n x n`` grid of sub-level patches, ``n = patch_grid * sub_grid``
   (12-px cells at 96 px with the defaults). An upper-level patch is a ``sub_grid x sub_grid``
   block of cells (48 px at 96 px, as pDDPM's box); blocks start every ``sub_grid / patch_overlap``
   cells, so neighbouring upper patches overlap by half and there are 3 x 3 of them.
2. Training: per slice, draw ``t``, one simplex field (shared by the batch, as the project's DDPM)
   and one upper patch; noise the patch. Among the sub-level cells outside it (the clean context),
   mask exactly ``round(mask_ratio * n_context)`` cells chosen uniformly: their pixels are set to 0
   (mid-grey in [-1, 1]) and a second input channel marks them with 1 (the convolutional stand-in
   for MAE's mask token). The x0-predicting UNet sees ``[masked input, mask indicator]``; the loss
   is the mean L1 to the clean slice over the noised patch (the diffusion term, as pDDPM) plus
   ``mae_weight`` times the same over the masked cells (the MAE term), each pixel's error divided by
   the number of pixels as pDDPM's loss.
3. Test: the slice is noised once per test index with one field; each upper patch is pasted noised
   into the clean slice, its context masked as in training (``test_masking``, drawn from the predict
   generator), and predicted in its own pass; a pixel's reconstruction is the mean of the
   predictions of the upper patches covering it. The anomaly map is ``|x - x_hat|``. Masking at
   test time keeps the network's input that of training; a network trained on masked context and
   shown the full context (never seen in training) reconstructed lesions more faithfully and scored
   clearly worse on the phantom.

Deviations from the paper / assumptions (the paper's values were not retrievable):
- Patch and cell sizes, the overlap (half a patch), the mask ratio (0.75, MAE's default), the MAE
  loss weight (1), masking with a constant plus an indicator channel, masking only the context
  (never the noised patch) and also at test time (``test_masking=False``: the full context), the
  loss (L1 on x0, as the project's diffusion models) and the noise (simplex) are assumptions.
- The network is the project's ADM-style UNet with two input channels; the paper's
  "MAE-enhanced diffusion U-Net" was not described in the sources read.
- The ``paper`` preset uses pDDPM's reference settings (cosine schedule, T = 1000, test t = 500,
  lr 1e-4, batch 32, 19,200 steps); the paper's training schedule was not retrieved.
- ``ddim_steps`` is not supported (0 only); ``ensemble=True`` averages the reconstructions from
  ``ensemble_t`` as the other diffusion methods do. The ``cpu``/``smoke`` presets are small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from uadbench.diffusion.method import (
    CPU_PRESET,
    SMOKE_PRESET,
    DiffusionConfig,
    DiffusionReconstruction,
    build_process,
    check_image_shape,
)
from uadbench.diffusion.model import DiffusionModel
from uadbench.diffusion.process import DiffusionProcess
from uadbench.diffusion.regions import box_masks, composite
from uadbench.errors import ConfigError
from uadbench.method import ReconstructionMethod
from uadbench.nn.unet import DiffusionUNet
from uadbench.nn.utils import eval_mode, module_device
from uadbench.registry import register_method

Box = tuple[int, int, int, int]  # (top, bottom, left, right)


@dataclass(frozen=True)
class HierarchicalPatches:
    """Sub-level cells tiling the slice and overlapping upper-level patches made of them."""

    patch_grid: int = 2  # upper-level patch side = slice side / patch_grid
    patch_overlap: int = 2  # upper patches start every (patch side / patch_overlap)
    sub_grid: int = 4  # sub-level cells per upper-patch side

    def __post_init__(self) -> None:
        if min(self.patch_grid, self.patch_overlap, self.sub_grid) < 1:
            raise ConfigError(
                f"patch_grid, patch_overlap and sub_grid must be positive integers, got "
                f"{self.patch_grid}, {self.patch_overlap}, {self.sub_grid}"
            )
        if self.sub_grid % self.patch_overlap:
            raise ConfigError(
                f"sub_grid ({self.sub_grid}) must be a multiple of patch_overlap ({self.patch_overlap}) "
                "so that every upper-level patch is a block of whole sub-level cells"
            )

    @property
    def cells_per_side(self) -> int:
        return self.patch_grid * self.sub_grid

    @property
    def patches_per_side(self) -> int:
        return (self.patch_grid - 1) * self.patch_overlap + 1

    def _edges(self, size: int) -> list[int]:
        n = self.cells_per_side
        if size < n:
            raise ConfigError(f"image side {size} is smaller than the {n} sub-level cells per side (patch_grid * sub_grid)")
        return [round(k * size / n) for k in range(n + 1)]

    def cell_ids(self, height: int, width: int) -> Tensor:
        """(H, W) long tensor: the index (row-major) of the sub-level cell each pixel belongs to."""
        ys, xs = self._edges(height), self._edges(width)
        row = torch.bucketize(torch.arange(height), torch.tensor(ys[1:-1]), right=True)
        col = torch.bucketize(torch.arange(width), torch.tensor(xs[1:-1]), right=True)
        return row[:, None] * self.cells_per_side + col[None, :]

    def upper_boxes(self, height: int, width: int) -> list[Box]:
        """(top, bottom, left, right) of every upper-level patch, row by row."""
        ys, xs = self._edges(height), self._edges(width)
        step = self.sub_grid // self.patch_overlap
        starts = [k * step for k in range(self.patches_per_side)]
        return [(ys[i], ys[i + self.sub_grid], xs[j], xs[j + self.sub_grid]) for i in starts for j in starts]

    def upper_masks(self, height: int, width: int) -> Tensor:
        """(P, 1, H, W) float masks, one per upper-level patch."""
        return box_masks(self.upper_boxes(height, width), height, width)

    def mask_context(self, noised: Tensor, generator: torch.Generator, mask_ratio: float) -> Tensor:
        """(B, 1, H, W) float mask of ``round(mask_ratio * n)`` cells drawn uniformly among the ``n``
        cells outside each slice's noised upper patch (``noised``: (B, 1, H, W), one upper patch each)."""
        b, _, h, w = noised.shape
        ids = self.cell_ids(h, w).to(noised.device)
        n_cells = self.cells_per_side**2
        inside = torch.zeros(b, n_cells, device=noised.device)
        inside.scatter_reduce_(1, ids.flatten().expand(b, -1), noised.flatten(1), reduce="amax")
        n_context = n_cells - self.sub_grid**2  # every upper patch holds sub_grid**2 cells
        k = round(mask_ratio * n_context)
        scores = torch.rand(b, n_cells, generator=generator).to(noised.device) + 2 * inside  # patch cells sort last
        chosen = scores.argsort(dim=1)[:, :k]
        cells = torch.zeros(b, n_cells, device=noised.device).scatter_(1, chosen, 1.0)
        return cells[:, ids][:, None]

    def train_regions(self, shape: Sequence[int], generator: torch.Generator, mask_ratio: float) -> tuple[Tensor, Tensor]:
        """(noised, masked), each (B, 1, H, W) float: one random upper patch per slice, and
        ``round(mask_ratio * n)`` random cells among the ``n`` cells outside it."""
        b, _, h, w = shape
        uppers = self.upper_masks(h, w)
        noised = uppers[torch.randint(uppers.shape[0], (b,), generator=generator)]
        return noised, self.mask_context(noised, generator, mask_ratio)


class MAEDiffModel(DiffusionModel):
    """x0 predictor on ``[image with masked cells, mask indicator]``; see the module docstring."""

    def __init__(self, unet: DiffusionUNet, process: DiffusionProcess, patches: HierarchicalPatches, *,
                 mask_ratio: float, mae_weight: float, test_masking: bool = True) -> None:
        super().__init__(unet, process)
        self.patches = patches
        self.mask_ratio = mask_ratio
        self.mae_weight = mae_weight
        self.test_masking = test_masking

    def predict_x0(self, x_t: Tensor, t: Tensor, masked: Tensor | None = None) -> Tensor:
        if masked is None:
            masked = torch.zeros_like(x_t)
        return self.unet(torch.cat([x_t * (1 - masked), masked], dim=1), t)

    def loss(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """1. draw t; 2. draw noise; 3. pick the noised patch and the masked cells; 4. noise, mask, predict."""
        x0 = images * 2 - 1
        t = torch.randint(self.process.schedule.timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        noise = self.process.sample_noise(x0, generator)
        noised, masked = (r.to(device=x0.device, dtype=x0.dtype)
                          for r in self.patches.train_regions(x0.shape, generator, self.mask_ratio))
        x_t = composite(self.process.q_sample(x0, t, noise), x0, noised)
        pred = self.predict_x0(x_t, t, masked)
        weight = noised + self.mae_weight * masked
        return ((pred.float() - x0.float()).abs() * weight).mean()

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator, *, t_indices: Sequence[int] = (499,),
                    ddim_steps: int | None = None) -> Tensor:
        """Mean over ``t_indices`` of the overlap-averaged patch reconstructions, in [0, 1] space.

        Per index: one noise field; then per upper patch (in order) its context mask, drawn as in
        training when ``test_masking`` is set.
        """
        if ddim_steps:
            raise ConfigError("maediff reconstructs in one step per patch; ddim_steps must be 0")
        with eval_mode(self):
            x0 = images.to(device=module_device(self), dtype=torch.float32) * 2 - 1
            b, _, h, w = x0.shape
            uppers = self.patches.upper_masks(h, w).to(x0.device)
            coverage = uppers.sum(dim=0)
            total = torch.zeros_like(x0)
            for t_index in t_indices:
                noise = self.process.sample_noise(x0, generator)
                t = torch.full((b,), self.process.schedule.check_index(t_index), dtype=torch.long, device=x0.device)
                x_t_full = self.process.q_sample(x0, t, noise)
                acc = torch.zeros_like(x0)
                for region in uppers:
                    region = region.expand(b, 1, h, w)
                    masked = self.patches.mask_context(region, generator, self.mask_ratio) if self.test_masking else None
                    acc = acc + region * self.predict_x0(composite(x_t_full, x0, region), t, masked)
                total = total + acc / coverage
            recon = total / len(t_indices)
        return ((recon + 1) / 2).to(images.device)


@dataclass(frozen=True)
class MAEDiffConfig(DiffusionConfig):
    patch_grid: int = 2  # upper-level patch side = slice side / 2 (48 px at 96 px)
    patch_overlap: int = 2  # upper patches overlap by half: 3 x 3 of them
    sub_grid: int = 4  # 4 x 4 sub-level cells per upper patch (12 px at 96 px)
    mask_ratio: float = 0.75  # fraction of the context's cells masked in training
    mae_weight: float = 1.0  # weight of the masked-cell reconstruction term
    test_masking: bool = True  # mask the context at test time as in training (False: the full context)

    def __post_init__(self) -> None:
        super().__post_init__()
        HierarchicalPatches(self.patch_grid, self.patch_overlap, self.sub_grid)  # validates
        if not 0 <= self.mask_ratio < 1:
            raise ConfigError(f"mask_ratio must lie in [0, 1), got {self.mask_ratio}")
        if self.mae_weight < 0:
            raise ConfigError(f"mae_weight must be >= 0, got {self.mae_weight}")
        if self.ddim_steps:
            raise ConfigError(f"maediff supports ddim_steps=0 only (one pass per patch), got {self.ddim_steps}")


@register_method("maediff")
class MAEDiff(DiffusionReconstruction, ReconstructionMethod):
    """Patched diffusion over overlapping upper patches with MAE masking of the clean context (MAEDiff)."""

    Config: ClassVar[type] = MAEDiffConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu": CPU_PRESET, "smoke": SMOKE_PRESET}

    def __init__(self, config: MAEDiffConfig, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        check_image_shape(self.image_shape, config)
        patches = HierarchicalPatches(config.patch_grid, config.patch_overlap, config.sub_grid)
        patches.upper_boxes(*self.image_shape)  # validates the partition against the image size
        unet = DiffusionUNet(
            in_channels=2,
            base_channels=config.base_channels,
            channel_mult=config.channel_mult,
            num_res_blocks=config.num_res_blocks,
            num_head_channels=config.num_head_channels,
            dropout=config.dropout,
        )
        self.model = MAEDiffModel(unet, build_process(config), patches,
                                  mask_ratio=config.mask_ratio, mae_weight=config.mae_weight,
                                  test_masking=config.test_masking)
