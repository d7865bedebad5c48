"""Zero-shot editing by teacher-forcing known tokens during sampling (docs/method.md §7, §9.12).

No fine-tuning: the image is tokenized at every scale and, while sampling, the tokens that the known pixels
determine replace the sampled ones before the state is updated, so the generated tokens stay consistent
with them at every finer scale.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from srdd_scale.model.config import SamplingConfig
from srdd_scale.model.sampler import check_schedule, sample
from srdd_scale.model.transformer import SRDDTransformer


def known_token_masks(known: torch.Tensor, patch_nums: tuple[int, ...]) -> list[torch.Tensor]:
    """Pixel mask [B, H, W] or [B, 1, H, W] (True = known) -> per-scale BoolTensor [B, p, p].

    A token is known when more than half of its cell's pixels are (area average > 0.5, VAR's threshold in
    its zero-shot demo). VAR also forces every token of scales with <= 3 tokens; we do not, so coarse
    tokens of a mostly unknown image are generated rather than copied from the hidden content.
    """
    if known.ndim == 3:
        known = known[:, None]
    if known.ndim != 4 or known.shape[1] != 1:
        raise ValueError(f"known mask must be [B, H, W] or [B, 1, H, W], got {tuple(known.shape)}")
    return [F.interpolate(known.float(), size=(p, p), mode="area")[:, 0] > 0.5 for p in patch_nums]


@torch.no_grad()
def inpaint(
    model: SRDDTransformer,
    tokenizer,
    images: torch.Tensor,
    known: torch.Tensor,
    *,
    text_states: Optional[torch.Tensor] = None,
    text_mask: Optional[torch.Tensor] = None,
    class_ids: Optional[torch.Tensor] = None,
    cfg: SamplingConfig,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Inpainting (known = everything but a hole) and outpainting (known = an inner region), one routine.

    images: [B, 3, H, W] in [-1, 1]; known: pixel mask, True where the image is kept. Returns per-scale
    codes in which every known token (known_token_masks) equals the image's own code.
    """
    check_schedule(model, tokenizer)
    codes = tokenizer.encode(images)
    return sample(
        model, tokenizer, text_states=text_states, text_mask=text_mask, class_ids=class_ids, cfg=cfg,
        generator=generator, batch_size=images.shape[0], known_codes=codes,
        known_masks=known_token_masks(known.to(images.device), model.patch_nums),
    )


def superres_forced_scales(low_res: int, image_size: int, patch_nums: tuple[int, ...]) -> int:
    """How many coarse scales a low_res x low_res image determines: those no finer than its latent grid."""
    latent_of_low_res = low_res * patch_nums[-1] / image_size
    return max(1, sum(p <= latent_of_low_res for p in patch_nums))


@torch.no_grad()
def superres(
    model: SRDDTransformer,
    tokenizer,
    low_res_images: torch.Tensor,
    *,
    forced_scales: Optional[int] = None,
    text_states: Optional[torch.Tensor] = None,
    text_mask: Optional[torch.Tensor] = None,
    class_ids: Optional[torch.Tensor] = None,
    cfg: SamplingConfig,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Super-resolution as reverse diffusion from a degraded state (docs/method.md §7.2): the low-resolution image,
    bicubically upsampled to the tokenizer's size and encoded, fixes the first `forced_scales` scales (default:
    the scales no finer than its own detail, superres_forced_scales); the finer scales are sampled.
    """
    check_schedule(model, tokenizer)
    size = tokenizer.image_size
    upsampled = F.interpolate(low_res_images, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    if forced_scales is None:
        forced_scales = superres_forced_scales(low_res_images.shape[-1], size, model.patch_nums)
    if not 1 <= forced_scales <= len(model.patch_nums):
        raise ValueError(f"forced_scales={forced_scales}: expected 1..{len(model.patch_nums)}")
    codes = tokenizer.encode(upsampled)
    masks = [torch.full_like(c, k < forced_scales, dtype=torch.bool) for k, c in enumerate(codes)]
    return sample(
        model, tokenizer, text_states=text_states, text_mask=text_mask, class_ids=class_ids, cfg=cfg,
        generator=generator, batch_size=low_res_images.shape[0], known_codes=codes, known_masks=masks,
    )
