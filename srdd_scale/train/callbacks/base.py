"""Cross-cutting features as small callback objects (llm-foundry style); the loop only calls the hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from srdd_scale.train.state import TrainState


@dataclass
class StepReport:
    """What one optimizer step produced; callbacks add metrics and media before the loggers see it."""

    step: int  # optimizer steps completed (1 after the first step)
    metrics: dict[str, float]
    media: dict[str, str] = field(default_factory=dict)  # name -> image path (rank 0)
    log: bool = False  # whether loggers write this step (log_every, eval/sample steps, the last step)
    # whether the host has read this step's values back (Trainer.reads_back); metrics is empty until it has, so a
    # callback that reports per window (SpeedMonitor) closes its window here, where the device has caught up
    settled: bool = False


class Callback:
    """Hooks run on every rank in list order; a callback that only writes checks ``state.env.is_main``."""

    def on_train_start(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState, report: StepReport) -> None:
        pass

    def on_step_done(self, state: TrainState) -> None:
        """After the step's checkpoint (if any): nothing of this step is left to time or report."""

    def on_train_end(self, state: TrainState, summary: dict[str, Any]) -> None:
        pass
