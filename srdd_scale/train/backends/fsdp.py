"""FSDP2: ``fully_shard`` on every block and on the root; checkpoints are sharded torch.distributed.checkpoint.

DCP stores each tensor with its global shape, so a checkpoint written by N ranks loads on M ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

from srdd_scale.config import ConfigError
from srdd_scale.train.backends.base import Backend

DCP_FOLDER = "dcp"


class FSDPBackend(Backend):
    name = "fsdp"

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
        return model, new_optimizer()

    @property
    def module(self) -> nn.Module:
        return self.model

    def micro_step_context(self, is_last_micro: bool):
        # reduce-scatter only after the last micro-batch of the step
        self.model.set_requires_gradient_sync(is_last_micro)
        return super().micro_step_context(is_last_micro)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.plan.grad_accum_steps).backward()

    def step(self) -> float:
        max_norm = self.train_cfg.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def discard_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _state(self, extra: dict[str, Any]) -> dict[str, Any]:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optimizer": optim_state, "extra": extra}

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        dcp.save(self._state(extra), checkpoint_id=str(Path(folder) / DCP_FOLDER))
        dist.barrier()

    def load(self, folder: Path, meta: Any, extra_template: dict[str, Any]) -> dict[str, Any]:
        state = self._state(extra_template)
        try:
            dcp.load(state, checkpoint_id=str(Path(folder) / DCP_FOLDER))
        except CheckpointException as err:  # a BaseException: turn it into an ordinary, catchable error
            raise RuntimeError(f"cannot read the DCP checkpoint in {folder}: {err}") from None
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
        return state["extra"]

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.to(torch.float32) for k, v in state.items()} if self.env.is_main else {}
