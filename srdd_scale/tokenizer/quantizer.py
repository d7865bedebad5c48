"""VAR's multi-scale residual quantizer (docs/method.md §2.1 and §2.2).

For each scale k (coarse to fine): area-downsample the residual to p_k x p_k, take the nearest
codebook entry (L2), embed, bicubic-upsample back to the latent grid, refine with a Phi conv,
add to the running reconstruction f_hat and subtract from the residual. The last scale is the
latent grid itself, so it skips both interpolations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def phi_index(num_phi: int, scale_index: int, num_scales: int) -> int:
    """Which of `num_phi` shared Phi convs scale `scale_index` of `num_scales` uses (VAR's tick rule).

    The Phis sit at evenly spaced "ticks" in [0, 1] (pulled in by 1/(3K) for K == 4, by 1/(2K)
    otherwise, as in VAR); a scale at relative depth k/(K_scales-1) uses the nearest tick, the
    first one on ties.
    """
    margin = 1 / 3 / num_phi if num_phi == 4 else 1 / 2 / num_phi
    ticks = np.linspace(margin, 1 - margin, num_phi)
    at = scale_index / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(ticks - at)))


class Phi(nn.Conv2d):
    """Phi(h) = (1 - r) * h + r * conv3x3(h): a light refinement of each upsampled scale."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


class PhiBank(nn.Module):
    """The `share_quant_resi` Phi convs; held as `qresi_ls` to match VAR's checkpoint keys."""

    def __init__(self, channels: int, ratio: float, count: int):
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(channels, ratio) for _ in range(count))

    def for_scale(self, scale_index: int, num_scales: int) -> Phi:
        return self.qresi_ls[phi_index(len(self.qresi_ls), scale_index, num_scales)]


