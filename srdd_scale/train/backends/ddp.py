"""DDP: full replica per rank, gradients all-reduced; checkpoints in the DCP family shared with FSDP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from srdd_scale.train.backends.base import Backend


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

    def step(self, loss_not_finite: torch.Tensor) -> torch.Tensor:
        self.scaler.unscale_(self.optimizer)
        grad_norm = self.clip_grad_norm(self.module.parameters())
        if self.scaler.is_enabled():
            # fp16: the scaler hands its own found_inf to the fused AdamW (no sync) and lowers its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.guarded_update(grad_norm, loss_not_finite)
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        super().save(folder, {**extra, "scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else extra)

    def load(self, folder: Path, meta: Any, extra_template: dict[str, Any]) -> dict[str, Any]:
        if not self.scaler.is_enabled():
            return super().load(folder, meta, extra_template)
        extra = super().load(folder, meta, {**extra_template, "scaler": self.scaler.state_dict()})
        self.scaler.load_state_dict(extra.pop("scaler"))
        return extra

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        if not self.env.is_main:
            return {}
        return {k: v.detach().to("cpu", torch.float32) for k, v in self.module.state_dict().items()}
