"""CNN encoder/decoder of VAR's VQ-VAE family (docs/method.md §2.1).

Module and parameter names follow VAR's `basic_vae.py` on purpose: its released checkpoint
`vae_ch160v4096z32.pth` then loads into these modules key for key.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int) -> nn.Module:
    """VAR's GroupNorm; `groups=0` means no normalisation (TokenizerConfig.norm="none")."""
    if groups == 0:
        return nn.Identity()
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def norm_silu(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """silu(norm(x)), in place without autograd (encoding, decoding): at 256 px each activation is 160 MB, and a
    fresh output costs its page faults (out of place took 5x the time of in place in a VAR-size encode). Out of
    place when norm(x) shares x's storage (norm is Identity when the width has no groups) and when autograd
    needs norm(x)."""
    h = norm(x)
    shares_input = h.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    return F.silu(h, inplace=not shares_input and not torch.is_grad_enabled())


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice plus a (1x1 when widths differ) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_silu(self.norm1, x))
        h = self.conv2(norm_silu(self.norm2, h))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with one fused 1x1 qkv conv (VAR's key layout: `qkv`, `proj_out`)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        # (B, 3C, H, W) -> three (B, 1, HW, C) single-head sequences
        q, k, v = self.qkv(self.norm(x)).view(batch, 3, channels, height * width).transpose(2, 3).unbind(1)
        h = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(h.transpose(1, 2).reshape(batch, channels, height, width))


class Downsample2x(nn.Module):
    """Stride-2 3x3 conv after padding right/bottom only (VAR/LDM's asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: res blocks, attention after each block at the coarsest level, optional resampler."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module], resample_name: str, resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        self._resample_name = resample_name if resample is not None else None
        if resample is not None:
            self.add_module(resample_name, resample)

    @property
    def resample(self) -> nn.Module | None:
        return getattr(self, self._resample_name) if self._resample_name else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (B,3,H,W) -> latent (B,z,H/d,W/d) with d = 2**(len(ch_mult)-1)."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int, groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        last = len(ch_mult) - 1
        for level, mult in enumerate(ch_mult):
            block_out = ch * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if level == last:
                    attns.append(AttnBlock(block_in, groups))
            self.down.append(_Level(blocks, attns, "downsample", Downsample2x(block_in) if level != last else None))
        self.mid = _MidBlock(block_in, groups)
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if level.resample is not None:
                h = level.resample(h)
        h = self.mid(h)
        return self.conv_out(norm_silu(self.norm_out, h))


class Decoder(nn.Module):
    """Latent (B,z,h,w) -> image (B,3,h*d,w*d), unclamped."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int, groups: int):
        super().__init__()
        last = len(ch_mult) - 1
        block_in = ch * ch_mult[last]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _MidBlock(block_in, groups)
        levels: list[_Level] = []
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if level == last:
                    attns.append(AttnBlock(block_in, groups))
            levels.insert(0, _Level(blocks, attns, "upsample", Upsample2x(block_in) if level != 0 else None))
        # stored finest-first so that `up.{i}` names level i, as in VAR's checkpoints
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(norm_silu(self.norm_out, h))
