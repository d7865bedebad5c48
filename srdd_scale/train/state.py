"""What callbacks may see of a run: a narrow, read-only view built by the trainer at each hook.

Callbacks get this instead of the Trainer, so they cannot reach into the loop's counters and the callbacks
package does not import the trainer (which imports the callbacks).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from srdd_scale.utils.dist import DistEnv

if TYPE_CHECKING:
    from srdd_scale.train.backends.base import Backend
    from srdd_scale.train.task import SRDDTask


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The transformer's mixed-precision context for ``train.precision`` (fp32: a no-op)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


def rng_isolated(device: torch.device) -> contextlib.AbstractContextManager:
    """Eval and sampling must not advance the training RNG streams, or resumed runs would diverge."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def all_reduce_mean(values: dict[str, float], device: torch.device, world_size: int) -> dict[str, float]:
    """Mean of each value over ranks, in one collective."""
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    return {k: v / world_size for k, v in zip(keys, packed.tolist())}


@dataclass(frozen=True)
class TrainState:
    """The run as of ``step`` optimizer steps: config, ranks, the wrapped model (``backend``) and its task."""

    cfg: Any  # the validated RunConfig
    env: DistEnv
    device: torch.device
    run_dir: Path
    task: "SRDDTask"
    backend: "Backend"
    step: int

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.cfg.train.precision)

    def rng_isolated(self) -> contextlib.AbstractContextManager:
        return rng_isolated(self.device)

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        return all_reduce_mean(values, self.device, self.env.world_size)
