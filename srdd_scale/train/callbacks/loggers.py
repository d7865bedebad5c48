"""Where metrics go: the console, ``metrics.jsonl`` in the run dir, and wandb (rank 0 only)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from srdd_scale.config import to_dict
from srdd_scale.train.callbacks.base import Callback, StepReport
from srdd_scale.train.state import TrainState
from srdd_scale.utils.logging import get_logger

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl, in order."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class MetricsFileLogger(Callback):
    """One JSON line per logged step; on resume, lines past the resumed step (from the lost run) are dropped."""

    def on_train_start(self, state: TrainState) -> None:
        self.path = state.run_dir / METRICS_FILE
        if state.env.is_main and self.path.exists():
            kept = [r for r in read_metrics(state.run_dir) if r.get("step", 0) <= state.step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def on_step_end(self, state: TrainState, report: StepReport) -> None:
        if state.env.is_main and report.log:
            record = {"step": report.step, **report.metrics, **{f"media/{k}": v for k, v in report.media.items()}}
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


class ConsoleLogger(Callback):
    def on_step_end(self, state: TrainState, report: StepReport) -> None:
        if not (state.env.is_main and report.log):
            return
        m = report.metrics
        parts = [f"step {report.step}/{state.cfg.train.total_steps}", f"loss {m['loss']:.4f}",
                 f"acc {m.get('acc/mean', math.nan):.3f}", f"lr {m['lr']:.2e}", f"gnorm {m['grad_norm']:.3f}"]
        if "perf/tokens_per_s" in m:
            parts += [f"tok/s {m['perf/tokens_per_s']:.0f}", f"mfu {m['perf/mfu']:.2%}"]
        if "eval/loss" in m:
            parts.append(f"eval {m['eval/loss']:.4f}")
        get_logger("srdd_scale.train").info(" | ".join(parts))


def wandb_mode(configured: str) -> str:
    """``auto`` means online with an API key and offline without (no network needed to train)."""
    if configured != "auto":
        return configured
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbLogger(Callback):
    """wandb run in ``<run_dir>/wandb``; the run id is the run-dir name so a requeued job continues it."""

    def on_train_start(self, state: TrainState) -> None:
        self.run = None
        if not state.env.is_main:
            return
        mode = wandb_mode(state.cfg.logging.wandb_mode)
        if mode == "disabled":
            return
        import wandb

        log_cfg = state.cfg.logging
        self.run = wandb.init(
            project=log_cfg.wandb_project, entity=log_cfg.wandb_entity, name=state.run_dir.name,
            id=state.run_dir.name, resume="allow", dir=str(state.run_dir), mode=mode,
            config=to_dict(state.cfg),
        )

    def on_step_end(self, state: TrainState, report: StepReport) -> None:
        if self.run is None or not report.log:
            return
        import wandb

        payload: dict[str, Any] = dict(report.metrics)
        payload.update({k: wandb.Image(v) for k, v in report.media.items()})
        self.run.log(payload, step=report.step)

    def on_train_end(self, state: TrainState, summary: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            self.run.finish()
