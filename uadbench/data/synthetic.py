"""Synthetic anomalies for self-supervised methods: patches of one healthy slice blended into another.

A self-supervised method (FPI, NSA) trains a network on healthy slices with foreign patches blended
in and asks it for the blending target per pixel; these functions make such pairs. They are pure
torch functions of their inputs and of the ``torch.Generator`` they are given: the same generator
state gives the same patches, factors and targets.

- :func:`partner_indices`: for each slice of a batch, another slice of the same batch to take the
  patch from.
- :func:`square_patch_masks`: FPI's patch sampler, one axis-aligned square per slice.
- :func:`interpolate_patches`: FPI's blend, a convex combination ``(1 - a) x + a y`` inside the patch,
  with the foreign share ``a`` as the target where the blend changed the slice.
- :func:`poisson_blend`: gradient-domain (Poisson) blending inside a mask with Dirichlet boundary
  values from the destination, with the source's gradients (``cv2.NORMAL_CLONE``) or the larger of
  the two gradients per neighbour pair (``cv2.MIXED_CLONE``); solved by conjugate gradients on the
  5-point Laplacian, batched over slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from uadbench.errors import ConfigError


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def partner_indices(n: int, generator: torch.Generator | None = None) -> Tensor:
    """For each of ``n`` slices the index of another one: the batch cyclically shifted by a random
    ``k`` in [1, n-1] (so no slice is its own partner; with one slice it is its own)."""
    if n < 2:
        return torch.zeros(n, dtype=torch.long)
    k = int(torch.randint(1, n, (1,), generator=generator, device=_device(generator)))
    return (torch.arange(n) + k) % n


def _box_masks(y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor, shape: tuple[int, int]) -> Tensor:
    """Boolean (B, 1, H, W) masks of the boxes ``[y0, y1) x [x0, x1)`` (clipped to the image)."""
    h, w = shape
    rows = torch.arange(h, device=y0.device)
    cols = torch.arange(w, device=x0.device)
    in_y = (rows[None] >= y0[:, None]) & (rows[None] < y1[:, None])
    in_x = (cols[None] >= x0[:, None]) & (cols[None] < x1[:, None])
    return (in_y[:, :, None] & in_x[:, None, :])[:, None]


def square_patch_masks(
    n: int,
    shape: tuple[int, int],
    generator: torch.Generator | None = None,
    *,
    half_width: tuple[float, float] = (0.05, 0.2),
    core: float = 0.5,
) -> Tensor:
    """FPI's patches: one axis-aligned square per slice, as boolean (n, 1, H, W) masks.

    The half-width is an integer drawn uniformly from ``[round(lo * W), round(hi * W))`` (at least 1),
    with ``W`` the smaller image side, so the side ``2 * half-width`` is 10-40 % of ``W`` by default.
    The centre is uniform over the central ``core`` fraction of each axis. Boxes are clipped to the
    image.
    """
    lo, hi = half_width
    if not 0 < lo <= hi <= 0.5:
        raise ConfigError(f"patch half-width fractions must satisfy 0 < low <= high <= 0.5, got ({lo}, {hi})")
    if not 0 < core <= 1:
        raise ConfigError(f"the patch-centre core fraction must be in (0, 1], got {core}")
    h, w = shape
    side = min(h, w)
    hw_lo = max(1, round(lo * side))
    hw_hi = max(hw_lo + 1, round(hi * side))
    dev = _device(generator)
    half = torch.randint(hw_lo, hw_hi, (n,), generator=generator, device=dev)
    centres = []
    for size in (h, w):
        start = int(round(size * (1 - core) / 2))
        stop = max(start + 1, int(round(size * (1 + core) / 2)))
        centres.append(torch.randint(start, stop, (n,), generator=generator, device=dev))
    cy, cx = centres
    return _box_masks(cy - half, cy + half, cx - half, cx + half, shape)


def interpolate_patches(
    images: Tensor,
    partners: Tensor,
    masks: Tensor,
    alpha: Tensor,
) -> tuple[Tensor, Tensor]:
    """FPI's blend of ``partners`` into ``images`` (all (B, 1, H, W); ``alpha`` (B,)).

    Inside the mask the result is ``(1 - a) * x + a * y`` with ``a`` the slice's foreign share;
    outside it is ``x``. The target is ``a`` at mask pixels where ``x != y`` (where the blend can
    change the slice) and 0 elsewhere. Returns (blended, target).
    """
    if images.shape != partners.shape or images.shape != masks.shape:
        raise ValueError(f"images, partners and masks must have one shape, got {tuple(images.shape)}, "
                         f"{tuple(partners.shape)} and {tuple(masks.shape)}")
    a = alpha.to(images.dtype).reshape(-1, 1, 1, 1)
    blended = torch.where(masks, (1 - a) * images + a * partners, images)
    changed = masks & (images != partners)
    target = torch.where(changed, a.expand_as(images), torch.zeros_like(images))
    return blended, target


def fpi_anomalies(
    images: Tensor,
    generator: torch.Generator | None = None,
    *,
    half_width: tuple[float, float] = (0.05, 0.2),
    core: float = 0.5,
    alpha_range: tuple[float, float] = (0.05, 0.95),
) -> tuple[Tensor, Tensor]:
    """FPI training pairs for a batch of healthy slices (B, 1, H, W): each slice gets one square
    patch (:func:`square_patch_masks`) of its partner slice (:func:`partner_indices`) blended in with
    a foreign share ``a ~ U(alpha_range)`` (:func:`interpolate_patches`). Returns (blended, target)."""
    lo, hi = alpha_range
    if not 0 <= lo <= hi <= 1:
        raise ConfigError(f"the blend-factor range must satisfy 0 <= low <= high <= 1, got ({lo}, {hi})")
    b = images.shape[0]
    partners = images[partner_indices(b, generator).to(images.device)]
    masks = square_patch_masks(b, (int(images.shape[-2]), int(images.shape[-1])), generator, half_width=half_width, core=core)
    alpha = lo + (hi - lo) * torch.rand(b, generator=generator, device=_device(generator))
    return interpolate_patches(images, partners, masks.to(images.device), alpha.to(images.device))


# -- Poisson blending ----------------------------------------------------------------------------------------------
_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """``out[..., i, j] = x[..., i + dy, j + dx]`` with zeros beyond the edge."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]


