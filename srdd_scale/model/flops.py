"""Parameter and FLOP counts from the config alone (no instantiation: d30/d36 sizes are cheap to ask for).

The parameter groups mirror SRDDTransformer.parameter_groups() exactly (a test checks this), so scaling-law
fits can use the VAR convention: `core` (the image transformer blocks without text parts, VAR's 18*d*w^2),
`text` (projection, pooling and cross-attention), `embeddings`, `head`.
"""
from __future__ import annotations

from srdd_scale.model.config import ModelConfig
from srdd_scale.model.masks import attention_pairs


def _has_text(cfg: ModelConfig, text_dim: int | None) -> bool:
    return cfg.cross_attn and text_dim is not None


def parameter_counts(
    cfg: ModelConfig,
    patch_nums: tuple[int, ...],
    vocab_size: int = 4096,
    latent_dim: int = 32,
    text_dim: int | None = None,
) -> dict[str, int]:
    """Parameter counts by group: core, text, embeddings, head, total."""
    cfg.validate()
    dim, heads, depth = cfg.embed_dim, cfg.heads, cfg.depth
    hidden = round(dim * cfg.mlp_ratio)
    num_scales, seq_len = len(patch_nums), sum(p * p for p in patch_nums)
    attn = 3 * dim * dim + 2 * dim + heads + dim * dim + dim  # qkv, q/v bias, temperature, proj
    ffn = dim * hidden + hidden + hidden * dim + dim
    ada = dim * 6 * dim + 6 * dim
    core = depth * (attn + ffn + ada)
    text = 0
    if _has_text(cfg, text_dim):
        cross = 2 * dim + heads + (dim * dim + dim) + (dim * dim + dim) + 2 * dim * dim + dim  # norm, temp, proj, q, kv
        text = depth * cross + 2 * text_dim + 2 * (text_dim * dim + dim) + dim  # + text norm, proj, pool, null token
    embeddings = (latent_dim * dim + dim) + patch_nums[0] ** 2 * dim + seq_len * dim + num_scales * dim + dim
    if cfg.scale_cond:
        embeddings += num_scales * dim
    if cfg.num_classes > 0:
        embeddings += (cfg.num_classes + 1) * dim
    head = dim * 2 * dim + 2 * dim + dim * vocab_size + vocab_size
    counts = {"core": core, "text": text, "embeddings": embeddings, "head": head}
    counts["total"] = sum(counts.values())
    return counts


def flops_per_image(
    cfg: ModelConfig,
    patch_nums: tuple[int, ...],
    mask_mode: str,
    text_len: int,
    training: bool = True,
    vocab_size: int = 4096,
    latent_dim: int = 32,
    text_dim: int | None = None,
    pairs: int | None = None,
) -> float:
    """Model FLOPs for one image: forward (x1) or forward+backward (x3), 2 FLOPs per multiply-add.

    Self-attention counts only the (query, key) pairs the mask allows (masks.attention_pairs), i.e. the
    useful work; a dense kernel with a boolean mask executes L^2 pairs regardless. Sampling with a KV
    cache (block_causal) or per-scale calls (markovian) does the same pairs as the masked training forward.
    Cross-attention counts every image token against text_len tokens plus the learned null token. The
    frozen text encoder is not counted; its projection into the model is (text_dim defaults to the width).
    `pairs` overrides the pairs per layer with those a kernel executes (e.g. L^2 for a dense masked kernel).
    """
    cfg.validate()
    dim, depth = cfg.embed_dim, cfg.depth
    hidden = round(dim * cfg.mlp_ratio)
    seq_len = sum(p * p for p in patch_nums)
    ada_rows = len(patch_nums) if cfg.scale_cond else 1
    pairs = attention_pairs(tuple(patch_nums), mask_mode) if pairs is None else pairs

    per_block = seq_len * (4 * dim * dim + 2 * dim * hidden) + 2 * pairs * dim + ada_rows * 6 * dim * dim
    macs = depth * per_block
    if cfg.cross_attn:
        text_dim = text_dim or dim
        ctx_len = text_len + 1
        cross = seq_len * 2 * dim * dim + ctx_len * 2 * dim * dim + 2 * seq_len * ctx_len * dim
        macs += depth * cross + text_dim * dim * (text_len + 1)  # + token projection and pooled projection
    macs += (seq_len - patch_nums[0] ** 2) * latent_dim * dim  # word_embed
    macs += seq_len * dim * vocab_size + ada_rows * 2 * dim * dim  # head
    return float(2 * macs * (3 if training else 1))
