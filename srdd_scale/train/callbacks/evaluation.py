"""Periodic held-out loss on the eval MDS split, with the training forward (all ranks take part)."""

from __future__ import annotations

import torch

from srdd_scale.train.callbacks.base import Callback, StepReport
from srdd_scale.train.state import TrainState


class EvalLoss(Callback):
    """Every ``train.eval_every`` steps: mean loss/accuracy over ``train.eval_batches`` micro-batches per rank."""

    def __init__(self, loader):
        self.loader = loader

    def on_step_end(self, state: TrainState, report: StepReport) -> None:
        every = state.cfg.train.eval_every
        if not every or (report.step % every and report.step != state.cfg.train.total_steps):
            return
        with state.rng_isolated():
            means = self._evaluate(state)
        report.metrics.update({f"eval/{k.replace('/mean', '').replace('/', '_')}": v for k, v in means.items()})
        report.log = True

    def _evaluate(self, state: TrainState) -> dict[str, float]:
        state.backend.model.eval()
        sums: dict[str, float] = {}
        batches = 0
        with torch.no_grad(), state.autocast():
            for batch in self.loader:
                _, metrics = state.task.loss(state.backend.model, batch, cond_drop=None)
                for key in ("loss/mean", "acc/mean", "loss/last", "acc/last"):
                    sums[key] = sums.get(key, 0.0) + metrics[key]
                batches += 1
                if batches == state.cfg.train.eval_batches:
                    break
        state.backend.model.train()
        return state.all_reduce_mean({k: v / max(1, batches) for k, v in sums.items()})
