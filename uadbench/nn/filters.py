"""Torch image filters: a separable Gaussian filter and the full-resolution SSIM map.

Both act along any chosen dimensions of a tensor, so the same code filters one slice in-plane
(``dims=(-2, -1)``) or a stack of consecutive slices as a volume (``dims=(0, 2, 3)`` for a
(Z, 1, H, W) batch). They reproduce ``scipy.ndimage.gaussian_filter`` and torchmetrics' SSIM (tested
against scipy and scikit-image in tests/test_mhd.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _pad_index(n: int, pad: int, mode: str, device) -> Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    if mode == "reflect":  # scipy's 'reflect' (edge sample repeated): d c b a | a b c d
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":  # torch's 'reflect' / scipy's 'mirror': d c b | a b c d
        i = i % (2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown padding mode {mode!r}; valid: 'reflect' (scipy's default), 'mirror'")


def gaussian_kernel1d(sigma: float, radius: int, dtype=torch.float64, device=None) -> Tensor:
    """Normalised Gaussian weights at ``-radius .. radius``."""
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_filter(
    x: Tensor, sigma: float, *, dims: tuple[int, ...], radius: int | None = None, mode: str = "reflect"
) -> Tensor:
    """Separable Gaussian filter of ``x`` along ``dims``.

    Defaults match ``scipy.ndimage.gaussian_filter`` (radius ``int(4 sigma + 0.5)``, mode
    'reflect'); ``mode='mirror'`` with ``radius=5`` is torchmetrics' SSIM window of 11.
    """
    if sigma <= 0:
        return x
    radius = int(4.0 * sigma + 0.5) if radius is None else radius
    kernel = gaussian_kernel1d(sigma, radius, dtype=x.dtype, device=x.device)
    out = x
    for dim in dims:
        dim = dim % out.dim()
        idx = _pad_index(out.shape[dim], radius, mode, out.device)
        padded = out.index_select(dim, idx).movedim(dim, -1)
        shape = padded.shape
        flat = padded.reshape(-1, 1, shape[-1])
        filtered = F.conv1d(flat, kernel.view(1, 1, -1))
        out = filtered.reshape(*shape[:-1], filtered.shape[-1]).movedim(-1, dim)
    return out


def ssim_map(
    x: Tensor, y: Tensor, *, sigma: float = 1.0, kernel_size: int = 11, dims: tuple[int, ...] = (-2, -1),
    data_range: float | None = None,
) -> Tensor:
    """Full-resolution SSIM map as torchmetrics computes it (Gaussian window, 'reflect' padding).

    Computed in float64. ``data_range`` None: the larger of the two value ranges, torchmetrics'
    default.
    """
    x, y = x.double(), y.double()
    if data_range is None:
        data_range = float(torch.maximum(x.max() - x.min(), y.max() - y.min()))
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    radius = (kernel_size - 1) // 2

    def blur(v: Tensor) -> Tensor:
        return gaussian_filter(v, sigma, dims=dims, radius=radius, mode="mirror")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
