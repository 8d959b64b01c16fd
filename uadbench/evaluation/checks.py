"""Input checks of the evaluation protocol: volumes, splits, and test/validation disjointness.

The protocol (:mod:`uadbench.evaluation.protocol`) checks each split exactly once per evaluation,
at its public entry points, and works on the checked copies afterwards. A checked volume holds
numpy arrays (float32 map, boolean masks, float32 image and reconstruction), except an anomaly map
that is a torch tensor on a non-CPU device: that one stays on its device, where post-processing
runs (:mod:`uadbench.evaluation.torch_postprocess`).

Every error names the split (``role``) and the subject, and says what is valid. Torch tensors
are handled through their own methods; this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np

from uadbench.errors import UadbenchError
from uadbench.evaluation.postprocess import PostprocessSettings
from uadbench.evaluation.results import EvalVolume

ORDERS = ("code", "paper")


def check_order(order: str) -> None:
    """The post-processing order must be ``"code"`` or ``"paper"``."""
    if order not in ORDERS:
        raise UadbenchError(
            f"unknown post-processing order {order!r}; valid: 'code' (erode then median, the "
            "reference implementation) or 'paper' (median then erode)"
        )


def check_n_bootstrap(n_bootstrap: int) -> None:
    if n_bootstrap < 0:
        raise UadbenchError(f"n_bootstrap must be >= 0, got {n_bootstrap}")


def is_device_tensor(x: Any) -> bool:
    """A torch tensor on a GPU (or other non-CPU device)."""
    device = getattr(x, "device", None)
    return hasattr(x, "detach") and getattr(device, "type", "cpu") != "cpu"


def to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array-like; torch tensors (CPU or GPU) are detached and copied to host."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_volume(vol: EvalVolume, role: str) -> EvalVolume:
    """Validate one volume; return it with numpy arrays (float32 map, bool masks)."""
    if not isinstance(vol, EvalVolume):
        raise UadbenchError(f"{role} must hold EvalVolume objects, got {type(vol).__name__}")
    sid = vol.subject_id
    if not isinstance(sid, str) or not sid:
        raise UadbenchError(f"{role} volume has an invalid subject_id {sid!r}; use a non-empty str")
    on_device = is_device_tensor(vol.anomaly_map)
    if on_device:  # keep it there: post-processing runs on the device
        amap = cast(Any, vol.anomaly_map).detach()  # a torch tensor, though EvalVolume annotates numpy
        amap = amap if amap.is_floating_point() else amap.float()
        shape = tuple(amap.shape)
        finite = bool(amap.isfinite().all())
        n_nan = int(amap.isnan().sum()) if not finite else 0
        n_inf = int(amap.isinf().sum()) if not finite else 0
        kind_ok = True
    else:
        amap = to_numpy(vol.anomaly_map)
        shape = amap.shape
        kind_ok = amap.dtype != bool and (
            np.issubdtype(amap.dtype, np.floating) or np.issubdtype(amap.dtype, np.integer)
        )
        finite = kind_ok and bool(np.all(np.isfinite(amap)))
        n_nan = int(np.count_nonzero(np.isnan(amap))) if kind_ok and not finite else 0
        n_inf = int(np.count_nonzero(np.isinf(amap))) if kind_ok and not finite else 0
    if len(shape) != 3:
        raise UadbenchError(
            f"{role} volume {sid!r}: anomaly map must be 3D (X, Y, Z), got shape {shape}"
        )
    if not kind_ok:
        raise UadbenchError(f"{role} volume {sid!r}: anomaly map must be real, got {amap.dtype}")
    if not finite:
        raise UadbenchError(
            f"{role} volume {sid!r}: anomaly map contains {n_nan} NaN and {n_inf} infinite "
            "values; a method must return finite scores for every voxel"
        )
    if vol.brain_mask is None:
        raise UadbenchError(f"{role} volume {sid!r}: brain_mask is required")
    arrays: dict[str, np.ndarray | None] = {}
    for name in ("brain_mask", "lesion_mask", "image", "reconstruction"):
        arr = getattr(vol, name)
        if arr is None:
            arrays[name] = None
            continue
        arr = to_numpy(arr)
        if arr.shape != shape:
            raise UadbenchError(
                f"{role} volume {sid!r}: {name} shape {arr.shape} differs from anomaly map "
                f"shape {shape}"
            )
        arrays[name] = arr > 0 if name.endswith("_mask") else arr.astype(np.float32, copy=False)
    PostprocessSettings.for_spacing(vol.spacing)  # raises on an invalid spacing
    return EvalVolume(
        subject_id=sid,
        anomaly_map=amap if on_device else amap.astype(np.float32, copy=False),
        brain_mask=arrays["brain_mask"],  # type: ignore[arg-type]
        lesion_mask=arrays["lesion_mask"],
        spacing=float(vol.spacing),
        image=arrays["image"],
        reconstruction=arrays["reconstruction"],
        affine=vol.affine,
    )


def check_split(volumes: Sequence[EvalVolume], role: str) -> list[EvalVolume]:
    """Check every volume of a split and that no subject appears twice; returns checked copies."""
    checked = [check_volume(vol, role) for vol in volumes]
    seen: set[str] = set()
    dupes: set[str] = set()
    for vol in checked:
        (dupes if vol.subject_id in seen else seen).add(vol.subject_id)
    if dupes:
        raise UadbenchError(f"{role} lists subject(s) more than once: {', '.join(sorted(dupes))}")
    return checked


def check_labelled(volumes: Sequence[EvalVolume], role: str) -> None:
    """Every volume of a split for Dice thresholds must carry a lesion mask."""
    for vol in volumes:
        if vol.lesion_mask is None:
            raise UadbenchError(
                f"{role} volume {vol.subject_id!r} has no lesion mask; the validation split for "
                "Dice thresholds must be labelled (pass healthy scans as healthy_val)"
            )


def check_validation_splits(
    lesion_val: Sequence[EvalVolume] | None, healthy_val: Sequence[EvalVolume] | None
) -> tuple[list[EvalVolume], list[EvalVolume]]:
    """Checked copies of the two validation splits (a missing split gives an empty list).

    ``lesion_val`` must be labelled; ``healthy_val`` may hold any scans (their lesion masks are
    not read).
    """
    lesion = check_split(lesion_val, "lesion_val") if lesion_val else []
    check_labelled(lesion, "lesion_val")
    healthy = check_split(healthy_val, "healthy_val") if healthy_val else []
    return lesion, healthy


def check_disjoint(test_ids: Iterable[str], other_ids: Iterable[str], role: str) -> None:
    """Refuse a validation split that shares subjects with the test split."""
    shared = sorted(set(test_ids) & set(other_ids))
    if shared:
        shown = ", ".join(shared[:10]) + (f" (+{len(shared) - 10} more)" if len(shared) > 10 else "")
        raise UadbenchError(
            f"{role} shares {len(shared)} subject(s) with the test split: {shown}; thresholds "
            "must come from subjects disjoint from the test subjects"
        )


__all__ = [
    "ORDERS",
    "check_disjoint",
    "check_labelled",
    "check_n_bootstrap",
    "check_order",
    "check_split",
    "check_validation_splits",
    "check_volume",
    "is_device_tensor",
    "to_numpy",
]
