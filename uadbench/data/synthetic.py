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
- :func:`nsa_anomalies` (:class:`NSASettings`): NSA's generator, up to three Gamma-sized patches of
  the partner, resized, moved to a new place on the object and Poisson-blended, with the
  logistic-intensity target (:func:`logistic_intensity_label`).
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def laplace(u: Tensor) -> Tensor:  # the 5-point operator on the unknowns (zero outside the mask)
        u = u * m
        out = 4 * u
        out[..., 1:, :] -= u[..., :-1, :]
        out[..., :-1, :] -= u[..., 1:, :]
        out[..., :, 1:] -= u[..., :, :-1]
        out[..., :, :-1] -= u[..., :, 1:]
        return out * m

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


# -- NSA: natural synthetic anomalies ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NSAPatchSettings:
    """The fields of NSA's generator (Schlüter et al. 2022) that shape its anomalies, intensities in the
    harness's [0, 1] units; a method's config inherits them (``nsa``), :class:`NSASettings` adds the
    search limits and validates.

    Half-widths are fractions of each image side; ``object_threshold`` separates the object (brain)
    from the background; ``label_tol``, ``logistic_k`` and ``logistic_x0`` are the reference's uint8
    constants (1, 1/2, 4) rescaled to [0, 1] intensities."""

    num_patches: int = 3
    width_min: float = 0.03
    width_max: float = 0.4
    gamma_shape: int = 2
    gamma_scale: float = 0.03
    gamma_offset: float = 0.05
    resize_min: float = 0.7
    resize_max: float = 1.3
    min_object: float = 0.7
    min_overlap: float = 0.7
    object_threshold: float = 0.0
    mixed: bool = True
    label_tol: float = 1 / 255
    logistic_k: float = 0.5 * 255
    logistic_x0: float = 4 / 255


@dataclass(frozen=True)
class NSASettings(NSAPatchSettings):
    """NSA's generator settings: the anomalies' fields (:class:`NSAPatchSettings`) and the search limits
    (tries per patch and destination, the smallest box worth a Poisson solve), all checked."""

    max_attempts: int = 200
    min_blend_pixels: int = 50

    def __post_init__(self) -> None:
        integers = ("num_patches", "gamma_shape", "max_attempts", "min_blend_pixels")
        for name in integers:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"NSA generator: {name} must be an integer, got {value!r}")
        checks = [
            (self.num_patches >= 1, f"num_patches must be >= 1, got {self.num_patches}"),
            (0 < self.width_min <= self.width_max <= 0.5,
             f"width_min and width_max must satisfy 0 < min <= max <= 0.5, got {self.width_min} and {self.width_max}"),
            (self.gamma_shape >= 1 and self.gamma_scale > 0 and self.gamma_offset >= 0,
             f"gamma_shape must be >= 1, gamma_scale > 0 and gamma_offset >= 0, got {self.gamma_shape}, "
             f"{self.gamma_scale} and {self.gamma_offset}"),
            (0 < self.resize_min <= self.resize_max,
             f"resize_min and resize_max must satisfy 0 < min <= max, got {self.resize_min} and {self.resize_max}"),
            (0 <= self.min_object < 1 and 0 <= self.min_overlap < 1,
             f"min_object and min_overlap must be in [0, 1), got {self.min_object} and {self.min_overlap}"),
            (self.label_tol >= 0 and self.logistic_k > 0,
             f"label_tol must be >= 0 and logistic_k > 0, got {self.label_tol} and {self.logistic_k}"),
            (self.max_attempts >= 1 and self.min_blend_pixels >= 1,
             f"max_attempts and min_blend_pixels must be >= 1, got {self.max_attempts} and {self.min_blend_pixels}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"NSA generator: {message}")


def _binary_median(mask: Tensor, size: int) -> Tensor:
    """Median of a boolean (B, 1, H, W) mask over ``size x size`` windows, edges replicated (the majority vote)."""
    pad = size // 2
    votes = F.avg_pool2d(F.pad(mask.float(), (pad, pad, pad, pad), mode="replicate"), size, stride=1)
    return votes > 0.5


def disk_median(x: Tensor, radius: int, where: Tensor | None = None) -> Tensor:
    """Median of (B, 1, H, W) ``x`` over a disk of ``radius`` (skimage's ``disk``: ``dy^2 + dx^2 <= r^2``),
    edges replicated (``mode='nearest'``). With a boolean ``where`` mask only those pixels are
    filtered (the rest are 0)."""
    offsets = torch.arange(-radius, radius + 1)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    inside = dy**2 + dx**2 <= radius**2
    dy, dx = dy[inside].to(x.device), dx[inside].to(x.device)
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    pick = where if where is not None else torch.ones_like(x, dtype=torch.bool)
    b, _, y, xx = torch.nonzero(pick, as_tuple=True)
    values = padded[b[:, None], 0, y[:, None] + radius + dy, xx[:, None] + radius + dx]  # (n, disk size)
    out = torch.zeros_like(x)
    if values.numel():
        out[b, 0, y, xx] = values.median(dim=1).values
    return out


def object_masks(images: Tensor, threshold: float = 0.0) -> Tensor:
    """NSA's object (here: brain) masks: ``images > threshold``, cleaned by a 7x7 median."""
    return _binary_median(images > threshold, 7)


def logistic_intensity_label(original: Tensor, blended: Tensor, region: Tensor, *, tol: float, k: float, x0: float) -> Tensor:
    """NSA's 'logistic-intensity' target for (B, 1, H, W) slices.

    1. changed = ``|original - blended| > tol`` inside ``region`` (the pasted objects), cleaned by a
       5x5 median; 2. ``d`` = the absolute difference on the changed pixels, median-filtered over a
       disk of radius 5; 3. target = ``changed / (1 + exp(-k (d - x0)))``."""
    diff = (original - blended).abs()
    changed = _binary_median((diff * region) > tol, 5)
    d = disk_median(diff * changed, 5, where=changed)
    return changed * torch.sigmoid(k * (d - x0))


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, max(high, low + 1), (1,), generator=generator))


