"""Image quality: reconstruction vs input (SSIM, PSNR, l1) and the histogram entropy difference.

The paper reports SSIM, PSNR, LPIPS and l1 of reconstructions on the IXI test scans (Table 2 of
arXiv 2312.04215 v1, METHOD_SPEC §6.1); the reference code does not contain the SSIM/PSNR code, so
this uses scikit-image on the whole preprocessed volume with data range 1 (images are in [0, 1]).
LPIPS needs a pretrained 3D network and is not computed.

The contrast-shift experiment (METHOD_SPEC §5) compares 500-bin density histograms of input and
reconstruction by the difference of their "entropies" ``-Σ p log p`` with ``p`` the density
(count / total / bin width). The paper calls it KLD; it is not a KL divergence. It is reproduced
as written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from uadbench.errors import UadbenchError
from uadbench.evaluation.results import EvalVolume

HISTOGRAM_BINS = 500


def _pair(image: np.ndarray, reconstruction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(image, dtype=np.float64)
    r = np.asarray(reconstruction, dtype=np.float64)
    if x.shape != r.shape:
        raise UadbenchError(f"image shape {x.shape} differs from reconstruction shape {r.shape}")
    return x, r


def ssim(image: np.ndarray, reconstruction: np.ndarray, *, data_range: float = 1.0) -> float:
    """Structural similarity of the whole volume (scikit-image, uniform 7-voxel window)."""
    x, r = _pair(image, reconstruction)
    if min(x.shape) < 7:
        raise UadbenchError(f"SSIM needs every dimension >= 7 voxels, got shape {x.shape}")
    return float(structural_similarity(x, r, data_range=data_range))


def psnr(image: np.ndarray, reconstruction: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for a perfect reconstruction)."""
    x, r = _pair(image, reconstruction)
    if np.array_equal(x, r):
        return math.inf
    return float(peak_signal_noise_ratio(x, r, data_range=data_range))


def l1_error(image: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean absolute error over all voxels."""
    x, r = _pair(image, reconstruction)
    return float(np.mean(np.abs(x - r)))


def histogram_entropy(values: np.ndarray, *, bins: int = HISTOGRAM_BINS) -> float:
    """``-Σ p log p`` of the density histogram of ``values`` on [0, 1] (paper's formula)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return math.nan
    density, edges = np.histogram(v, bins=bins, range=(0.0, 1.0), density=True)
    p = density[density > 0]
    return float(-np.sum(p * np.log(p)))


def entropy_difference(
    image: np.ndarray,
    reconstruction: np.ndarray,
    region: np.ndarray | None = None,
    *,
    bins: int = HISTOGRAM_BINS,
) -> float:
    """Entropy of the input histogram minus that of the reconstruction, inside ``region``."""
    x, r = _pair(image, reconstruction)
    if region is not None:
        m = np.asarray(region, dtype=bool)
        x, r = x[m], r[m]
    return histogram_entropy(x, bins=bins) - histogram_entropy(r, bins=bins)


def reconstruction_quality(volumes: Iterable[EvalVolume]) -> dict[str, dict[str, float]]:
    """SSIM, PSNR and l1 of each volume's reconstruction: ``{subject: {metric: value}}``.

    Every volume needs ``image`` and ``reconstruction``. Use it on healthy test scans (the paper's
    Table 2); the mean over subjects is ``{m: mean(v[m] for v in result.values())}``.
    """
    out: dict[str, dict[str, float]] = {}
    for vol in volumes:
        if vol.image is None or vol.reconstruction is None:
            raise UadbenchError(
                f"volume {vol.subject_id!r} has no image or reconstruction; reconstruction "
                "quality needs both (methods without a reconstruction have none)"
            )
        out[vol.subject_id] = {
            "ssim": ssim(vol.image, vol.reconstruction),
            "psnr": psnr(vol.image, vol.reconstruction),
            "l1_recon": l1_error(vol.image, vol.reconstruction),
        }
    return out


__all__ = [
    "HISTOGRAM_BINS",
    "entropy_difference",
    "histogram_entropy",
    "l1_error",
    "psnr",
    "reconstruction_quality",
    "ssim",
]
