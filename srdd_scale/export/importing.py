"""Load an exported folder's weights into a freshly built transformer, also one built for a reduced schedule.

A reduced schedule (scale distillation, docs/method.md §6.6) changes only the per-token and per-scale
embeddings; `srdd_scale.model.state_dict_for_schedule` keeps those of the kept scales (docs/method.md §6.6).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srdd_scale.export.folder import CONFIG_FILE, read_export_config, read_transformer_state
from srdd_scale.model import state_dict_for_schedule


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise naming `source` and every missing, unexpected or mis-shaped key (before any weight is copied)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(f"{k}: {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                       for k in expected if k in state and state[k].shape != expected[k].shape)
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", misshaped))
                if keys]
    if problems:
        raise ValueError(f"{source} does not fit the model being loaded: " + "; ".join(problems)
                         + " (check model.depth/width/num_heads, vocab/latent sizes, text_dim and num_classes)")


@torch.no_grad()
def load_exported_weights(model: nn.Module, folder: str | Path) -> None:
    """Copy the weights of export `folder` into `model` (an SRDDTransformer), re-laid for a reduced schedule.

    This is `train.init_from`: fine-tuning or scale distillation starts from an exported model.
    """
    folder = Path(folder)
    config = read_export_config(folder)
    state = read_transformer_state(folder)
    old_patch_nums = tuple(int(p) for p in config["patch_nums"])
    new_patch_nums = tuple(model.patch_nums)
    if old_patch_nums != new_patch_nums:
        if old_patch_nums[-1] != new_patch_nums[-1]:
            raise ValueError(
                f"{folder / CONFIG_FILE}: patch_nums={list(old_patch_nums)} ends at {old_patch_nums[-1]}, the model "
                f"being loaded ends at {new_patch_nums[-1]}: a schedule may change its steps, not its final latent grid"
            )
        state = state_dict_for_schedule(state, old_patch_nums, new_patch_nums)
    check_state_fits(model, state, str(folder))
    model.load_state_dict(state)