def _gamma_width(size: int, s: NSASettings, generator: torch.Generator) -> int:
    """Half-width ``(offset + Gamma(shape, scale)) * size``, clipped; an integer-shape Gamma is a sum of exponentials."""
    gamma = -s.gamma_scale * float(torch.rand(s.gamma_shape, generator=generator).clamp_min(1e-12).log().sum())
    return int(min(max((s.gamma_offset + gamma) * size, round(s.width_min * size)), round(s.width_max * size)))


def _source_patch(src: Tensor, src_obj: Tensor, s: NSASettings, generator: torch.Generator) -> tuple[Tensor, Tensor] | None:
    """One source patch of a (H, W) slice: a box that is mostly object, resized. Returns (patch, its object mask)."""
    h, w = src.shape
    lo = (round(s.width_min * h), round(s.width_min * w))
    hi = (round(s.width_max * h), round(s.width_max * w))
    half = (_gamma_width(h, s, generator), _gamma_width(w, s, generator))
    for _ in range(s.max_attempts):
        cy, cx = _randint(lo[0], h - lo[0], generator), _randint(lo[1], w - lo[1], generator)
        y0, y1, x0, x1 = max(cy - half[0], 0), min(cy + half[0], h), max(cx - half[1], 0), min(cx + half[1], w)
        if y1 > y0 and x1 > x0 and float(src_obj[y0:y1, x0:x1].float().mean()) > s.min_object:
            break
    else:
        return None
    ph, pw = y1 - y0, x1 - x0
    scale = min(max(1 + 0.5 * float(torch.randn((), generator=generator)), s.resize_min), s.resize_max)
    new_h = min(max(scale * ph, lo[0]), hi[0])
    new_w = int(min(max(int(new_h / ph * pw), lo[1]), hi[1]))
    new_h = int(min(max(int(new_w / pw * ph), lo[0]), hi[0]))
    if new_h < 3 or new_w < 3:
        return None
    patch = F.interpolate(src[None, None, y0:y1, x0:x1], size=(new_h, new_w), mode="bilinear", align_corners=False)[0, 0]
    patch_obj = F.interpolate(src_obj[None, None, y0:y1, x0:x1].float(), size=(new_h, new_w), mode="nearest")[0, 0] > 0.5
    return patch, patch_obj


