"""Load an exported folder's weights into a freshly built transformer, also one built for another scale schedule.

A reduced schedule (scale distillation, srdd-method.md §4.1/§4.3) changes only the per-token and per-scale
embeddings: `pos_start`/`pos_embed` (one row per token) and `lvl_embed`/`scale_embed` (one row per scale).
Each scale of the new schedule takes the embeddings of the exported scale with the same side p (its token
grid has the same geometry and the residual it predicts the same resolution), which for 1,3,5,8,13,16 taken
from VAR's 1..16 covers every scale (§4.3 step 3: keep the embeddings of the kept scales). A side the export
never had takes the nearest exported side's level rows and that side's position grid resized bicubically.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from srdd_scale.export.folder import CONFIG_FILE, read_export_config, read_transformer_state

POSITION_KEYS = ("pos_start", "pos_embed")  # [1, tokens, C]
LEVEL_KEYS = ("lvl_embed.weight", "scale_embed.weight")  # [scales, C]


def _source_scale(side: int, old_patch_nums: tuple[int, ...]) -> int:
    """Index of the exported scale whose side equals `side`, else the nearest one (ties: the smaller side)."""
    return min(range(len(old_patch_nums)), key=lambda k: (abs(old_patch_nums[k] - side), old_patch_nums[k]))


def _position_grid(rows: torch.Tensor, old_side: int, new_side: int) -> torch.Tensor:
    """[old_side^2, C] position rows -> [new_side^2, C], row-major like the tokens."""
    if old_side == new_side:
        return rows
    grid = rows.T.reshape(1, -1, old_side, old_side)
    resized = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return resized.reshape(-1, new_side * new_side).T


def remap_schedule(state: dict[str, torch.Tensor], old_patch_nums: tuple[int, ...],
                   new_patch_nums: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """A copy of `state` whose position and level embeddings follow `new_patch_nums` (see module docstring)."""
    state = dict(state)
    old_begin = [sum(p * p for p in old_patch_nums[:k]) for k in range(len(old_patch_nums))]
    sources = [_source_scale(p, old_patch_nums) for p in new_patch_nums]
    if "pos_embed" in state:
        full = state["pos_embed"][0]  # one row per token of every scale, coarse to fine
        rows = [_position_grid(full[old_begin[k]: old_begin[k] + old_patch_nums[k] ** 2], old_patch_nums[k], p)
                for k, p in zip(sources, new_patch_nums)]
        state["pos_embed"] = torch.cat(rows)[None].contiguous()
    if "pos_start" in state:
        state["pos_start"] = _position_grid(state["pos_start"][0], old_patch_nums[0],
                                            new_patch_nums[0])[None].contiguous()
    for key in LEVEL_KEYS:
        if key in state:
            state[key] = state[key][sources].contiguous()
    return state


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
    """Copy the weights of export `folder` into `model` (an SRDDTransformer), remapping a different schedule.

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
        state = remap_schedule(state, old_patch_nums, new_patch_nums)
    check_state_fits(model, state, str(folder))
    model.load_state_dict(state)
