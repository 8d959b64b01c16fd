"""Masked-image model of a condition encoder (a dense stand-in for SparK).

The cDDPM paper (Behrendt et al., arXiv 2312.04215) optionally pretrains its ResNet-50 encoder with
SparK (Tian et al., "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked
Modeling", ICLR 2023) on the healthy training slices: 65 % of the patches of the encoder's
downsampling grid are masked (a 3x3 grid of 32x32 patches at 96x96, 3 kept per image), a light
decoder reconstructs the image, and the loss is the MSE on the masked patches (METHOD_SPEC.md §1.3).

This module keeps the masking and the objective but encodes densely: masked patches are zeroed in
the input image and the ordinary backbone runs on it; the decoder upsamples the last feature map
only (SparK uses sparse convolutions, per-level mask tokens and a 4-level hierarchical decoder).
The training itself (optimiser, steps, hand-over to the cDDPM) is ``pretrain_encoder`` in
:mod:`uadbench.methods.cddpm`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from uadbench.errors import ConfigError
from uadbench.nn.encoders import encoder_feature_maps, encoder_output_stride


def random_patch_mask(
    batch: int, grid: tuple[int, int], mask_ratio: float, generator: torch.Generator
) -> Tensor:
    """(B, gh, gw) float mask, 1 = masked; ``round(n * (1 - mask_ratio))`` patches kept per image."""
    n = grid[0] * grid[1]
    keep = max(1, min(n - 1, round(n * (1 - mask_ratio)))) if n > 1 else 0
    scores = torch.rand(batch, n, generator=generator)
    order = scores.argsort(dim=1)
    mask = torch.ones(batch, n)
    mask.scatter_(1, order[:, :keep], 0.0)
    return mask.view(batch, *grid)


class LightDecoder(nn.Module):
    """Upsampling decoder: per stage ConvTranspose(4, 2, 1) then two conv3x3-BN-ReLU6, halving widths."""

    def __init__(self, in_channels: int, stride: int, width: int = 512, out_channels: int = 1) -> None:
        super().__init__()
        stages = int(round(math.log2(stride)))
        if 2**stages != stride:
            raise ConfigError(f"encoder output stride {stride} is not a power of two")
        self.proj = nn.Conv2d(in_channels, width, 1)
        layers: list[nn.Module] = []
        ch = width
        for _ in range(stages):
            nxt = max(ch // 2, 8)
            layers += [
                nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1),
                nn.Conv2d(nxt, nxt, 3, padding=1, bias=False),
                nn.BatchNorm2d(nxt),
                nn.ReLU6(inplace=True),
                nn.Conv2d(nxt, nxt, 3, padding=1, bias=False),
                nn.BatchNorm2d(nxt),
                nn.ReLU6(inplace=True),
            ]
            ch = nxt
        self.up = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, out_channels, 1)

    def forward(self, feats: Tensor) -> Tensor:
        return self.head(self.up(self.proj(feats)))


class MaskedImageModel(nn.Module):
    """Encoder + light decoder trained to fill in masked patches."""

    def __init__(self, encoder: nn.Module, image_shape: tuple[int, int], decoder_width: int = 512) -> None:
        super().__init__()
        self.encoder = encoder
        self.stride = encoder_output_stride(encoder, image_size=max(64, max(image_shape)))
        if any(s % self.stride for s in image_shape):
            raise ConfigError(
                f"masked pretraining needs image sides divisible by the encoder stride {self.stride}, "
                f"got {tuple(image_shape)}"
            )
        self.grid = (image_shape[0] // self.stride, image_shape[1] // self.stride)
        feats = encoder_feature_maps(encoder.eval(), torch.zeros(1, 1, *image_shape))
        encoder.train()
        self.decoder = LightDecoder(int(feats.shape[1]), self.stride, decoder_width)

    def loss(self, images: Tensor, mask_ratio: float, generator: torch.Generator) -> Tensor:
        """MSE on the masked patches of ``images`` (B, 1, H, W)."""
        mask = random_patch_mask(images.shape[0], self.grid, mask_ratio, generator).to(images.device)
        mask = mask.repeat_interleave(self.stride, 1).repeat_interleave(self.stride, 2)[:, None]
        pred = self.decoder(encoder_feature_maps(self.encoder, images * (1 - mask)))
        return ((pred - images) ** 2 * mask).sum() / mask.sum().clamp(min=1)