def poisson_guidance(destination: Tensor, source: Tensor, *, mixed: bool = True) -> Tensor:
    """The divergence term of the Poisson equation per pixel, ``sum_q v_pq`` over the four
    neighbours ``q`` of ``p``, with ``v_pq = s_p - s_q`` (the source's gradient) or, with ``mixed``,
    whichever of ``s_p - s_q`` and ``d_p - d_q`` is larger in magnitude (OpenCV's MIXED_CLONE rule)."""
    total = torch.zeros_like(destination)
    for dy, dx in _NEIGHBOURS:
        gs = source - _shift(source, dy, dx)
        if mixed:
            gd = destination - _shift(destination, dy, dx)
            gs = torch.where(gs.abs() > gd.abs(), gs, gd)
        total = total + gs
    return total


def poisson_blend(
    destination: Tensor,
    source: Tensor,
    mask: Tensor,
    *,
    mixed: bool = True,
    tol: float = 1e-6,
    max_iter: int | None = None,
) -> Tensor:
    """Poisson image editing of ``source`` into ``destination`` inside ``mask`` (all (B, 1, H, W)).

    Unknowns are the mask pixels ``p``; every other pixel keeps the destination's value (the Dirichlet
    boundary). Each unknown satisfies the discrete Poisson equation with the 5-point Laplacian,
    ``4 u_p - sum_{q in N(p)} u_q = sum_{q in N(p)} v_pq`` (:func:`poisson_guidance`), where ``u_q``
    is the destination's value for ``q`` outside the mask. Mask pixels on the image border are
    dropped (their stencil leaves the image). The symmetric positive-definite system is solved by
    conjugate gradients, batched over slices, until every slice's residual norm is below
    ``tol`` times its right-hand side's (or ``max_iter`` iterations, default ``4 (H + W)``).
    """
    if destination.shape != source.shape or destination.shape != mask.shape:
        raise ValueError(f"destination, source and mask must have one shape, got {tuple(destination.shape)}, "
                         f"{tuple(source.shape)} and {tuple(mask.shape)}")
    h, w = destination.shape[-2:]
    inner = torch.zeros_like(mask)
    inner[..., 1:-1, 1:-1] = True
    m = (mask & inner).to(destination.dtype)
    if not bool(m.any()):
        return destination.clone()
    known = destination * (1 - m)

    def laplace(u: Tensor) -> Tensor:  # the operator on the unknowns (zero outside the mask)
        u = u * m
        return m * (4 * u - sum(_shift(u, dy, dx) for dy, dx in _NEIGHBOURS))

    boundary = sum(_shift(known, dy, dx) for dy, dx in _NEIGHBOURS)
    rhs = m * (poisson_guidance(destination, source, mixed=mixed) + boundary)
    u = destination * m  # start from the destination
    r = rhs - laplace(u)
    p = r.clone()
    rr = (r * r).sum(dim=(1, 2, 3), keepdim=True)
    stop = (tol * rhs.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1) ** 2
    for it in range(max_iter if max_iter is not None else 4 * (h + w)):
        if it % 8 == 0 and bool((rr <= stop).all()):
            break
        ap = laplace(p)
        step = rr / (p * ap).sum(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
        step = torch.where(rr <= stop, torch.zeros_like(step), step)
        u = u + step * p
        r = r - step * ap
        rr_new = (r * r).sum(dim=(1, 2, 3), keepdim=True)
        p = r + (rr_new / rr.clamp_min(torch.finfo(u.dtype).tiny)) * p
        rr = rr_new
    return known + u * m
