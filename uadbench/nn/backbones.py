"""Feature backbones for the feature-embedding methods (PatchCore, PaDiM): a timm network that maps a
1-channel slice to its mid-level feature maps, and the three ways its weights are set.

PatchCore (Roth et al., arXiv 2106.08265) and PaDiM (Defard et al., arXiv 2011.08785) read frozen
ImageNet features of a WideResNet-50 or ResNet-18. Nothing is downloaded here, so
``backbone_weights`` chooses where the weights come from (the choice and, for a file, its sha256
are config fields, hence part of the config hash and of the logged params):

- ``"self-supervised"``: the harness trains the backbone on the healthy training slices with the
  masked-image objective that pretrains cDDPM's encoder (:class:`~uadbench.nn.masked_image.MaskedImageModel`:
  the masked patches are those of the deepest feature map used, 65 % of them zeroed in the input,
  a light decoder from that map predicts the image, MSE on the masked patches, AdamW);
- ``"file"``: weights read from the file the user names (``weights``, a ``.safetensors`` file or a
  torch state dict read with ``weights_only=True``), refused unless its sha256 equals
  ``weights_sha256``; a 3-channel first convolution is summed over its input channels (timm's
  ``adapt_input_conv``), keys the backbone does not use (the classifier, deeper stages) are ignored;
- ``"random"``: timm's random initialisation, kept as it is (an explicit, labelled baseline).

Then (``adapt_batchnorm``, default on) the BatchNorm running statistics are re-estimated on healthy
training slices (AdaBN): the slices are in [0, 1] and one channel, not ImageNet-normalised RGB, and
masked-image pretraining saw masked inputs. The backbone is then frozen in eval mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uadbench.config import require_positive
from uadbench.errors import ConfigError
from uadbench.files import sha256_file
from uadbench.method import AnomalyOutput, FitContext, Method
from uadbench.nn.filters import gaussian_filter
from uadbench.nn.masked_image import MaskedImageModel
from uadbench.nn.utils import module_device
from uadbench.training import train_loop

BACKBONE_WEIGHTS = ("self-supervised", "file", "random")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BackboneConfig:
    """The backbone fields shared by the feature-embedding methods' configs."""

    backbone: str = "wide_resnet50_2"  # any timm model with features_only support
    backbone_weights: Literal["self-supervised", "file", "random"] = "self-supervised"
    weights: str = ""  # backbone_weights = "file": path of a .safetensors / torch state-dict file
    weights_sha256: str = ""  # its sha256 (64 hex digits), checked before loading
    input_scale: int = 1  # slices are upsampled (bilinear) by this factor before the backbone
    input_mean: float = 0.0  # (x - input_mean) / input_std before the backbone (ImageNet grey: 0.449 / 0.226)
    input_std: float = 1.0
    adapt_batchnorm: bool = True  # re-estimate BatchNorm statistics on healthy training slices
    adapt_slices: int = 512
    pretrain_steps: int = 2000  # backbone_weights = "self-supervised": masked-image steps
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 32
    pretrain_weight_decay: float = 0.05
    pretrain_mask_ratio: float = 0.65
    pretrain_decoder_width: int = 256

    def __post_init__(self) -> None:
        require_positive(self, "input_scale", "adapt_slices", "pretrain_decoder_width")
        if not self.input_std > 0:
            raise ConfigError(f"input_std must be > 0, got {self.input_std}")
        if not 0 < self.pretrain_mask_ratio < 1:
            raise ConfigError(f"pretrain_mask_ratio must lie in (0, 1), got {self.pretrain_mask_ratio}")
        if self.backbone_weights not in BACKBONE_WEIGHTS:
            raise ConfigError(f"backbone_weights must be one of {', '.join(BACKBONE_WEIGHTS)}, got {self.backbone_weights!r}")
        if self.backbone_weights == "file":
            if not self.weights:
                raise ConfigError('backbone_weights = "file" needs weights = "path/to/file.safetensors" and its weights_sha256')
            if not _SHA256.match(self.weights_sha256.lower()):
                raise ConfigError(
                    f"weights_sha256 must be the 64 hex digits of the weights file's sha256 (sha256sum FILE), got {self.weights_sha256!r}"
                )
        elif self.weights or self.weights_sha256:
            raise ConfigError(f'weights and weights_sha256 are read only with backbone_weights = "file", not {self.backbone_weights!r}')


