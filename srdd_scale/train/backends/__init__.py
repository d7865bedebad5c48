"""Data-parallel backends applied to an unmodified model, chosen by ``parallel.backend``."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

import torch
from torch import nn

from srdd_scale.train.backends.base import Backend, BatchPlan, plan_batch
from srdd_scale.train.config import ParallelConfig, TrainConfig
from srdd_scale.utils.dist import DistEnv

__all__ = ["Backend", "BatchPlan", "build_backend", "model_construction", "plan_batch"]


# parallel.backend -> (module, class); a module is imported only when used (DeepSpeed is slow to import)
BACKENDS = {
    "ddp": ("ddp", "DDPBackend"),
    "fsdp": ("fsdp", "FSDPBackend"),
    "deepspeed": ("deepspeed", "DeepSpeedBackend"),
}


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass for ``parallel.backend`` ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r}: expected one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(f"srdd_scale.train.backends.{module}"), cls)


def model_construction(parallel: ParallelConfig, train: TrainConfig) -> contextlib.AbstractContextManager:
    """Where the trainer builds the model: as ``parallel.backend`` prefers (FSDP: on meta, shards materialised
    later; ZeRO-3: partitioned as each module is built), except with ``train.init_from``, whose full weights are
    loaded into a whole model first."""
    if train.init_from:
        return contextlib.nullcontext()
    return backend_class(parallel.backend).construction(parallel, train)


def build_backend(model: nn.Module, lr: float, env: DistEnv, device: torch.device, train: TrainConfig,
                  parallel: ParallelConfig, plan: BatchPlan, run_dir: Path) -> Backend:
    """Wrap ``model`` for ``parallel.backend`` and create its AdamW (imports only the backend in use)."""
    return backend_class(parallel.backend)(model, lr, env, device, train, parallel, plan, run_dir)
