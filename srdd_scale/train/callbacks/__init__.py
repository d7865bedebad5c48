"""Callbacks of the training loop (llm-foundry style): speed, eval, samples, loggers."""

from __future__ import annotations

from srdd_scale.train.callbacks.base import Callback, StepReport
from srdd_scale.train.callbacks.evaluation import EvalLoss
from srdd_scale.train.callbacks.loggers import ConsoleLogger, MetricsFileLogger, WandbLogger, read_metrics
from srdd_scale.train.callbacks.samples import SampleGrid
from srdd_scale.train.callbacks.speed import SpeedMonitor

__all__ = ["Callback", "StepReport", "default_callbacks", "read_metrics"]


def default_callbacks(eval_loader=None) -> list[Callback]:
    """Measure first, then add eval/sample results, then write: loggers see every metric of the step."""
    callbacks: list[Callback] = [SpeedMonitor()]
    if eval_loader is not None:
        callbacks.append(EvalLoss(eval_loader))
    callbacks += [SampleGrid(), MetricsFileLogger(), ConsoleLogger(), WandbLogger()]
    return callbacks
