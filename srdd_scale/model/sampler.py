"""Scale-by-scale ancestral sampling (docs/method.md §6.1): one model call per scale, seeded, batched.

Under the `markovian` mask each call processes only the current scale's tokens (its input is the state
I_{k-1}, no KV cache); `markovian_prev` and `block_causal` keep the K/V of the scales they may see.
Classifier-free guidance runs conditional and unconditional rows as one doubled batch.
"""
from __future__ import annotations

from typing import Optional

import torch

from srdd_scale.model.config import SamplingConfig
from srdd_scale.model.transformer import Condition, SRDDTransformer


def guidance_weight(cfg: SamplingConfig, scale: int, num_scales: int) -> float:
    """t in (1+t)*cond - t*uncond: VAR's linear ramp 0 -> w over the scales (docs/method.md §6.2), or constant w."""
    if cfg.cfg_schedule == "constant" or num_scales == 1:
        return cfg.cfg_scale
    return cfg.cfg_scale * scale / (num_scales - 1)


def filter_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus); removed entries become -inf. logits: [..., V] float.

    With top-k on, top-p runs on the k survivors that topk already returns sorted, instead of sorting the
    whole vocabulary again (the same kept set, as long as no logit ties the k-th: ties beyond k are dropped).
    """
    logits = logits / cfg.temperature
    vocab = logits.shape[-1]
    top_k = cfg.top_k if 0 < cfg.top_k < vocab else 0
    if cfg.top_p >= 1.0:
        if top_k:
            kth = logits.topk(top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return logits
    sorted_logits, order = logits.topk(top_k, dim=-1) if top_k else logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # Drop a token once the more likely ones already cover top_p (the most likely is always kept).
    keep_sorted = probs.cumsum(-1) - probs <= cfg.top_p
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of probs [B, N, V] -> LongTensor [B, N]."""
    return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])


