"""Which scales each scale may attend to, as one rule shared by training masks, KV caches and FLOP counts.

docs/method.md §3 and §9.1 choices made here:
* ``markovian`` (default) is the **block-diagonal** mask: a scale attends bidirectionally to its own tokens
  only. Its tokens already hold the state I_{k-1} (the running reconstruction of the coarser scales), so
  scale k's prediction is exactly f(I_{k-1}, k, y): no history, no KV cache, each scale an independent
  sequence (one SDPA call per scale, no mask tensor, so flash kernels apply; first_key_scales gives every
  mask such calls, over the scales each scale may see).
* The start token(s) (scale 0, p0^2 positions built from the condition) are **not** visible to later scales
  under ``markovian``: the condition y already reaches every scale through AdaLN (pooled text / class) and
  text cross-attention, so the start token would only duplicate it and would break the per-scale
  independence. Scale 0 stays "start token only", as in VAR.
* ``markovian_prev`` (block-bidiagonal) additionally sees the previous scale (so scale 1 sees the start token).
* ``block_causal`` is VAR's mask: every coarser scale plus its own.
"""
from __future__ import annotations

import torch

from .config import MASK_MODES


def history_scales(mode: str) -> int | None:
    """How many previous scales a query may see: 0 (markovian), 1 (markovian_prev) or None (all: block_causal)."""
    if mode not in MASK_MODES:
        raise ValueError(f"unknown attention mask mode {mode!r}; expected one of {', '.join(MASK_MODES)}")
    return {"markovian": 0, "markovian_prev": 1, "block_causal": None}[mode]


def scale_index(patch_nums: tuple[int, ...]) -> torch.Tensor:
    """LongTensor[L]: the scale (level) of every token, coarse to fine, row-major within a scale."""
    return torch.cat([torch.full((p * p,), k, dtype=torch.long) for k, p in enumerate(patch_nums)])


def attention_allowed(patch_nums: tuple[int, ...], mode: str) -> torch.Tensor:
    """BoolTensor[L, L]: True where query i may attend to key j (the SDPA boolean-mask convention)."""
    hist = history_scales(mode)
    level = scale_index(patch_nums)
    q_level, k_level = level[:, None], level[None, :]
    allowed = k_level <= q_level
    if hist is not None:
        allowed &= q_level - k_level <= hist
    return allowed


def first_key_scales(patch_nums: tuple[int, ...], mode: str) -> tuple[int, ...]:
    """Per scale, the oldest scale its queries may see: under every mode a scale attends to the scales from that
    one through its own, all of their tokens and nothing masked inside them. One unmasked attention call per
    scale over those keys does exactly the allowed pairs (attention_pairs) with no mask tensor, where one
    masked call over all L keys computes L^2 scores."""
    hist = history_scales(mode)
    return tuple(0 if hist is None else max(0, k - hist) for k in range(len(patch_nums)))


def attention_pairs(patch_nums: tuple[int, ...], mode: str) -> int:
    """Number of (query, key) self-attention score pairs per image and layer under `mode` (for FLOP counts)."""
    sizes = [p * p for p in patch_nums]
    firsts = first_key_scales(patch_nums, mode)
    return sum(n * sum(sizes[first : k + 1]) for k, (n, first) in enumerate(zip(sizes, firsts)))


def flex_block_mask(patch_nums: tuple[int, ...], mode: str, device: torch.device):
    """FlexAttention BlockMask of attention_allowed(patch_nums, mode), for one forward of the whole schedule.

    Built once per schedule and device (the transformer caches it): blocks of keys no query of a block may
    see are skipped, so block-diagonal (markovian) attention costs about its sum of p_k^4 score pairs.
    """
    from torch.nn.attention.flex_attention import create_block_mask  # noqa: PLC0415 (torch >= 2.5 only here)

    hist = history_scales(mode)
    level = scale_index(patch_nums).to(device)

    def allowed(batch, head, q_idx, kv_idx):
        visible = level[kv_idx] <= level[q_idx]
        if hist is not None:
            visible = visible & (level[q_idx] - level[kv_idx] <= hist)
        return visible

    length = level.numel()
    return create_block_mask(allowed, None, None, length, length, device=device)