def _destination(patch_obj: Tensor, dest_obj: Tensor, s: NSASettings, generator: torch.Generator) -> tuple[int, int] | None:
    """Top-left corner of a destination box where the pasted object overlaps the destination's object enough."""
    ph, pw = patch_obj.shape
    h, w = dest_obj.shape
    obj = float(patch_obj.sum())
    if obj / (ph * pw) <= s.min_object:
        return None
    for _ in range(s.max_attempts):
        cy, cx = _randint(ph // 2 + 1, h - ph // 2 - 1, generator), _randint(pw // 2 + 1, w - pw // 2 - 1, generator)
        y0, x0 = cy - ph // 2, cx - pw // 2
        if y0 < 0 or x0 < 0 or y0 + ph > h or x0 + pw > w:
            continue
        if float((dest_obj[y0:y0 + ph, x0:x0 + pw] & patch_obj).sum()) / obj > s.min_overlap:
            return y0, x0
    return None


def _blend_boxes(images: Tensor, pasted: list[tuple[int, int, int, Tensor]], *, mixed: bool) -> Tensor:
    """Poisson-blend each (slice, top, left, patch) into its box of ``images``, the box's outer pixel
    ring as the boundary, all boxes in one batched solve over windows of the largest box size;
    results clipped to [0, 1]."""
    hm = max(p.shape[0] for _, _, _, p in pasted)
    wm = max(p.shape[1] for _, _, _, p in pasted)
    n = len(pasted)
    dest = torch.zeros(n, 1, hm, wm, dtype=images.dtype, device=images.device)
    src, mask = torch.zeros_like(dest), torch.zeros(n, 1, hm, wm, dtype=torch.bool, device=images.device)
    for i, (k, y0, x0, patch) in enumerate(pasted):
        ph, pw = patch.shape
        dest[i, 0, :ph, :pw] = images[k, 0, y0:y0 + ph, x0:x0 + pw]
        src[i, 0, :ph, :pw] = patch.to(images)
        mask[i, 0, 1:ph - 1, 1:pw - 1] = True
    solved = poisson_blend(dest, src, mask, mixed=mixed).clamp(0, 1)
    out = images.clone()
    for i, (k, y0, x0, patch) in enumerate(pasted):
        ph, pw = patch.shape
        out[k, 0, y0 + 1:y0 + ph - 1, x0 + 1:x0 + pw - 1] = solved[i, 0, 1:ph - 1, 1:pw - 1]
    return out


def nsa_anomalies(
    images: Tensor, generator: torch.Generator, settings: NSASettings | None = None
) -> tuple[Tensor, Tensor]:
    """NSA training pairs for a batch of healthy slices (B, 1, H, W) in [0, 1]; returns (blended, target).

    For each slice, with its partner (:func:`partner_indices`) as the source, up to
    ``num_patches`` rounds (the first always, each further one with probability 1/2):

    1. a source box of Gamma-drawn half-widths whose area is more than ``min_object`` object
       (:func:`object_masks`), up to ``max_attempts`` tries; resized by ``U ~ N(1, 0.5)`` clipped to
       ``[resize_min, resize_max]``, aspect kept;
    2. a random destination where more than ``min_overlap`` of the patch's object lands on the
       destination's object;
    3. Poisson blending of the box (its outer pixel ring is the boundary) into the current slice,
       mixed gradients by default (:func:`poisson_blend`), clipped to [0, 1]; boxes with fewer than
       ``min_blend_pixels`` unknowns are skipped;
    4. the target is :func:`logistic_intensity_label` of the original and the blended slice, inside
       the union of the pasted boxes' object pixels (source or destination object).

    Random draws come from ``generator`` (a CPU generator); the solves run on the images' device.
    """
    s = settings or NSASettings()
    b, _, h, w = images.shape
    cpu = images.detach().float().cpu()
    partners = cpu[partner_indices(b, generator)]
    dest_obj, src_obj = object_masks(cpu, s.object_threshold)[:, 0], object_masks(partners, s.object_threshold)[:, 0]
    current = images.clone()
    region = torch.zeros(b, 1, h, w, dtype=torch.bool)
    for round_ in range(s.num_patches):
        pasted: list[tuple[int, int, int, Tensor]] = []  # (slice, top, left, patch)
        for k in range(b):
            if round_ > 0 and _randint(0, 2, generator) == 0:
                continue
            found = _source_patch(partners[k, 0], src_obj[k], s, generator)
            corner = _destination(found[1], dest_obj[k], s, generator) if found is not None else None
            if found is None or corner is None:
                continue
            patch, patch_obj = found
            (ph, pw), (y0, x0) = patch.shape, corner
            if (ph - 2) * (pw - 2) < s.min_blend_pixels:
                continue
            pasted.append((k, y0, x0, patch))
            region[k, 0, y0:y0 + ph, x0:x0 + pw] |= patch_obj | dest_obj[k, y0:y0 + ph, x0:x0 + pw]
        if pasted:
            current = _blend_boxes(current, pasted, mixed=s.mixed)
    target = logistic_intensity_label(images, current, region.to(images), tol=s.label_tol, k=s.logistic_k, x0=s.logistic_x0)
    return current, target
