"""ADM-style denoising UNet (Dhariwal & Nichol 2021) as configured by Behrendt et al.

The network follows METHOD_SPEC.md §1.2 and §1.4 (cDDPM, arXiv 2312.04215; reference code
``src/models/modules/OpenAI_Unet.py`` of github.com/FinnBehrendt/Conditioned-Diffusion-Models-UAD):

* a 3x3 input convolution to ``base_channels``;
* per resolution level ``num_res_blocks`` residual blocks, then (except at the last level) a
  residual block that downsamples with 2x2 average pooling;
* a middle block ResBlock -> self-attention -> ResBlock (the only attention in the network);
* a mirrored decoder with ``num_res_blocks + 1`` blocks per level, each fed the matching skip
  feature map, ending each level but the last with a residual block that upsamples (nearest x2);
* GroupNorm -> SiLU -> zero-initialised 3x3 convolution to the output channels.

Every residual block is driven by an embedding through scale-shift normalisation (FiLM):
``h = GN(h) * (1 + gamma) + beta`` at its second normalisation. The embedding is the sinusoidal
time embedding passed through an MLP (``base_channels -> 4C -> 4C``), concatenated, when a
condition vector is given, with that vector passed through its own MLP (``cond_dim -> 4C -> 4C``),
so the conditional embedding has ``8C`` features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, ``[cos, sin]`` halves, (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (stable under mixed precision)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def _norm(channels: int, groups: int) -> GroupNorm32:
    # 32 groups as in ADM; tiny test networks with fewer channels use the largest divisor.
    return GroupNorm32(math.gcd(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with FiLM from the embedding and optional resampling of both branches."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        *,
        dropout: float = 0.0,
        up: bool = False,
        down: bool = False,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if up and down:
            raise ValueError("a residual block cannot both upsample and downsample")
        self.up, self.down = up, down
        self.in_norm = _norm(channels, norm_groups)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels)
        self.out_norm = _norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self._resample(h))
        x = self._resample(x)
        gamma, beta = self.emb_proj(F.silu(emb)).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + gamma) + beta
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over spatial positions with a zero-initialised output projection."""

    def __init__(self, channels: int, *, num_head_channels: int = 64, norm_groups: int = 32) -> None:
        super().__init__()
        if num_head_channels <= 0 or channels % num_head_channels:
            self.num_heads = 1  # narrow test networks: one head over all channels
        else:
            self.num_heads = channels // num_head_channels
        self.norm = _norm(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))  # (B, 3C, N)
        q, k, v = qkv.chunk(3, dim=1)  # split q/k/v first, then heads

        def heads(z: Tensor) -> Tensor:  # (B, C, N) -> (B, heads, N, C/heads)
            return z.reshape(b, self.num_heads, c // self.num_heads, h * w).transpose(-1, -2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        out = out.transpose(-1, -2).reshape(b, c, h * w)
        return x + self.proj_out(out).reshape(b, c, h, w)


class DiffusionUNet(nn.Module):
    """The denoiser ``f(x_t, t[, c]) -> x0_hat`` of DDPM, pDDPM and cDDPM.

    ``cond_dim=None`` builds the unconditioned network (time embedding only, ``4C`` features);
    an integer builds the conditioned one whose embedding is ``concat(time, label_emb(c))``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 3,
        num_head_channels: int = 64,
        dropout: float = 0.0,
        cond_dim: int | None = None,
        norm_groups: int = 32,
        max_period: float = 10000.0,
    ) -> None:
        super().__init__()
        if base_channels <= 0 or num_res_blocks <= 0 or not channel_mult:
            raise ValueError("base_channels and num_res_blocks must be positive, channel_mult non-empty")
        C = base_channels
        self.base_channels = C
        self.cond_dim = cond_dim
        self.max_period = max_period
        self.num_levels = len(channel_mult)
        self.time_embed = nn.Sequential(nn.Linear(C, 4 * C), nn.SiLU(), nn.Linear(4 * C, 4 * C))
        emb = 4 * C
        if cond_dim is not None:
            self.label_emb: nn.Sequential | None = nn.Sequential(nn.Linear(cond_dim, 4 * C), nn.SiLU(), nn.Linear(4 * C, 4 * C))
            emb = 8 * C
        else:
            self.label_emb = None

        # encoder: input conv, then residual blocks; remember every output's width for the skips
        self.input_conv = nn.Conv2d(in_channels, C, 3, padding=1)
        self.down_blocks = nn.ModuleList()
        skip_channels = [C]
        ch = C
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down_blocks.append(ResBlock(ch, emb, mult * C, dropout=dropout, norm_groups=norm_groups))
                ch = mult * C
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down_blocks.append(ResBlock(ch, emb, ch, down=True, dropout=dropout, norm_groups=norm_groups))
                skip_channels.append(ch)

        self.mid_block1 = ResBlock(ch, emb, ch, dropout=dropout, norm_groups=norm_groups)
        self.mid_attn = AttentionBlock(ch, num_head_channels=num_head_channels, norm_groups=norm_groups)
        self.mid_block2 = ResBlock(ch, emb, ch, dropout=dropout, norm_groups=norm_groups)

        # decoder: num_res_blocks + 1 blocks per level, each consuming one skip; upsample at the end
        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                self.up_blocks.append(ResBlock(ch + skip_channels.pop(), emb, mult * C, dropout=dropout, norm_groups=norm_groups))
                ch = mult * C
                if level and i == num_res_blocks:
                    self.upsamplers[str(len(self.up_blocks) - 1)] = ResBlock(ch, emb, ch, up=True, dropout=dropout, norm_groups=norm_groups)

        self.out_norm = _norm(ch, norm_groups)
        self.out_conv = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.num_levels - 1)

    def embed(self, t: Tensor, cond: Tensor | None) -> Tensor:
        emb = self.time_embed(timestep_embedding(t, self.base_channels, self.max_period))
        if self.label_emb is not None:
            if cond is None:
                raise ValueError("this UNet is conditioned: pass the condition vector")
            emb = torch.cat([emb, self.label_emb(cond.to(emb.dtype))], dim=1)
        elif cond is not None:
            raise ValueError("this UNet is unconditioned but a condition vector was passed")
        return emb

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {f}")
        emb = self.embed(t, cond)
        h = self.input_conv(x)
        skips = [h]
        for blk in self.down_blocks:
            h = blk(h, emb)
            skips.append(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)
        for i, blk in enumerate(self.up_blocks):
            h = blk(torch.cat([h, skips.pop()], dim=1), emb)
            up = self.upsamplers[str(i)] if str(i) in self.upsamplers else None
            if up is not None:
                h = up(h, emb)
        return self.out_conv(F.silu(self.out_norm(h)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
