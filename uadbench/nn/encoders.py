"""Condition encoders: any timm backbone mapping a 1-channel slice to a context vector.

cDDPM (Behrendt et al., arXiv 2312.04215, METHOD_SPEC.md §1.3) encodes the clean slice with a
ResNet-50 built by ``timm.create_model('resnet50', in_chans=1, num_classes=cond_dim,
drop_path_rate=0.05, pretrained=False)``: global average pooling, then a linear layer to the
context size. Weights are never downloaded; a backbone is selected by its timm name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import timm
import torch
from torch import Tensor, nn

from uadbench.errors import ConfigError


def create_condition_encoder(
    name: str = "resnet50",
    *,
    cond_dim: int = 512,
    in_chans: int = 1,
    drop_path_rate: float = 0.05,
) -> nn.Module:
    """A randomly initialised timm backbone ``(B, in_chans, H, W) -> (B, cond_dim)``."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ConfigError(
            f"unknown timm encoder {name!r}{hint}; any name from timm.list_models() is valid, "
            "e.g. 'resnet50' (the paper) or 'resnet18'"
        )
    if cond_dim <= 0:
        raise ConfigError(f"cond_dim must be a positive integer, got {cond_dim}")
    return timm.create_model(
        name, pretrained=False, in_chans=in_chans, num_classes=cond_dim, drop_path_rate=drop_path_rate
    )


def encoder_feature_maps(encoder: nn.Module, x: Tensor) -> Tensor:
    """The backbone's last spatial feature map (before pooling and the classifier head)."""
    # timm backbones define forward_features; nn.Module's __getattr__ types it as Tensor | Module
    forward_features = cast(Callable[[Tensor], Tensor], encoder.forward_features)
    return forward_features(x)


def classifier_head_names(encoder: nn.Module) -> set[str]:
    """Parameter names of the final classifier (dropped when loading pretrained encoder weights)."""
    get_classifier = cast(Callable[[], nn.Module], encoder.get_classifier)  # a timm backbone's method
    head = get_classifier()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in encoder.named_parameters() if id(p) in ids}


@torch.no_grad()
def encoder_output_stride(encoder: nn.Module, image_size: int = 64) -> int:
    """How many input pixels one cell of the final feature map spans (32 for ResNets)."""
    was_training = encoder.training
    encoder.eval()
    try:
        feats = encoder_feature_maps(encoder, torch.zeros(1, 1, image_size, image_size))
    finally:
        encoder.train(was_training)
    return image_size // int(feats.shape[-1])