def create_feature_backbone(name: str, layers: tuple[int, ...]) -> nn.Module:
    """A randomly initialised 1-channel timm backbone returning the feature maps ``layers``
    (timm ``out_indices``; for ResNets 1, 2, 3 are layer1, layer2, layer3 at strides 4, 8, 16)."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown timm backbone {name!r}{hint}; e.g. 'wide_resnet50_2' (the papers), 'resnet18'")
    try:
        return timm.create_model(name, pretrained=False, in_chans=1, features_only=True, out_indices=tuple(layers))
    except (IndexError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"timm backbone {name!r} cannot return the feature maps {tuple(layers)}: {exc}") from exc


def feature_channels(backbone: nn.Module) -> list[int]:
    """Channels of each returned feature map."""
    return list(backbone.feature_info.channels())  # type: ignore[union-attr,operator]


def prepare_input(images: Tensor, config: BackboneConfig) -> Tensor:
    """Slices (B, 1, H, W) in [0, 1] as the backbone reads them: upsampled by ``input_scale``, normalised."""
    x = images.float()
    if config.input_scale > 1:
        x = F.interpolate(x, scale_factor=config.input_scale, mode="bilinear", align_corners=False)
    return (x - config.input_mean) / config.input_std


def extract_features(backbone: nn.Module, images: Tensor, config: BackboneConfig) -> list[Tensor]:
    """The backbone's feature maps of ``images`` (no gradients; the backbone as it is, eval mode expected)."""
    with torch.no_grad():
        return list(backbone(prepare_input(images, config)))


def aggregate_patches(maps: list[Tensor], aggregation: int = 3, embed_dim: int = 0) -> Tensor:
    """Patch features (B, D, h, w) on the first map's grid: local averages, deeper maps upsampled, concatenated."""
    h, w = maps[0].shape[-2:]
    parts = []
    for m in maps:
        if aggregation > 1:
            m = F.avg_pool2d(m, aggregation, stride=1, padding=aggregation // 2)
        if m.shape[-2:] != (h, w):
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        parts.append(m)
    feats = torch.cat(parts, dim=1)
    if 0 < embed_dim < feats.shape[1]:
        b, d = feats.shape[:2]
        flat = feats.permute(0, 2, 3, 1).reshape(-1, 1, d)
        feats = F.adaptive_avg_pool1d(flat, embed_dim).reshape(b, h, w, embed_dim).permute(0, 3, 1, 2)
    return feats


def training_slices(train, count: int, generator: torch.Generator) -> Tensor:
    """``count`` healthy slices (N, 1, H, W): every slice when there are no more, else epochs of one
    random slice per volume."""
    if train.num_volumes * train.slices_per_volume <= count:
        return train.all_slices()
    return next(train.batches(count, generator))


# -- weights from a file ------------------------------------------------------------------------------------
def read_weights_file(path: str, sha256: str) -> dict[str, Tensor]:
    """The state dict in ``path`` after checking its sha256 (a one-line error on any mismatch)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"backbone weights file {str(file)!r} does not exist; weights must name a .safetensors or torch .pt/.pth file")
    actual = sha256_file(file)
    if actual != sha256.lower():
        raise ConfigError(
            f"backbone weights {str(file)!r} have sha256 {actual}, but weights_sha256 is {sha256}; name the right file or fix the digest"
        )
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: object = load_file(str(file))
    else:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(f"backbone weights {str(file)!r} do not load with torch.load(weights_only=True): {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values())):
        raise ConfigError(f"backbone weights {str(file)!r} hold no state dict of tensors (name -> tensor)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_backbone_state(backbone: nn.Module, state: dict[str, Tensor], source: str = "the weights") -> None:
    """Load ``state`` into ``backbone``: unused keys ignored, a 3-channel first conv summed to one channel;
    a missing key or a shape that cannot be adapted is refused, naming it."""
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(
            f"{source} lack {len(missing)} of the backbone's keys, e.g. {missing[0]!r}; they must be weights of the same timm model"
        )
    picked = {}
    for key, target in own.items():
        value = state[key]
        if value.shape != target.shape and value.dim() == 4 and target.shape[1] == 1 and value.shape[0] == target.shape[0]:
            value = timm.models.adapt_input_conv(1, value)
        if value.shape != target.shape:
            raise ConfigError(f"{source}: {key!r} has shape {tuple(value.shape)}, the backbone expects {tuple(target.shape)}")
        picked[key] = value
    backbone.load_state_dict(picked)


# -- self-supervised pretraining and BatchNorm adaptation --------------------------------------------------
class _DeepestMap(nn.Module):
    """The backbone seen as an encoder whose ``forward_features`` is its deepest returned map (for the
    masked-image model), reading [0, 1] slices as :func:`extract_features` does."""

    def __init__(self, backbone: nn.Module, config: BackboneConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config

    def forward_features(self, x: Tensor) -> Tensor:
        return cast(list[Tensor], self.backbone(prepare_input(x, self.config)))[-1]


def pretrain_backbone(backbone: nn.Module, config: BackboneConfig, train, ctx: FitContext) -> list[float]:
    """Masked-image pretraining of ``backbone`` in place on the healthy slices of ``train``.

    1. attach a light decoder to the deepest returned map (its stride sets the masked patch size);
    2. ``config.pretrain_steps`` AdamW steps (betas 0.9/0.95) of the MSE on the masked patches;
    3. keep the backbone, drop the decoder."""
    mim = MaskedImageModel(_DeepestMap(backbone, config), tuple(train.image_shape), config.pretrain_decoder_width)
    mim.to(ctx.device).train()
    params = [p for p in mim.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.pretrain_lr, betas=(0.9, 0.95), weight_decay=config.pretrain_weight_decay)
    return train_loop(
        parameters=params,
        loss_fn=lambda batch, step: mim.loss(batch, config.pretrain_mask_ratio, ctx.generator),
        train=train, ctx=ctx, steps=config.pretrain_steps, batch_size=config.pretrain_batch_size,
        lr=config.pretrain_lr, name="backbone", optimizer=opt, modules={"mim": mim},
    )


@torch.no_grad()
def adapt_batchnorm(backbone: nn.Module, config: BackboneConfig, train, ctx: FitContext, batch_size: int) -> None:
    """Re-estimate every BatchNorm's running mean and variance on ``config.adapt_slices`` healthy slices
    (drawn from ``train`` with ``ctx.generator``; a cumulative average, not a momentum one)."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    backbone.train()
    stream = train.batches(min(batch_size, config.adapt_slices), ctx.generator)
    seen = 0
    while seen < config.adapt_slices:
        batch = next(stream)[: config.adapt_slices - seen]
        backbone(prepare_input(batch.to(ctx.device), config))
        seen += batch.shape[0]
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    backbone.eval()


def fit_backbone(backbone: nn.Module, config: BackboneConfig, train, ctx: FitContext, batch_size: int = 32) -> None:
    """Set the backbone's weights as ``config.backbone_weights`` says, adapt its BatchNorm statistics
    (``adapt_batchnorm``), then freeze it in eval mode."""
    backbone.to(ctx.device)
    if config.backbone_weights == "file":
        load_backbone_state(backbone, read_weights_file(config.weights, config.weights_sha256), f"backbone weights {config.weights!r}")
        ctx.progress(f"backbone: weights read from {config.weights} (sha256 checked)")
    elif config.backbone_weights == "self-supervised" and config.pretrain_steps > 0:
        pretrain_backbone(backbone, config, train, ctx)
    if config.adapt_batchnorm:
        adapt_batchnorm(backbone, config, train, ctx, batch_size)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)


