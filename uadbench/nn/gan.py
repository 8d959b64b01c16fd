"""WGAN-GP networks and losses for f-AnoGAN (Schlegl et al., Medical Image Analysis 54, 2019).

The generator and critic are residual networks in the style of the 64x64 ResNet WGAN-GP of
Gulrajani et al. (NeurIPS 2017) that f-AnoGAN builds on: ``width`` is the base number of filters
(64 in the original), the generator starts at 1/8 of the image size with ``8 * width`` channels and
doubles the resolution three times (8w -> 4w -> 2w -> w); the critic mirrors it and its last
residual block's output is the feature map ``f(x)`` used by the izi_f encoder loss. Normalisation
is per-sample (GroupNorm with one group, i.e. layer norm over C, H, W), as a gradient penalty
needs. Images live in [-1, 1] inside these networks. A light DCGAN-style pair (1/16 start
resolution; upsampling + 3x3 convolutions with BatchNorm in the generator, strided 4x4 convolutions
in the critic) is available for CPU budgets.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uadbench.errors import ConfigError
from uadbench.nn.autoencoders import ConvEncoder
from uadbench.nn.utils import padded_shape

LEVELS = 3  # resolution doublings in the ResNet generator / halvings in the ResNet critic
DCGAN_LEVELS = 4


def _int_shape(image_shape: tuple[int, int]) -> tuple[int, int]:
    """``image_shape`` as a tuple of Python ints."""
    return cast(tuple[int, int], tuple(int(s) for s in image_shape))


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, c)


class _GenBlock(nn.Module):
    """norm-ReLU-conv3x3-norm-ReLU-conv3x3, optionally upsampling x2; residual shortcut."""

    def __init__(self, cin: int, cout: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or upsample) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(F.relu(self.n1(x)))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.c2(F.relu(self.n2(h)))
        return h + self.skip(x)


class _CriticBlock(nn.Module):
    """norm-ReLU-conv3x3-norm-ReLU-conv3x3, optionally average-pooling /2; residual shortcut."""

    def __init__(self, cin: int, cout: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or downsample) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.relu(self.n2(self.c1(F.relu(self.n1(x))))))
        s = self.skip(x)
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class ResNetGenerator(nn.Module):
    """z (B, latent_dim) -> image (B,1,H,W) in [-1, 1] (tanh)."""

    def __init__(self, image_shape: tuple[int, int], latent_dim: int = 128, width: int = 64) -> None:
        super().__init__()
        if latent_dim < 1 or width < 1:
            raise ConfigError(f"latent_dim and width must be positive, got {latent_dim}, {width}")
        self.image_shape = _int_shape(image_shape)
        padded = padded_shape(self.image_shape, LEVELS)
        self.grid = (padded[0] >> LEVELS, padded[1] >> LEVELS)
        self.c0 = 8 * width
        self.fc = nn.Linear(latent_dim, self.c0 * self.grid[0] * self.grid[1])
        widths = [8 * width, 8 * width, 4 * width, 2 * width, width]
        self.blocks = nn.Sequential(
            *[_GenBlock(widths[i], widths[i + 1], upsample=i > 0) for i in range(len(widths) - 1)]
        )
        self.out_norm = _norm(width)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, *self.grid)
        h = self.out(F.relu(self.out_norm(self.blocks(h))))
        return torch.tanh(h)[..., : self.image_shape[0], : self.image_shape[1]]


class ResNetCritic(nn.Module):
    """image (B,1,H,W) in [-1, 1] -> (score (B,), features (B, 8w, H/8, W/8))."""

    def __init__(self, image_shape: tuple[int, int], width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ConfigError(f"width must be positive, got {width}")
        self.padded = padded_shape(_int_shape(image_shape), LEVELS)
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.blocks = nn.Sequential(
            *[_CriticBlock(widths[i], widths[i + 1], downsample=i < LEVELS) for i in range(len(widths) - 1)]
        )
        self.head = nn.Linear(8 * width, 1)

    def features(self, x: Tensor) -> Tensor:
        dh, dw = self.padded[0] - x.shape[-2], self.padded[1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, (0, dw, 0, dh), value=-1.0)  # background is -1 in [-1, 1]
        return self.blocks(self.stem(x))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        # a linear read-out at every location, averaged: one Wasserstein score per image
        return self.head(f.mean(dim=(2, 3))).squeeze(1), f


class DCGANGenerator(nn.Module):
    """Light generator: z -> 8w x (H/16) -> four (nearest x2 upsampling, 3x3 conv, BatchNorm, ReLU)
    stages (4w, 2w, w, w) -> 3x3 conv -> tanh. Upsampling plus convolution avoids the checkerboard
    artefacts of transposed convolutions, which matters for the short CPU budgets."""

    def __init__(self, image_shape: tuple[int, int], latent_dim: int = 128, width: int = 64) -> None:
        super().__init__()
        if latent_dim < 1 or width < 1:
            raise ConfigError(f"latent_dim and width must be positive, got {latent_dim}, {width}")
        self.image_shape = _int_shape(image_shape)
        padded = padded_shape(self.image_shape, DCGAN_LEVELS)
        self.grid = (padded[0] >> DCGAN_LEVELS, padded[1] >> DCGAN_LEVELS)
        self.c0 = 8 * width
        self.fc = nn.Linear(latent_dim, self.c0 * self.grid[0] * self.grid[1])
        widths = [8 * width, 4 * width, 2 * width, width, width]
        layers: list[nn.Module] = [nn.BatchNorm2d(self.c0), nn.ReLU()]
        for cin, cout in zip(widths, widths[1:]):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, *self.grid)
        return torch.tanh(self.layers(h))[..., : self.image_shape[0], : self.image_shape[1]]


class DCGANCritic(nn.Module):
    """Light DCGAN-style critic: four stride-2 4x4 convs (w, 2w, 4w, 8w) with LeakyReLU 0.2."""

    def __init__(self, image_shape: tuple[int, int], width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ConfigError(f"width must be positive, got {width}")
        self.padded = padded_shape(_int_shape(image_shape), DCGAN_LEVELS)
        widths = [1, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1))
            if i > 0:
                layers.append(_norm(cout))
            layers.append(nn.LeakyReLU(0.2))
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(8 * width, 1)

    def features(self, x: Tensor) -> Tensor:
        dh, dw = self.padded[0] - x.shape[-2], self.padded[1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, (0, dw, 0, dh), value=-1.0)
        return self.blocks(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return self.head(f.mean(dim=(2, 3))).squeeze(1), f


def build_gan(architecture: str, image_shape: tuple[int, int], latent_dim: int, width: int) -> tuple[nn.Module, nn.Module]:
    """(generator, critic) of the named architecture: "resnet" (f-AnoGAN's) or "dcgan" (light)."""
    if architecture == "resnet":
        return ResNetGenerator(image_shape, latent_dim, width), ResNetCritic(image_shape, width)
    if architecture == "dcgan":
        return DCGANGenerator(image_shape, latent_dim, width), DCGANCritic(image_shape, width)
    raise ConfigError(f"GAN architecture must be 'resnet' or 'dcgan', got {architecture!r}")


class LatentEncoder(nn.Module):
    """image (B,1,H,W) in [-1, 1] -> z in (-1, 1)^latent_dim (tanh), for izi_f training."""

    def __init__(self, image_shape: tuple[int, int], channels: tuple[int, ...], latent_dim: int = 128) -> None:
        super().__init__()
        self.convs = ConvEncoder(_int_shape(image_shape), tuple(channels), kernel_size=5)
        g = self.convs.grid
        self.fc = nn.Linear(self.convs.out_channels * g[0] * g[1], latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.fc(self.convs(x).flatten(1)))


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty ``mean((||grad_x D(x_interp)||_2 - 1)^2)`` on random interpolates.

    ``x_interp = real + a * (fake - real)`` with one ``a ~ U(0, 1)`` per sample; the gradient norm
    is taken over all pixels of a sample. The graph is kept so the penalty trains the critic.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device=real.device, dtype=real.dtype)
    interp = (real + alpha * (fake.detach() - real)).requires_grad_(True)
    score = critic(interp)
    score = score[0] if isinstance(score, tuple) else score
    (grad,) = torch.autograd.grad(score.sum(), interp, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()
