"""Post-processing steps 2-3 on torch tensors, for anomaly maps that are still on a GPU.

Same values as :func:`uadbench.evaluation.postprocess.postprocess_map` (and so as scipy): the
median is a selection (``torch.kthvalue``) of the same 125 values, the window border is the same
half-sample reflection, and only the windows whose median can be non-zero are evaluated (see the
docstring of :mod:`uadbench.evaluation.postprocess`). The brain-mask erosion runs on the host
(a small boolean operation). Metrics and the component filter then run on the host.

The protocol uses this path automatically when a volume's ``anomaly_map`` is a CUDA tensor; it
works on any torch device, which is how it is tested without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from uadbench.evaluation.postprocess import PostprocessSettings, erode_brain_mask, median_filter_3d


def _symmetric_pad(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Pad every dimension by ``radius`` with scipy's 'reflect' (d c b a | a b c d)."""
    for dim in range(x.ndim):
        n = x.shape[dim]
        index = torch.cat(
            [
                torch.arange(radius - 1, -1, -1),
                torch.arange(n),
                torch.arange(n - 1, n - 1 - radius, -1),
            ]
        ).to(x.device)
        x = x.index_select(dim, index)
    return x


def _box_count(indicator: torch.Tensor, radius: int) -> torch.Tensor:
    size = 2 * radius + 1
    padded = _symmetric_pad(indicator.to(torch.float32), radius)[None, None]
    # sums of at most size**3 ones: exact in float32
    return F.avg_pool3d(padded, kernel_size=size, stride=1, divisor_override=1)[0, 0]


def median_filter_3d_torch(x: torch.Tensor, size: int, *, chunk: int = 1 << 15) -> torch.Tensor:
    """Cubic median filter of a 3D tensor with ``scipy.ndimage.median_filter``'s values."""
    if size <= 1:
        return x.clone()
    radius = size // 2
    nonzero = x != 0
    box = []
    for dim in range(3):
        other = tuple(d for d in range(3) if d != dim)
        idx = torch.nonzero(nonzero.any(dim=other[1]).any(dim=other[0])).flatten()
        if idx.numel() == 0:
            return torch.zeros_like(x)
        lo = max(0, int(idx[0]) - 2 * radius)
        hi = min(x.shape[dim], int(idx[-1]) + 2 * radius + 1)
        box.append(slice(lo, hi))
    sub = x[tuple(box)]
    if min(sub.shape) <= radius:  # too small for one reflection: use the host path
        host = median_filter_3d(x.detach().cpu().numpy(), size)
        return torch.from_numpy(host).to(x.device)
    half = size**3 // 2
    candidates = _box_count(sub > 0, radius) > half
    negative = sub < 0
    if bool(negative.any()):
        candidates |= _box_count(negative, radius) > half
    where = torch.nonzero(candidates)
    out_sub = torch.zeros_like(sub)
    if where.numel():
        windows = (
            _symmetric_pad(sub, radius).unfold(0, size, 1).unfold(1, size, 1).unfold(2, size, 1)
        )
        for begin in range(0, where.shape[0], chunk):
            ix, iy, iz = where[begin : begin + chunk].unbind(1)
            block = windows[ix, iy, iz].reshape(ix.numel(), -1)
            out_sub[ix, iy, iz] = block.kthvalue(half + 1, dim=1).values
    out = torch.zeros_like(x)
    out[tuple(box)] = out_sub
    return out


def postprocess_map_torch(
    anomaly_map: torch.Tensor, brain_mask: np.ndarray, settings: PostprocessSettings
) -> np.ndarray:
    """Steps 2-3 on the map's device; returns the float32 result on the host."""
    x = anomaly_map.detach().to(torch.float32)
    eroded = torch.from_numpy(erode_brain_mask(np.asarray(brain_mask), settings.erosion_iterations))
    eroded = eroded.to(device=x.device, dtype=torch.float32)
    if settings.order == "code":
        y = median_filter_3d_torch(x * eroded, settings.median_size)
    else:
        y = median_filter_3d_torch(x, settings.median_size) * eroded
    return y.cpu().numpy()


__all__ = ["median_filter_3d_torch", "postprocess_map_torch"]
