"""Data-parallel backends applied to an unmodified model, chosen by ``parallel.backend``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srdd_scale.train.backends.base import Backend, BatchPlan, plan_batch
from srdd_scale.train.config import ParallelConfig, TrainConfig
from srdd_scale.utils.dist import DistEnv

__all__ = ["Backend", "BatchPlan", "build_backend", "plan_batch"]


def build_backend(model: nn.Module, lr: float, env: DistEnv, device: torch.device, train: TrainConfig,
                  parallel: ParallelConfig, plan: BatchPlan, run_dir: Path) -> Backend:
    """Wrap ``model`` for ``parallel.backend`` and create its AdamW (imports only the backend in use)."""
    args = (env, device, train, parallel, plan)
    if parallel.backend == "ddp":
        from srdd_scale.train.backends.ddp import DDPBackend

        return DDPBackend(model, lr, *args)
    if parallel.backend == "fsdp":
        from srdd_scale.train.backends.fsdp import FSDPBackend

        return FSDPBackend(model, lr, *args)
    from srdd_scale.train.backends.deepspeed import DeepSpeedBackend

    return DeepSpeedBackend(model, lr, *args, run_dir=run_dir)
