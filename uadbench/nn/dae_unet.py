"""The UNet of the denoising-autoencoder baseline (Kascenas et al., MIDL 2022).

Layout, as in the DAE reference code (https://github.com/AntanasKascenas/DenoisingAE):
``depth`` levels with ``base_channels * 2**i`` filters; each level is two blocks of
reflection padding, a 3x3 weight-standardised convolution, Swish and GroupNorm (in that order);
2x2 average pooling between encoder levels; 2x2 stride-2 transposed convolutions and skip
concatenation on the way up; a final 1x1 convolution with no activation. GroupNorm uses a group
count near ``sqrt(channels)`` that divides the channel count.

Any image size works: inputs are reflection-padded to a multiple of ``2**(depth-1)`` and the
output is cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uadbench.errors import ConfigError


def group_count(channels: int) -> int:
    """The median divisor of ``channels`` (about its square root): 64 -> 8, 128 -> 16, 16 -> 4."""
    divisors = sorted(d for d in range(1, channels + 1) if channels % d == 0)
    return divisors[len(divisors) // 2]


class WSConv2d(nn.Conv2d):
    """Convolution with weight standardisation (Qiao et al. 2019): each filter has zero mean and
    unit variance before it is applied."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) / torch.sqrt(var + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.ReflectionPad2d(1), WSConv2d(cin, cout, 3), nn.SiLU(), nn.GroupNorm(group_count(cout), cout),
            nn.ReflectionPad2d(1), WSConv2d(cout, cout, 3), nn.SiLU(), nn.GroupNorm(group_count(cout), cout),
        )


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = _DoubleConv(2 * cout, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class DenoisingUNet(nn.Module):
    """(B,1,H,W) -> (B,1,H,W) UNet with ``depth`` resolution levels."""

    def __init__(self, depth: int = 4, base_channels: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"UNet depth must be >= 1, got {depth}")
        if base_channels < 1:
            raise ConfigError(f"UNet base_channels must be >= 1, got {base_channels}")
        widths = [base_channels * 2**i for i in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_DoubleConv(cin, w))
            cin = w
        self.up = nn.ModuleList(_Up(widths[i + 1], widths[i]) for i in reversed(range(depth - 1)))
        self.last = nn.Conv2d(widths[0], in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2 ** (self.depth - 1)
        ph, pw = math.ceil(h / m) * m - h, math.ceil(w / m) * m - w
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for up in self.up:
            x = up(x, skips.pop())
        return self.last(x)[..., :h, :w]
