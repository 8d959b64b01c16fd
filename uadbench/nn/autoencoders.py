"""Convolutional autoencoders with a dense bottleneck (AE and VAE baselines).

The layout follows the dense-bottleneck models compared by Baur et al., "Autoencoders for
unsupervised anomaly segmentation in brain MR images: a comparative study", Medical Image Analysis
69 (2021), as released at https://github.com/StefanDenn3r/Unsupervised_Anomaly_Detection_Brain_MRI:

- encoder: 5x5 convolutions with stride 2, BatchNorm and LeakyReLU; level ``i`` has
  ``channels[i]`` filters (Baur et al.: ``min(128, 32 * 2**i)``);
- bottleneck: a 1x1 convolution to ``C // 8`` channels, flatten, a dense layer to the latent
  ``z`` (dropout 0.2 while training), a dense layer back, a 1x1 convolution back to ``C``;
- decoder: BatchNorm and ReLU, then 5x5 transposed convolutions with stride 2, BatchNorm and
  LeakyReLU, with ``max(channels[0], channels[-1] // 2**i)`` filters, and a final 1x1 convolution
  with no activation.

Any image size works: inputs are zero-padded to a multiple of ``2**len(channels)`` and the
reconstruction is cropped back.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uadbench.errors import ConfigError
from uadbench.nn.utils import padded_shape


def pad_to(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Zero-pad (bottom/right) a (B,C,H,W) batch to ``shape``."""
    dh, dw = shape[0] - x.shape[-2], shape[1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (0, dw, 0, dh))


def check_architecture(image_shape: tuple[int, int], channels: tuple[int, ...], kernel_size: int) -> tuple[int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 2 or min(shape) < 4:
        raise ConfigError(f"image_shape must be (H, W) with both sides >= 4, got {image_shape!r}")
    if not channels or any(int(c) < 1 for c in channels):
        raise ConfigError(f"channels must be a non-empty list of positive widths, got {channels!r}")
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ConfigError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    return shape


def decoder_channels(channels: tuple[int, ...]) -> tuple[int, ...]:
    """Decoder widths mirroring an encoder's (Baur et al.: ``max(32, 128 / 2**i)``)."""
    return tuple(max(channels[0], channels[-1] >> i) for i in range(len(channels)))


class ConvEncoder(nn.Module):
    """(B,1,H,W) -> feature map (B, C, H / 2**L, W / 2**L) via strided convolutions."""

    def __init__(self, image_shape: tuple[int, int], channels: tuple[int, ...], kernel_size: int = 5) -> None:
        super().__init__()
        self.padded = padded_shape(image_shape, len(channels))
        layers: list[nn.Module] = []
        cin = 1
        for cout in channels:
            layers += [
                nn.Conv2d(cin, cout, kernel_size, stride=2, padding=kernel_size // 2),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
            ]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.grid = (self.padded[0] >> len(channels), self.padded[1] >> len(channels))
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(pad_to(x, self.padded))


class ConvDecoder(nn.Module):
    """Feature map (B, C, h, w) -> image (B,1,H,W) via transposed convolutions (no output activation)."""

    def __init__(self, image_shape: tuple[int, int], in_channels: int, channels: tuple[int, ...], kernel_size: int = 5) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = [nn.BatchNorm2d(in_channels), nn.ReLU()]
        cin = in_channels
        for cout in channels:
            # stride 2 with padding k//2 and output_padding 1 doubles the size for odd k
            layers += [
                nn.ConvTranspose2d(cin, cout, kernel_size, stride=2, padding=kernel_size // 2, output_padding=1),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
            ]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)[..., : self.image_shape[0], : self.image_shape[1]]


class DenseBottleneckAutoencoder(nn.Module):
    """Encoder, dense bottleneck, decoder. ``variational=True`` makes q(z|x) a diagonal Gaussian.

    Deterministic: ``forward(x) -> x_hat``. Variational: ``forward(x, generator=g) ->
    (x_hat of a posterior sample, mu, logvar)`` and ``decode(mu)`` for the mean reconstruction.
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        channels: tuple[int, ...] = (32, 64, 128, 128),
        latent_dim: int = 128,
        kernel_size: int = 5,
        dropout: float = 0.2,
        variational: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        image_shape = check_architecture(image_shape, channels, kernel_size)
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.variational = variational
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(image_shape, channels, kernel_size)
        c = self.encoder.out_channels
        self.squeezed = max(1, c // 8)
        self.grid = self.encoder.grid
        flat = self.squeezed * self.grid[0] * self.grid[1]
        self.squeeze = nn.Conv2d(c, self.squeezed, 1)
        self.to_latent = nn.Linear(flat, 2 * latent_dim if variational else latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        self.unsqueeze = nn.Conv2d(self.squeezed, c, 1)
        self.dropout = nn.Dropout(dropout)
        self.decoder = ConvDecoder(image_shape, c, decoder_channels(channels), kernel_size)

    def encode(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Latent code (AE) or (mu, logvar) (VAE)."""
        h = self.squeeze(self.encoder(x)).flatten(1)
        z = self.dropout(self.to_latent(h))
        if not self.variational:
            return z
        mu, logvar = z.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        h = self.dropout(self.from_latent(z)).view(z.shape[0], self.squeezed, *self.grid)
        return self.decoder(self.unsqueeze(h))

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None):
        if not self.variational:
            return self.decode(cast(Tensor, self.encode(x)))  # an AE's code is one tensor
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, summed over latent dimensions: (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction_loss(x_hat: Tensor, x: Tensor, kind: str = "l1") -> Tensor:
    """Per-image error summed over pixels ("l1": absolute, "l2": squared), averaged over the batch."""
    if kind == "l1":
        err = (x_hat - x).abs()
    elif kind == "l2":
        err = (x_hat - x).pow(2)
    else:
        raise ConfigError(f"reconstruction loss must be 'l1' or 'l2', got {kind!r}")
    return err.flatten(1).sum(dim=1).mean()
