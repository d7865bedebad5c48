"""What the training loop needs from a data-parallel backend; each backend wraps an unmodified model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from srdd_scale.train.backends import dcp as dcp_checkpoint
from srdd_scale.train.config import ParallelConfig, TrainConfig
from srdd_scale.train.optim import build_optimizer, no_decay_names
from srdd_scale.utils.dist import DistEnv


@dataclass(frozen=True)
class BatchPlan:
    """Fixed global batch split into micro-batches per rank and accumulation steps for this world size."""

    global_batch_size: int
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int


def plan_batch(train: TrainConfig, parallel: ParallelConfig, world_size: int) -> BatchPlan:
    """micro x accum x world == global; raises naming the keys when the numbers do not divide."""
    from srdd_scale.config import ConfigError

    micro = parallel.micro_batch_size or train.global_batch_size // world_size
    per_step = micro * world_size
    if micro == 0 or train.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={train.global_batch_size} is not a multiple of parallel.micro_batch_size="
            f"{parallel.micro_batch_size or micro} x world size {world_size}: pick a global batch divisible by "
            f"micro-batch x ranks"
        )
    return BatchPlan(train.global_batch_size, micro, train.global_batch_size // per_step, world_size)


class Backend:
    """One data-parallel strategy. ``model`` is what the loop calls forward on; ``module`` is the plain model.

    Construction is the same for every backend (``__init__``): check the config, note the no-decay names on the
    unwrapped model, place it on the device, apply the per-block wrappers, then ``wrap`` (the one step a backend
    writes) shards or replicates it and creates the optimizer over what it made.

    The loop drives: ``micro_step_context`` around each micro-batch's forward+backward, ``backward`` per
    micro-batch, then ``step`` (clip + an update the device drops when it is not finite) once per optimizer step.
    """

    name: str
    checkpoint_format = "dcp"  # resumes checkpoints of this family, whichever backend of it wrote them
    model: nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, model: nn.Module, lr: float, env: DistEnv, device: torch.device, train: TrainConfig,
                 parallel: ParallelConfig, plan: BatchPlan, run_dir: Path):
        self.env, self.device, self.train_cfg, self.parallel_cfg, self.plan = env, device, train, parallel, plan
        self.run_dir = Path(run_dir)
        self.check_config()
        no_decay = no_decay_names(model)
        if not is_on_meta(model) and next(model.parameters()).device != self.device:
            model.to(self.device)  # a meta-built model stays on meta: ``wrap`` materialises it
        apply_block_wrappers(model, train)
        self.model, self.optimizer = self.wrap(model, lambda: build_optimizer(model, train, no_decay, lr))

    @classmethod
    def construction(cls, parallel: ParallelConfig, train: TrainConfig) -> contextlib.AbstractContextManager:
        """Context the model is built in: plain here (every rank builds it whole); a backend that creates only
        its shards builds it without storage."""
        return contextlib.nullcontext()

    def check_config(self) -> None:
        """Raise a ConfigError for settings this backend cannot honour (before any work is done)."""

    def wrap(self, model: nn.Module, new_optimizer: Callable[[], torch.optim.Optimizer]
             ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Parallelise the prepared ``model``; ``new_optimizer()`` builds AdamW over its parameters as they are."""
        raise NotImplementedError

    @property
    def module(self) -> nn.Module:
        raise NotImplementedError

    def micro_step_context(self, is_last_micro: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self, loss_not_finite: torch.Tensor) -> torch.Tensor:
        """Clip, update, zero gradients; returns the pre-clip global grad norm as a 0-d device tensor.

        Nothing here waits for the device: when the norm is not finite or ``loss_not_finite`` (a 0-d bool tensor,
        the same on every rank) is set, the update is dropped on the device, and the trainer counts the skip when
        it next reads the step's values back."""
        raise NotImplementedError

    def clip_grad_norm(self, parameters) -> torch.Tensor:
        """Clip to ``train.grad_clip`` (0: no clipping); the global pre-clip norm (a sharded one is gathered)."""
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.train_cfg.grad_clip or float("inf"))
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        return grad_norm.detach().float()

    def guarded_update(self, grad_norm: torch.Tensor, loss_not_finite: torch.Tensor) -> None:
        """One AdamW step, dropped on the device (fused AdamW's ``found_inf``) when the step is not finite."""
        self.optimizer.found_inf = ((~torch.isfinite(grad_norm)) | loss_not_finite).float()
        self.optimizer.step()

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        """Collective: write model + optimizer (+ ``extra`` tensors/values such as EMA) under ``folder``.

        The default is the DCP family (backends/dcp.py), which DDP and FSDP share, so either resumes the other.
        """
        dcp_checkpoint.save(self.model, self.optimizer, folder, extra)

    def load(self, folder: Path, meta: Any, extra_template: dict[str, Any]) -> dict[str, Any]:
        """Collective: restore model + optimizer from ``folder``; returns ``extra`` filled in."""
        return dcp_checkpoint.load(self.model, self.optimizer, folder, extra_template)

    @staticmethod
    def read_weights(folder: Path, ema: bool) -> dict[str, torch.Tensor]:
        """Offline (one process, no ranks): the model's or EMA's weights from checkpoint ``folder``, for export."""
        return dcp_checkpoint.read_weights(folder, ema)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Collective: the plain model's full fp32 state dict on rank 0 (an empty dict elsewhere)."""
        raise NotImplementedError

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def is_on_meta(model: nn.Module) -> bool:
    """Whether ``model`` was built on the meta device (parameters without storage, to be materialised)."""
    return any(param.is_meta for param in model.parameters())


def apply_block_wrappers(model: nn.Module, train: TrainConfig) -> None:
    """Activation checkpointing and torch.compile applied per block, in place, before any sharding.

    Done on ``model.blocks`` (the contract's ModuleList) so that the model file stays unaware of both.
    """
    if train.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for index, block in enumerate(model.blocks):
            model.blocks[index] = checkpoint_wrapper(block)
    if train.compile:
        for block in model.blocks:
            block.compile()

