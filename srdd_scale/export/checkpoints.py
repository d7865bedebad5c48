"""Read the plain model weights out of any backend's training checkpoint, on one process, any original world size.

DDP: the single `model_optim.pt`. FSDP: the DCP folder, read into a plain state dict (DCP stores global shapes).
DeepSpeed ZeRO-1/2/3: `deepspeed.utils.zero_to_fp32` merges the fp32 master shards of every rank.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from srdd_scale.train import checkpoint as ckpt
from srdd_scale.train.optim import plain_name


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run_dir, checkpoint folder) for a run directory (newest complete checkpoint) or one `step_*` folder."""
    path = Path(path)
    if (path / ckpt.COMPLETE).is_file():
        return path.parent.parent, path
    if ckpt.STEP_DIR.match(path.name) and path.is_dir():
        raise FileNotFoundError(f"{path}: no {ckpt.COMPLETE} marker, so the checkpoint was interrupted mid-write; "
                                f"export an earlier complete step_* folder")
    found = ckpt.complete_checkpoints(path / "checkpoints")
    if not found:
        raise FileNotFoundError(
            f"{path}: neither a checkpoint folder (step_XXXXXXXX with a {ckpt.COMPLETE} marker) nor a run directory "
            f"with complete checkpoints under {path / 'checkpoints'}"
        )
    return path, found[-1][1]


def _ddp_state(folder: Path) -> dict[str, torch.Tensor]:
    from srdd_scale.train.backends.ddp import CHECKPOINT_FILE

    return torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["model"]


def _fsdp_state(folder: Path, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch.distributed.checkpoint as dcp

    from srdd_scale.train.backends.fsdp import DCP_FOLDER

    # Only the "model" entries are requested, so the (larger) optimizer shards are never read.
    state = {"model": {k: torch.empty_like(v, dtype=torch.float32) for k, v in template.items()}}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(folder / DCP_FOLDER), no_dist=True)
    return state["model"]


def _deepspeed_state(folder: Path) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from srdd_scale.train.backends.deepspeed import DS_FOLDER, DS_TAG

    return get_fp32_state_dict_from_zero_checkpoint(str(folder / DS_FOLDER), tag=DS_TAG)


def read_model_state(folder: str | Path, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 weights of the plain model from checkpoint `folder`; `template` is the plain model's state dict.

    Wrapper name parts (DDP's `module.`, activation checkpointing, compile) are removed; only keys of the
    template are kept (DeepSpeed also returns non-persistent buffers). Raises naming the folder on mismatch.
    """
    folder = Path(folder)
    meta = ckpt.read_meta(folder)
    if meta.backend == "ddp":
        raw = _ddp_state(folder)
    elif meta.backend == "fsdp":
        raw = _fsdp_state(folder, template)
    elif meta.backend == "deepspeed":
        raw = _deepspeed_state(folder)
    else:
        raise ValueError(f"{folder / ckpt.COMPLETE}: backend={meta.backend!r}, expected ddp, fsdp or deepspeed")
    state = {plain_name(k): v.detach().to("cpu", torch.float32) for k, v in raw.items()}
    missing = sorted(set(template) - set(state))
    if missing:
        raise KeyError(f"{folder} ({meta.backend}) lacks {len(missing)} weights of the configured model, e.g. "
                       f"{missing[:5]}: was it written with another model config?")
    return {k: state[k] for k in template}
