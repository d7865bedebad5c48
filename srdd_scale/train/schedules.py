"""Learning-rate schedules as pure functions of the step, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

from srdd_scale.train.config import TrainConfig


def peak_lr(cfg: TrainConfig) -> float:
    """VAR's linear rule: base LR x global batch / 256 (docs/method.md §8.2)."""
    return cfg.base_lr * (cfg.global_batch_size / 256 if cfg.scale_lr_with_batch else 1.0)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """LR of optimizer step ``step`` (0-based) as a fraction of the peak.

    Linear warmup from ``warmup_start_factor`` (VAR's wp0), then one of: cosine to ``final_lr_factor``; VAR's
    ``lin0`` (docs/method.md §8.2; flat for ``lin0_flat_fraction`` of the remaining steps, then linear to
    ``final_lr_factor``); WSD (flat, then linear decay over the last ``wsd_decay_fraction`` of the run, the shape
    sweeps need to branch cooldowns off one long run); or constant.
    """
    total, warmup, final = cfg.total_steps, cfg.warmup_steps, cfg.final_lr_factor
    if step < warmup:
        return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * step / warmup
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.wsd_decay_fraction * total))
        decay_start = max(warmup, total - decay_steps)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, total - 1 - decay_start)
        return 1.0 - (1.0 - final) * min(1.0, progress)
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    if cfg.schedule == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # lin0
    if progress < cfg.lin0_flat_fraction:
        return 1.0
    decay_progress = (progress - cfg.lin0_flat_fraction) / (1.0 - cfg.lin0_flat_fraction)
    return 1.0 - (1.0 - final) * decay_progress


def lr_at(cfg: TrainConfig, step: int) -> float:
    return peak_lr(cfg) * lr_factor(cfg, step)
