"""DDP: full replica per rank, gradients all-reduced; the checkpoint is one file written by rank 0."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from srdd_scale.train.backends.base import Backend

CHECKPOINT_FILE = "model_optim.pt"


class DDPBackend(Backend):
    name = "ddp"

    def wrap(self, model, new_optimizer):
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # fp16 needs loss scaling; bf16/fp32 do not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.train_cfg.precision == "fp16")
        return DistributedDataParallel(model, device_ids=device_ids), new_optimizer()

    @property
    def module(self) -> nn.Module:
        return self.model.module

    def micro_step_context(self, is_last_micro: bool):
        return super().micro_step_context(True) if is_last_micro else self.model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss / self.plan.grad_accum_steps).backward()

    def step(self) -> float:
        self.scaler.unscale_(self.optimizer)
        max_norm = self.train_cfg.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def discard_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        if self.env.is_main:
            state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "extra": extra}
            tmp = Path(folder) / f".{CHECKPOINT_FILE}.tmp"
            torch.save(state, tmp)
            os.replace(tmp, Path(folder) / CHECKPOINT_FILE)
        dist.barrier()

    def load(self, folder: Path, meta: Any, extra_template: dict[str, Any]) -> dict[str, Any]:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        return state["extra"]

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        if not self.env.is_main:
            return {}
        return {k: v.detach().to("cpu", torch.float32) for k, v in self.module.state_dict().items()}