# -- the methods' shared part -------------------------------------------------------------------------------
class FeatureEmbeddingMethod(Method):
    """A method that models the patch features of a frozen backbone on healthy slices (PatchCore, PaDiM).

    Its Config holds the :class:`BackboneConfig` fields, ``layers`` (the feature maps read) and
    ``smooth_sigma`` (pixels). It owns ``self.backbone`` and the fitted tensors named in
    ``fitted_tensors`` (moved with :meth:`to`); subclasses fit their model of the features and turn
    patch-grid scores into the map with :meth:`anomaly_output`.
    """

    # attributes holding fitted tensors on the backbone's device (None before fit)
    fitted_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, *, image_shape: tuple[int, int]) -> None:
        super().__init__(config, image_shape=image_shape)
        self.backbone = create_feature_backbone(config.backbone, tuple(config.layers))

    def patch_features(self, images: Tensor, aggregation: int = 3, embed_dim: int = 0) -> Tensor:
        """Patch features (B, D, h, w) of slices (B, 1, H, W), on the backbone's device (:func:`aggregate_patches`)."""
        maps = extract_features(self.backbone, images.to(module_device(self.backbone)), self.config)
        return aggregate_patches(maps, aggregation, embed_dim)

    def anomaly_output(self, scores: Tensor, images: Tensor) -> AnomalyOutput:
        """The anomaly map of ``images`` from patch-grid scores (B, 1, h, w): upsampled bilinearly to the
        slices' grid, Gaussian-smoothed (``smooth_sigma`` pixels, in float64), in the images' device and dtype."""
        amap = F.interpolate(scores, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
        amap = gaussian_filter(amap.double(), self.config.smooth_sigma, dims=(2, 3))
        return AnomalyOutput(anomaly_map=amap.to(device=images.device, dtype=images.dtype))

    def load_backbone(self, state: dict[str, Tensor]) -> torch.device:
        """Load the backbone's saved weights, frozen in eval mode; returns its device."""
        self.backbone.load_state_dict(state)
        self.backbone.eval()
        return module_device(self.backbone)

    def to(self, device: torch.device | str) -> FeatureEmbeddingMethod:
        self.backbone.to(device)
        for name in self.fitted_tensors:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self
