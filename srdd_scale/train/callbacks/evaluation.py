"""Periodic held-out loss on the eval MDS split, with the training forward (all ranks take part)."""

from __future__ import annotations

import torch

from srdd_scale.train.callbacks.base import Callback, StepReport


class EvalLoss(Callback):
    """Every ``train.eval_every`` steps: mean loss/accuracy over ``train.eval_batches`` micro-batches per rank."""

    def __init__(self, loader):
        self.loader = loader

    def on_step_end(self, trainer, report: StepReport) -> None:
        every = trainer.cfg.train.eval_every
        if not every or (report.step % every and report.step != trainer.cfg.train.total_steps):
            return
        with trainer.rng_isolated():
            means = self._evaluate(trainer)
        report.metrics.update({f"eval/{k.replace('/mean', '').replace('/', '_')}": v for k, v in means.items()})
        report.log = True

    def _evaluate(self, trainer) -> dict[str, float]:
        trainer.backend.model.eval()
        sums: dict[str, float] = {}
        batches = 0
        with torch.no_grad(), trainer.autocast():
            for batch in self.loader:
                _, metrics = trainer.task.loss(trainer.backend.model, batch, cond_drop=None)
                for key in ("loss/mean", "acc/mean", "loss/last", "acc/last"):
                    sums[key] = sums.get(key, 0.0) + metrics[key]
                batches += 1
                if batches == trainer.cfg.train.eval_batches:
                    break
        trainer.backend.model.train()
        return trainer.all_reduce_mean({k: v / max(1, batches) for k, v in sums.items()})
