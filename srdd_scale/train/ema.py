"""Exponential moving average of the weights, kept in fp32 next to (possibly sharded) parameters."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """EMA over a module's parameters; works on FSDP2 DTensor shards as on plain tensors (same local layout)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {
            name: param.detach().to(torch.float32).clone()
            for name, param in model.named_parameters()
            if param.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().to(torch.float32), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]} (checkpoint from another model?)")
        for name, value in state.items():
            self.shadow[name].copy_(value)
