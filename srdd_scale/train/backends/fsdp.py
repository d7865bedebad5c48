"""FSDP2: ``fully_shard`` on every block and on the root; checkpoints are the DCP family's (backends/dcp.py)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from srdd_scale.config import ConfigError
from srdd_scale.model.transformer import deferred_init
from srdd_scale.train.backends.base import Backend, is_on_meta
from srdd_scale.train.optim import plain_name


@torch.no_grad()
def materialise_shards(model: nn.Module, device: torch.device) -> None:
    """Storage for this rank's shards only, each filled with its slice of the parameter's full initial value.

    ``initial_parameter`` draws every parameter from its own (seed, name) generator, so the slices equal the
    single-process init of the same seed bit for bit; one full parameter exists at a time, never the model.
    """
    model.to_empty(device=device)
    for name, param in model.named_parameters():
        full = model.initial_parameter(plain_name(name)).to(device)
        if isinstance(param, DTensor):
            full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
        param.copy_(full)
    model.reset_buffers()


class FSDPBackend(Backend):
    name = "fsdp"

    @classmethod
    def construction(cls, parallel, train) -> contextlib.AbstractContextManager:
        """On ``meta`` with init deferred: ``wrap`` shards it, then materialises and initialises the shards."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.device("meta"))
        stack.enter_context(deferred_init())
        return stack

    def check_config(self) -> None:
        if self.train_cfg.precision == "fp16":
            raise ConfigError("train.precision: got 'fp16' with parallel.backend='fsdp', expected 'bf16' or "
                              "'fp32' (FSDP2 has no sharded loss scaler here; use bf16)")

    def wrap(self, model, new_optimizer):
        # bf16 compute and all-gather, fp32 gradient reduction (fp32 master weights stay in the shards)
        bf16 = self.train_cfg.precision == "bf16"
        shard_kwargs: dict[str, Any] = {
            "mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                              reduce_dtype=torch.float32),
            "reshard_after_forward": self.parallel_cfg.fsdp_reshard_after_forward,
        }
        if self.parallel_cfg.fsdp_cpu_offload:
            shard_kwargs["offload_policy"] = CPUOffloadPolicy()
        for block in model.blocks:
            fully_shard(block, **shard_kwargs)
        fully_shard(model, **shard_kwargs)
        if is_on_meta(model):
            self.materialise(model)
        return model, new_optimizer()

    def materialise(self, model: nn.Module) -> None:
        """Give a meta-built, sharded model its storage and initial values (the layout planner gives fake ones)."""
        materialise_shards(model, self.device)

    @property
    def module(self) -> nn.Module:
        return self.model

    def micro_step_context(self, is_last_micro: bool):
        # reduce-scatter only after the last micro-batch of the step
        self.model.set_requires_gradient_sync(is_last_micro)
        return super().micro_step_context(is_last_micro)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.plan.grad_accum_steps).backward()

    def step(self, loss_not_finite: torch.Tensor) -> torch.Tensor:
        grad_norm = self.clip_grad_norm(self.model.parameters())
        self.guarded_update(grad_norm, loss_not_finite)
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.to(torch.float32) for k, v in state.items()} if self.env.is_main else {}
