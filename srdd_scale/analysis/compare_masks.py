"""SRDD vs VAR at small scale: the pure parts of tools/compare_masks.py (settings, overrides, curves, plot, table).

Every mask mode trains on the same shards with the same seed, batch, steps and LR; only `model.mask`
differs. Eval loss is the trainer's held-out loss (EvalLoss callback), plotted against optimizer steps and
against training FLOPs from `flops_per_image` (which counts only the attention pairs each mask allows,
so at equal steps the Markovian runs have spent fewer FLOPs).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from srdd_scale.config import ConfigError
from srdd_scale.model.config import MASK_MODES


@dataclass(frozen=True)
class CompareSettings:
    """One comparison: everything but the mask is shared by every run."""

    masks: tuple[str, ...] = MASK_MODES  # mask modes to train (docs/method.md §3)
    depth: int = 3  # transformer depth (width 64*depth)
    steps: int = 80  # optimizer steps per run
    global_batch_size: int = 16  # images per step
    lr: float = 1e-3  # peak LR (not rescaled with the batch)
    warmup_steps: int = 10  # linear warmup steps
    eval_every: int = 10  # held-out eval loss every N steps (and at the last step)
    eval_batches: int = 2  # held-out micro-batches per eval
    precision: str = "fp32"  # trainer autocast dtype (fp32 | bf16)
    seed: int = 0  # model init, data order, condition dropout and sampling
    train_samples: int = 2048  # synthetic shapes in the train split
    heldout_samples: int = 256  # synthetic shapes in the held-out split (attribute pairs unseen in train)
    prompts: int = 16  # held-out prompts sampled per model for prompt accuracy and sampling latency
    sample_batch: int = 8  # images per sampler call

    def validate(self) -> None:
        unknown = [m for m in self.masks if m not in MASK_MODES]
        if unknown or not self.masks:
            raise ConfigError(f"masks={list(self.masks)}: expected a non-empty subset of {', '.join(MASK_MODES)}")
        for key in ("depth", "steps", "global_batch_size", "eval_every", "eval_batches", "train_samples",
                    "heldout_samples", "prompts", "sample_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: expected a positive integer")
        if self.train_samples < self.global_batch_size:
            raise ConfigError(f"train_samples={self.train_samples}: expected >= global_batch_size="
                              f"{self.global_batch_size} (one full batch)")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision={self.precision!r}: expected 'fp32' or 'bf16'")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def tokenizer_overrides(folder: str | Path) -> list[str]:
    """`tokenizer.*=` overrides that describe a saved tokenizer folder, so RunConfig matches the checkpoint."""
    config_path = Path(folder) / "tokenizer_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; expected a tokenizer folder written by "
                                f"tools/train_tokenizer.py (OUTPUT/tokenizer)")
    fields = json.loads(config_path.read_text())["tokenizer"]
    overrides = [f"tokenizer.{k}={_yaml_scalar(v)}" for k, v in fields.items() if k != "checkpoint" and v is not None]
    return overrides + [f"tokenizer.checkpoint={Path(folder).resolve()}", f"data.image_size={fields['image_size']}"]


def train_overrides(s: CompareSettings, mask: str, data_dir: Path, text_model: Path, output_dir: Path) -> list[str]:
    """`key=value` overrides of one run (on top of tokenizer_overrides); only model.mask differs across runs."""
    values = {
        "data.train_path": data_dir / "train", "data.heldout_path": data_dir / "heldout", "data.num_workers": 0,
        "text.tokenizer": text_model,
        "model.depth": s.depth, "model.mask": mask,
        "train.seed": s.seed, "train.total_steps": s.steps, "train.global_batch_size": s.global_batch_size,
        "train.base_lr": s.lr, "train.scale_lr_with_batch": False, "train.warmup_steps": min(s.warmup_steps, s.steps),
        "train.precision": s.precision, "train.eval_every": s.eval_every, "train.eval_batches": s.eval_batches,
        "train.checkpoint_every": 0, "train.keep_last": 1,
        "logging.output_dir": output_dir, "logging.run_name": mask, "logging.log_every": s.eval_every,
        "logging.wandb_mode": "disabled", "logging.progress_bar": False,
    }
    return [f"{k}={_yaml_scalar(v)}" for k, v in values.items()]


def eval_curve(records: Sequence[dict], flops_per_image: float, global_batch_size: int) -> dict[str, list[float]]:
    """Held-out loss/accuracy per logged eval step, with the training FLOPs spent up to that step."""
    evals = [r for r in records if "eval/loss" in r]
    steps = [int(r["step"]) for r in evals]
    return {
        "step": steps,
        "flops": [step * global_batch_size * flops_per_image for step in steps],
        "eval_loss": [float(r["eval/loss"]) for r in evals],
        "eval_acc": [float(r.get("eval/acc", math.nan)) for r in evals],
        "train_loss": [float(r.get("loss", math.nan)) for r in evals],
    }


def plot_curves(results: dict[str, dict], path: str | Path, title: str) -> Path:
    """One PNG, two panels: held-out loss vs optimizer steps and vs training FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_flops) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mask, result in results.items():
        curve = result["curve"]
        by_step.plot(curve["step"], curve["eval_loss"], marker=".", label=mask)
        by_flops.plot([f / 1e12 for f in curve["flops"]], curve["eval_loss"], marker=".", label=mask)
    by_step.set(xlabel="optimizer step", ylabel="held-out loss (CE, nats/token)", title="vs steps")
    by_flops.set(xlabel="training TFLOPs (flops_per_image x images)", title="vs FLOPs")
    later = [loss for r in results.values() for loss in r["curve"]["eval_loss"][1:]]
    if later:  # the first eval (near ln(vocab)) would flatten every later difference: keep it off scale
        low, high = min(later), max(later)
        pad = 0.05 * (high - low) or 0.01
        for axis in (by_step, by_flops):
            axis.set_ylim(low - pad, high + pad)
        by_step.annotate("first eval off scale", xy=(0.98, 0.97), xycoords="axes fraction", ha="right", va="top",
                         fontsize=8, color="grey")
    for axis in (by_step, by_flops):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def summary_table(results: dict[str, dict]) -> str:
    """Markdown table: final held-out loss/acc, FLOPs, train time, prompt accuracy, sampling latency/memory."""
    lines = ["| mask | final eval loss | final eval acc | train GFLOP/img | train s | prompt acc colour | "
             "prompt acc shape | colour+shape | sample s/img | sample peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mask, r in results.items():
        curve, sampling = r["curve"], r.get("sampling") or {}
        accuracy = (sampling.get("prompt_accuracy") or {}).get("accuracy", {})
        joint = (sampling.get("prompt_accuracy") or {}).get("joint_colour_shape")
        lines.append(
            f"| {mask} | {_fmt(curve['eval_loss'][-1] if curve['eval_loss'] else None, '.4f')} | "
            f"{_fmt(curve['eval_acc'][-1] if curve['eval_acc'] else None, '.4f')} | "
            f"{_fmt(r['flops_per_image'] / 1e9, '.3f')} | {_fmt(r.get('train_seconds'), '.0f')} | "
            f"{_fmt(accuracy.get('colour'), '.2f')} | {_fmt(accuracy.get('shape'), '.2f')} | {_fmt(joint, '.2f')} | "
            f"{_fmt(sampling.get('seconds_per_image'), '.4f')} | {_fmt(sampling.get('peak_mib'), '.0f')} |")
    return "\n".join(lines)
