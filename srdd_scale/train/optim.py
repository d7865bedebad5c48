"""AdamW parameter groups: decay only on weight matrices (VAR's no-decay list, docs/method.md §8.2)."""

from __future__ import annotations

import torch
from torch import nn

from srdd_scale.train.config import TrainConfig

# Names (or name parts) of parameters that are embeddings or per-head scales even when they are >= 2-D:
# positional and level embeddings, start/null tokens, the learnable attention temperature.
NO_DECAY_NAME_PARTS = ("pos_", "lvl_embed", "level_embed", "start", "scale_mul", "null", "embedding", "cfg_uncond")


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameter names that get no weight decay: 1-D tensors, ``nn.Embedding`` tables and the named parts above."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            ndim = len(getattr(param, "ds_shape", param.shape))  # a ZeRO-3 partition is flat; ds_shape is the real one
            if ndim < 2 or isinstance(module, nn.Embedding) or any(p in full for p in NO_DECAY_NAME_PARTS):
                names.add(full)
    return names


def build_optimizer(model: nn.Module, cfg: TrainConfig, no_decay: set[str], lr: float) -> torch.optim.AdamW:
    """torch AdamW over two groups; ``no_decay`` comes from the unwrapped model (wrappers keep parameter names)."""
    decay_params, plain_params = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain_params if plain_name(name) in no_decay else decay_params).append(param)
    groups = [
        {"params": decay_params, "weight_decay": cfg.weight_decay},
        {"params": plain_params, "weight_decay": 0.0},
    ]
    # fused: one kernel per step, and it takes ``found_inf`` to drop a non-finite step without a host sync
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)


def plain_name(name: str) -> str:
    """DDP/DeepSpeed prefix ``module.``, activation checkpointing and compile insert wrapper parts."""
    for part in ("_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(part, "")
    return name[len("module."):] if name.startswith("module.") else name