def nearest_code(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the L2-nearest codebook row for each row of `vectors` (N, C) -> (N,).

    |z|^2 + |e|^2 - 2 z.e is evaluated in the same order as VAR so that near-ties resolve the
    same way and a VAR checkpoint gives VAR's codes.
    """
    distances = vectors.square().sum(dim=1, keepdim=True) + codebook.square().sum(dim=1)
    distances.addmm_(vectors, codebook.T, alpha=-2, beta=1)
    return distances.argmin(dim=1)


@dataclass
class QuantizerOutput:
    """Everything one residual-quantization pass produces."""

    indices: list[torch.Tensor]  # per scale, LongTensor (B, p, p), coarse to fine
    contributions: list[torch.Tensor]  # per scale, Phi(upsample(embed(indices))) on the latent grid
    f_hat: torch.Tensor  # sum of the contributions (B, C, P, P); straight-through to f in training
    vq_loss: torch.Tensor  # mean over scales of commitment + codebook MSE (0-dim)
    queries: torch.Tensor  # every vector that was quantized, detached (N, C): samples for dead-code re-init


class MultiScaleResidualQuantizer(nn.Module):
    """Codebook + Phi convs + the residual pyramid; knows the current `patch_nums` schedule."""

    def __init__(self, vocab_size: int, latent_dim: int, patch_nums: tuple[int, ...], quant_resi: float,
                 share_quant_resi: int, beta: float = 0.25):
        super().__init__()
        self.vocab_size = vocab_size
        self.latent_dim = latent_dim
        self.beta = beta
        self.embedding = nn.Embedding(vocab_size, latent_dim)
        self.quant_resi = PhiBank(latent_dim, quant_resi, share_quant_resi)
        self.patch_nums = tuple(patch_nums)
        # VAR keeps an EMA of per-scale code hits in the checkpoint; we use it for dead-code detection.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))

    def set_patch_nums(self, patch_nums: tuple[int, ...]) -> None:
        """Switch the schedule (e.g. a reduced one for distillation); resets the usage EMA if its shape changes."""
        self.patch_nums = tuple(patch_nums)
        if self.ema_vocab_hit_SV.shape[0] != len(self.patch_nums):
            self.ema_vocab_hit_SV = self.ema_vocab_hit_SV.new_zeros(len(self.patch_nums), self.vocab_size)

    @property
    def latent_size(self) -> int:
        return self.patch_nums[-1]

    def lift(self, embedded: torch.Tensor, scale_index: int) -> torch.Tensor:
        """Scale k's embedded map (B, C, p, p) -> its contribution to f_hat on the latent grid."""
        num_scales = len(self.patch_nums)
        if scale_index != num_scales - 1:
            embedded = F.interpolate(embedded, size=(self.latent_size, self.latent_size), mode="bicubic")
        return self.quant_resi.for_scale(scale_index, num_scales)(embedded)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, p, p) codes -> (B, C, p, p) codebook vectors."""
        return self.embedding(indices).permute(0, 3, 1, 2)

    def quantize(self, f: torch.Tensor) -> QuantizerOutput:
        """Residual-quantize the latent f (B, C, P, P).

        Gradients: codebook via the MSE, encoder via straight-through."""
        with torch.autocast(f.device.type, enabled=False):  # nearest-code search and Phi stay fp32, as in VAR
            return self._quantize(f.float())

    def _quantize(self, f: torch.Tensor) -> QuantizerOutput:
        batch, channels, height, width = f.shape
        f_no_grad = f.detach()
        rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_no_grad)
        codebook = self.embedding.weight.detach()
        indices, contributions, queries = [], [], []
        vq_loss = f.new_zeros(())
        last = len(self.patch_nums) - 1
        for scale_index, p in enumerate(self.patch_nums):
            target = rest if scale_index == last else F.interpolate(rest, size=(p, p), mode="area")
            target_nc = target.permute(0, 2, 3, 1).reshape(-1, channels)
            idx = nearest_code(target_nc, codebook).view(batch, p, p)
            contribution = self.lift(self.embed(idx), scale_index)
            f_hat = f_hat + contribution
            rest = rest - contribution.detach()
            # commitment (encoder -> f_hat) weighted by beta, plus codebook/Phi (f_hat -> encoder)
            vq_loss = vq_loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_no_grad)
            indices.append(idx)
            contributions.append(contribution)
            queries.append(target_nc)
        straight_through = (f_hat.detach() - f_no_grad) + f  # value f_hat, gradient identity to f
        return QuantizerOutput(indices, contributions, straight_through, vq_loss / len(self.patch_nums),
                               torch.cat(queries))

    def contributions_from_indices(self, indices: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.lift(self.embed(idx), k) for k, idx in enumerate(indices)]

    def f_hat_from_indices(self, indices: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(self.contributions_from_indices(indices)).sum(dim=0)

    def teacher_forcing_inputs(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """(B, L - p0^2, C): for each scale k >= 1, f_hat of scales < k area-downsampled to p_k.

        VAR's idxBl_to_var_input."""
        batch = indices[0].shape[0]
        size = self.latent_size
        f_hat = torch.zeros(batch, self.latent_dim, size, size, device=indices[0].device)
        inputs = []
        for k in range(1, len(self.patch_nums)):
            f_hat = f_hat + self.lift(self.embed(indices[k - 1]), k - 1)
            p = self.patch_nums[k]
            inputs.append(F.interpolate(f_hat, size=(p, p), mode="area").flatten(2).transpose(1, 2))
        if not inputs:
            return f_hat.new_zeros(batch, 0, self.latent_dim)
        return torch.cat(inputs, dim=1)

    def next_scale_input(self, k: int, f_hat: torch.Tensor | None, indices_k: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale k's codes to f_hat; return (f_hat, input for scale k+1 as (B, p_{k+1}^2, C) or None)."""
        contribution = self.lift(self.embed(indices_k), k)
        f_hat = contribution if f_hat is None else f_hat + contribution
        if k == len(self.patch_nums) - 1:
            return f_hat, None
        p = self.patch_nums[k + 1]
        return f_hat, F.interpolate(f_hat, size=(p, p), mode="area").flatten(2).transpose(1, 2)
