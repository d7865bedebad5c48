"""Expand a SweepConfig into concrete points: trainer overrides, steps, and the N / D / C each will reach.

Steps come from the same FLOP and parameter counters the trainer's MFU uses (srdd_scale.model.flops), so
an IsoFLOP point spends the compute it was planned for, up to rounding to whole steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from srdd_scale.config import ConfigError, load_config
from srdd_scale.model.flops import flops_per_image, parameter_counts
from srdd_scale.run_config import RunConfig
from srdd_scale.sweep.config import SweepConfig
from srdd_scale.text.config import TINY_T5

# N convention of every result and fit: the image transformer blocks without the text cross-attention,
# embeddings and head (VAR's 18*d*w^2-style count used for its scaling laws, docs/method.md §8.1).
PARAM_CONVENTION = "core"


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep, fully resolved before anything is launched."""

    name: str  # point id, also the run name and the folder under <sweep>/points/
    depth: int
    steps: int  # train.total_steps
    budget: float  # what was asked: tokens (grid) or FLOPs (isoflop)
    params: int  # N under PARAM_CONVENTION
    param_counts: tuple[tuple[str, int], ...]  # every group of parameter_counts, for the record
    tokens: float  # D = steps * global_batch_size * tokens_per_image
    flops: float  # C = steps * global_batch_size * training FLOPs per image
    train_configs: tuple[str, ...]
    overrides: tuple[str, ...]  # all trainer overrides of this point (shared first, the point's own last)
    mask: str = ""  # model.mask of an ablation point ("" : the trainer config's)
    seed: int = 0  # train.seed


def sweep_dir(sweep: SweepConfig) -> Path:
    return Path(sweep.output_dir) / sweep.name


def _format_budget(value: float) -> str:
    return f"{value:.2g}".replace("+", "")


def text_dim(cfg: RunConfig) -> int | None:
    """Width of the text states the model cross-attends to (None without text conditioning)."""
    if not cfg.model.cross_attn or cfg.text.encoder == "none":
        return None
    if cfg.text.encoder == TINY_T5:
        return cfg.text.d_model
    from srdd_scale.text import FrozenTextEncoder  # HF encoders: the width is only known from their config

    return FrozenTextEncoder(cfg.text).dim


def run_config(train_configs: tuple[str, ...], overrides: tuple[str, ...]) -> RunConfig:
    return load_config(list(train_configs), list(overrides), RunConfig)


def plan(sweep: SweepConfig) -> list[SweepPoint]:
    """Every point of the sweep, in launch order; raises ConfigError for a budget below ``min_steps`` steps."""
    sweep.validate()
    runs_dir = sweep_dir(sweep).resolve() / "runs"  # absolute: jobs may start in another working directory
    if sweep.mode == "grid":
        pairs = [(d, b, f"d{d}-D{_format_budget(b)}") for d in sweep.depths for b in sweep.tokens]
    else:
        pairs = [(d, b, f"C{_format_budget(b)}-d{d}") for b in sweep.flops for d in sweep.depths]
    # Ablations repeat each (depth, budget) pair per mask and seed, seeds innermost so that a partial sweep
    # has every mask at its first seed before any second seed.
    variants = [(m, s) for s in (sweep.seeds or (sweep.seed,)) for m in (sweep.masks or ("",))]
    pairs = [(d, b, name + (f"-{m}" if m else "") + (f"-s{s}" if sweep.seeds else ""), m, s)
             for d, b, name in pairs for m, s in variants]
    points = []
    for depth, budget, name, mask, seed in pairs:
        shared = (*sweep.train_overrides, *((f"model.mask={mask}",) if mask else ()), f"model.depth={depth}",
                  f"train.schedule={sweep.schedule}", f"train.seed={seed}", f"logging.output_dir={runs_dir}",
                  f"logging.run_name={name}")
        # Steps are not known yet: resolve once with warmup 0 to read the sizes the counters need.
        cfg = run_config(sweep.train_configs, (*shared, "train.warmup_steps=0"))
        patch_nums = tuple(cfg.tokenizer.patch_nums)
        counts = parameter_counts(cfg.model, patch_nums, cfg.tokenizer.vocab_size, cfg.tokenizer.latent_dim,
                                  text_dim(cfg))
        image_flops = flops_per_image(cfg.model, patch_nums, cfg.model.mask, cfg.text.max_length, training=True,
                                      vocab_size=cfg.tokenizer.vocab_size, latent_dim=cfg.tokenizer.latent_dim,
                                      text_dim=text_dim(cfg))
        batch = cfg.train.global_batch_size
        tokens_per_image = sum(p * p for p in patch_nums)
        per_step = batch * (tokens_per_image if sweep.mode == "grid" else image_flops)
        steps = round(budget / per_step)
        if steps < sweep.min_steps:
            kind = "tokens" if sweep.mode == "grid" else "flops"
            raise ConfigError(
                f"{kind}: budget {budget:.3g} gives {steps} steps for point {name} ({per_step:.3g} per step at "
                f"global_batch_size={batch}), expected >= min_steps={sweep.min_steps}; raise the budget"
            )
        warmup = max(1, round(sweep.warmup_fraction * steps))
        overrides = (*shared, f"train.total_steps={steps}", f"train.warmup_steps={warmup}")
        run_config(sweep.train_configs, overrides)  # fail at planning time, not inside a queued job
        points.append(SweepPoint(
            name=name, depth=depth, steps=steps, budget=float(budget), params=counts[PARAM_CONVENTION],
            param_counts=tuple(counts.items()), tokens=float(steps * batch * tokens_per_image),
            flops=float(steps * batch * image_flops), train_configs=tuple(sweep.train_configs), overrides=overrides,
            mask=cfg.model.mask, seed=seed,
        ))
    return points


def flops_per_step(point: SweepPoint) -> float:
    return point.flops / point.steps


def tokens_per_step(point: SweepPoint) -> float:
    return point.tokens / point.steps