def draw_tokens(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    """Sample one scale's tokens from (guided) logits [B, N, V], with optional mask resampling.

    Mask resampling (docs/method.md §6.5, §9.10; this variant is chosen because it needs no extra forward
    pass and no input the model never saw in training): after the first draw, every token whose probability
    under the filtered distribution is below `p_resample` is redrawn from that same distribution, for
    `mr_steps` rounds; tokens still below the threshold after the last round keep their last draw. It
    biases each scale toward confident tokens, like a per-token rejection step.
    """
    probs = filter_logits(logits.float(), cfg).softmax(-1)
    tokens = _draw(probs, generator)
    for _ in range(cfg.mr_steps if cfg.resample == "mask" else 0):
        redo = probs.gather(-1, tokens[..., None])[..., 0] < cfg.p_resample
        if not bool(redo.any()):
            break
        tokens = torch.where(redo, _draw(probs, generator), tokens)
    return tokens


def guided_scale_logits(
    model: SRDDTransformer,
    scale: int,
    scale_input: Optional[torch.Tensor],
    cond: Condition,
    cache: list,
    weight: Optional[float],
) -> torch.Tensor:
    """Logits [B, p_k^2, V] of one scale; with a guidance weight the batch is [cond rows; uncond rows]."""
    logits = model.forward_scale(scale, scale_input, cond, cache).float()
    if weight is None:
        return logits
    cond_logits, uncond_logits = logits.chunk(2)
    return (1 + weight) * cond_logits - weight * uncond_logits


def own_draw_input(tokenizer, k: int, f_hat: Optional[torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """Scale k's input built from the state *after* its own draw: f_hat_{k-1} + scale k's codes, area-downsampled
    to scale k's grid, [B, p_k^2, C]. What a simple-resampling forward sees (docs/method.md §6.4)."""
    state, _ = tokenizer.next_scale_input(k, f_hat, tokens)
    p = tokens.shape[-1]
    return torch.nn.functional.interpolate(state, size=(p, p), mode="area").flatten(2).transpose(1, 2)


def simple_resample(model: SRDDTransformer, tokenizer, k: int, f_hat: Optional[torch.Tensor], tokens: torch.Tensor,
                    cond: Condition, cache: list, history: list, weight: Optional[float], cfg: SamplingConfig,
                    generator: torch.Generator) -> torch.Tensor:
    """Simple resampling of scale k >= 1 (docs/method.md §6.4): `sr_steps` times, run scale k again on the state
    that includes its latest draw and redraw the whole scale from the new distribution. The caches are put back
    to what the first (true-state) forward left, so later scales attend to the input they were trained on."""
    after_first = [kv.snapshot(newest=True) for kv in cache]
    for _ in range(cfg.sr_steps):
        scale_input = own_draw_input(tokenizer, k, f_hat, tokens)
        if weight is not None:
            scale_input = torch.cat([scale_input, scale_input])
        for kv, state in zip(cache, history):
            kv.restore(state)
        logits = guided_scale_logits(model, k, scale_input, cond, cache, weight)
        tokens = draw_tokens(logits, cfg, generator).view_as(tokens)
    for kv, state in zip(cache, after_first):
        kv.restore(state)
    return tokens


def check_schedule(model: SRDDTransformer, tokenizer) -> None:
    """The model's schedule/vocab/latent must be the tokenizer's (reduced schedules need a model built for them)."""
    mine = (tuple(model.patch_nums), model.vocab_size, model.latent_dim)
    theirs = (tuple(tokenizer.patch_nums), tokenizer.vocab_size, tokenizer.latent_dim)
    if mine != theirs:
        raise ValueError(
            f"model was built for patch_nums={list(mine[0])}, vocab_size={mine[1]}, latent_dim={mine[2]} but the "
            f"tokenizer has patch_nums={list(theirs[0])}, vocab_size={theirs[1]}, latent_dim={theirs[2]}; load the "
            f"tokenizer with the model's schedule (load_tokenizer(path, patch_nums=...)) or use a model trained on it"
        )


@torch.no_grad()
def sample(
    model: SRDDTransformer,
    tokenizer,
    *,
    text_states: Optional[torch.Tensor] = None,
    text_mask: Optional[torch.Tensor] = None,
    class_ids: Optional[torch.Tensor] = None,
    cfg: SamplingConfig,
    generator: torch.Generator,
    batch_size: Optional[int] = None,
    known_codes: Optional[list[torch.Tensor]] = None,
    known_masks: Optional[list[torch.Tensor]] = None,
) -> list[torch.Tensor]:
    """Per-scale token maps [B, p, p], coarse to fine; images via `tokenizer.decode`.

    `generator` must live on the model's device. `batch_size` is needed only when there is neither text nor
    class. `known_codes`/`known_masks` (per scale, [B, p, p]) teacher-force tokens where the mask is True:
    the zero-shot editing hook (editing.py).
    """
    cfg.validate()
    check_schedule(model, tokenizer)
    if batch_size is None:
        given = text_states if text_states is not None else class_ids
        if given is None:
            raise ValueError("sample() needs text_states, class_ids or batch_size to know how many images to draw")
        batch_size = given.shape[0]
    guided = cfg.cfg_scale > 0
    if guided:  # doubled batch: conditional rows, then the same rows with the condition dropped
        text_states, text_mask, class_ids = (None if t is None else torch.cat([t, t])
                                             for t in (text_states, text_mask, class_ids))
        rows = 2 * batch_size
        drop = torch.arange(rows, device=model.pos_embed.device) >= batch_size
    else:
        rows, drop = batch_size, torch.zeros(batch_size, dtype=torch.bool, device=model.pos_embed.device)

    was_training = model.training
    model.eval()
    try:
        cond = model.condition(text_states, text_mask, class_ids, drop, rows)
        cache = model.new_cache()
        f_hat, scale_input, out = None, None, []
        num_scales = len(model.patch_nums)
        for k, p in enumerate(model.patch_nums):
            weight = guidance_weight(cfg, k, num_scales) if guided else None
            resample = cfg.resample == "simple" and cfg.sr_steps and k > 0  # scale 0 has no state to condition on
            history = [kv.snapshot(newest=False) for kv in cache] if resample else None
            logits = guided_scale_logits(model, k, scale_input, cond, cache, weight)
            tokens = draw_tokens(logits, cfg, generator).view(batch_size, p, p)
            if resample:
                tokens = simple_resample(model, tokenizer, k, f_hat, tokens, cond, cache, history, weight, cfg,
                                         generator)
            if known_masks is not None:
                tokens = torch.where(known_masks[k].view_as(tokens), known_codes[k].view_as(tokens), tokens)
            out.append(tokens)
            f_hat, scale_input = tokenizer.next_scale_input(k, f_hat, tokens)
            if guided and scale_input is not None:
                scale_input = torch.cat([scale_input, scale_input])
    finally:
        model.train(was_training)
    return out
