"""The multi-scale VQ tokenizer: encoder -> residual quantizer -> decoder, with the API of docs/contracts.md."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import torch
from torch import nn

from srdd_scale.config import to_dict
from srdd_scale.tokenizer.backbone import Decoder, Encoder
from srdd_scale.tokenizer.config import TokenizerConfig, check_patch_nums
from srdd_scale.tokenizer.quantizer import MultiScaleResidualQuantizer, QuantizerOutput

# Buffers that hold training statistics, not weights: they never change the codes or the images.
TRAINING_STATE_KEYS = ("quantize.ema_vocab_hit_SV",)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """On CPU, convolutions in channels-last (NHWC), the layout oneDNN's kernels prefer: with the in-place SiLU of
    backbone.norm_silu a VAR-size encode (4 x 256 px, 2 threads) went from 6.26 to 4.98 s with the same codes
    (docs/benchmarks.md, VAR section). Not on CUDA, where GroupNorm hands back NCHW and the layouts would mix
    (unmeasured). Encoder and decoder outputs are made contiguous again, so nothing downstream sees the layout."""
    return t.contiguous(memory_format=torch.channels_last) if t.device.type == "cpu" else t


class MultiScaleVQTokenizer(nn.Module):
    """Images in [-1, 1] <-> VAR's pyramid of token maps (docs/method.md §2)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        arch = dict(ch=cfg.ch, ch_mult=tuple(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks,
                    z_channels=cfg.latent_dim, groups=cfg.norm_groups if cfg.norm == "group" else 0)
        self.encoder = Encoder(**arch)
        self.decoder = Decoder(**arch)
        self.quantize = MultiScaleResidualQuantizer(cfg.vocab_size, cfg.latent_dim, cfg.patch_nums, cfg.quant_resi,
                                                    cfg.share_quant_resi)
        self.quant_conv = nn.Conv2d(cfg.latent_dim, cfg.latent_dim, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(cfg.latent_dim, cfg.latent_dim, 3, padding=1)

    # ------------------------------------------------------------------ attributes of the contract
    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def tokens_per_image(self) -> int:
        return sum(p * p for p in self.patch_nums)

    def set_patch_nums(self, patch_nums: tuple[int, ...]) -> None:
        """Use another schedule over the same latent grid (e.g. a reduced one for scale distillation)."""
        patch_nums = tuple(patch_nums)
        check_patch_nums(patch_nums, self.config.latent_size, key="patch_nums")
        self.config = dataclasses.replace(self.config, patch_nums=patch_nums)
        self.quantize.set_patch_nums(patch_nums)

    def identity(self) -> str:
        """sha256 of the architecture/schedule and every weight: shards record it so training refuses foreign codes."""
        digest = hashlib.sha256()
        arch = {k: v for k, v in to_dict(self.config).items() if k != "checkpoint"}
        digest.update(json.dumps(arch, sort_keys=True).encode())
        for key, tensor in sorted(self.state_dict().items()):
            if key in TRAINING_STATE_KEYS:
                continue
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ checks
    def check_images(self, images: torch.Tensor) -> None:
        expected = (3, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"tokenizer expects images of shape (B, {', '.join(map(str, expected))}) "
                f"(tokenizer.image_size={self.image_size}), got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"tokenizer expects float images in [-1, 1], got dtype {images.dtype}")

    def check_indices(self, indices: list[torch.Tensor]) -> None:
        if len(indices) != len(self.patch_nums):
            raise ValueError(f"expected {len(self.patch_nums)} scales (patch_nums={list(self.patch_nums)}), "
                             f"got {len(indices)} index maps")
        for k, (idx, p) in enumerate(zip(indices, self.patch_nums)):
            if idx.ndim != 3 or tuple(idx.shape[1:]) != (p, p):
                raise ValueError(f"scale {k}: expected indices of shape (B, {p}, {p}), got {tuple(idx.shape)}")

    # ------------------------------------------------------------------ image <-> latent
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> continuous latent f (B, latent_dim, P, P) before quantization."""
        self.check_images(images)
        return self.quant_conv(self.encoder(_channels_last(images))).contiguous()

    def _decode_unclamped(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(_channels_last(f_hat))).contiguous()

    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Latent (B, latent_dim, P, P) -> images clamped to [-1, 1]."""
        return self._decode_unclamped(f_hat).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """Training pass: unclamped reconstruction and quantizer output.

        Gradients reach the encoder straight-through."""
        quantized = self.quantize.quantize(self.encode_latent(images))
        return self._decode_unclamped(quantized.f_hat), quantized

    # ------------------------------------------------------------------ tokens
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W) in [-1, 1] -> per-scale LongTensor (B, p, p), coarse to fine."""
        return self.quantize.quantize(self.encode_latent(images)).indices

    @torch.no_grad()
    def decode(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale indices -> images (B, 3, H, W) in [-1, 1]."""
        self.check_indices(indices)
        return self.decode_latent(self.quantize.f_hat_from_indices(indices))

    def teacher_forcing_inputs(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """(B, L - p0^2, latent_dim): the transformer's inputs, from indices alone (codebook + Phi only)."""
        self.check_indices(indices)
        return self.quantize.teacher_forcing_inputs(indices)

    def next_scale_input(self, k: int, f_hat: torch.Tensor | None, indices_k: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sampler step: add scale k to f_hat (None = start from zero); next scale's input or None after the last."""
        if not 0 <= k < len(self.patch_nums):
            raise ValueError(f"scale index k={k} out of range for patch_nums={list(self.patch_nums)}")
        return self.quantize.next_scale_input(k, f_hat, indices_k)


def flatten_codes(indices: list[torch.Tensor]) -> torch.Tensor:
    """Per-scale (B, p, p) maps -> (B, L) row-major, coarse to fine (the MDS `codes` layout)."""
    return torch.cat([idx.flatten(1) for idx in indices], dim=1)


def split_codes(flat: torch.Tensor, patch_nums: tuple[int, ...]) -> list[torch.Tensor]:
    """Inverse of flatten_codes: (B, L) -> per-scale (B, p, p)."""
    expected = sum(p * p for p in patch_nums)
    if flat.ndim != 2 or flat.shape[1] != expected:
        raise ValueError(f"expected codes of shape (B, {expected}) for patch_nums={list(patch_nums)}, "
                         f"got {tuple(flat.shape)}")
    sizes = [p * p for p in patch_nums]
    return [chunk.reshape(flat.shape[0], p, p) for chunk, p in zip(flat.split(sizes, dim=1), patch_nums)]


