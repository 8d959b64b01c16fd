"""ANTsPy images from (array, affine) pairs and back, and the one place that imports ``ants``.

uadbench keeps volumes as numpy arrays with a NIfTI affine (voxel -> world, RAS+ mm, as nibabel
reads them); ITK, and so ANTs, keeps an origin, a spacing and a direction cosine matrix in LPS+.
The two describe the same geometry: ``LPS = diag(-1, -1, 1) @ RAS``, and the array's axes keep
their order (``ants.from_numpy`` and ``ANTsImage.numpy()`` use ITK's index order, as nibabel).

ANTsPy is an optional dependency (``pip install 'uadbench[prepare]'``); importing this module
does not import it. :func:`require_ants` sets ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` unless it
is set: ITK reads it once per process, at its first filter, so registrations are repeatable only
where ANTs had not run before in the process with another thread count.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from uadbench.errors import UadbenchError

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
#: the random seed every registration runs with (with one thread, the result is then repeatable)
RANDOM_SEED = 20240406


def ants_available() -> bool:
    try:
        import ants  # noqa: F401
    except ImportError:
        return False
    return True


def require_ants(why: str) -> Any:
    """The ``ants`` module, or a one-line error saying how to install it and how to do without."""
    # one ITK thread: ANTs's random sampling is then repeatable bit for bit with a fixed seed
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    try:
        import ants
    except ImportError:
        raise UadbenchError(
            f"{why} needs ANTsPy, which is not installed: pip install 'uadbench[prepare]' (or antspyx>=0.4)"
        ) from None
    ants.config._random_seed = RANDOM_SEED  # passed to antsRegistration as --random-seed
    return ants


def version() -> str | None:
    """The installed antspyx version, or None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("antspyx")
    except PackageNotFoundError:
        return None


def to_ants(array: np.ndarray, affine: np.ndarray) -> Any:
    """An ANTsImage (float32) with ``array`` 's voxels at the world positions ``affine`` gives."""
    import ants

    affine = np.asarray(affine, dtype=np.float64)
    linear = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    origin = _RAS_TO_LPS @ affine[:3, 3]
    return ants.from_numpy(np.ascontiguousarray(array, dtype=np.float32), origin=tuple(float(v) for v in origin),
                           spacing=tuple(float(v) for v in spacing), direction=direction)


def from_ants(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of an ANTsImage (the inverse of :func:`to_ants`)."""
    direction = np.asarray(image.direction, dtype=np.float64).reshape(3, 3)
    linear = direction @ np.diag(np.asarray(image.spacing, dtype=np.float64))
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ linear
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(image.origin, dtype=np.float64)
    return np.asarray(image.numpy()), affine
