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


def _ddp_state(folder: Path, ema: bool) -> dict[str, torch.Tensor]:
    from srdd_scale.train.backends.ddp import CHECKPOINT_FILE

    state = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    return state["extra"].get("ema", {}) if ema else state["model"]


def _fsdp_state(folder: Path, ema: bool) -> dict[str, torch.Tensor]:
    """Only the requested entries are read (never the larger optimizer shards); shapes come from DCP's metadata."""
    import torch.distributed.checkpoint as dcp

    from srdd_scale.train.backends.fsdp import DCP_FOLDER

    path = str(folder / DCP_FOLDER)
    prefix = "extra.ema." if ema else "model."
    stored = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    wanted = {key[len(prefix):]: torch.empty(tuple(meta.size), dtype=torch.float32)
              for key, meta in stored.items() if key.startswith(prefix) and hasattr(meta, "size")}
    state = {"extra": {"ema": wanted}} if ema else {"model": wanted}
    if wanted:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=path, no_dist=True)
    return wanted


def _deepspeed_state(folder: Path, ema: bool) -> dict[str, torch.Tensor]:
    from srdd_scale.train.backends.deepspeed import DS_FOLDER, DS_TAG

    if ema:  # the trainer's client_state sits in DeepSpeed's rank-0 model-states file
        path = folder / DS_FOLDER / DS_TAG / "mp_rank_00_model_states.pt"
        return torch.load(path, map_location="cpu", weights_only=True).get("extra", {}).get("ema", {})
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(folder / DS_FOLDER), tag=DS_TAG)


def read_model_state(folder: str | Path, template: dict[str, torch.Tensor], ema: bool = False
                     ) -> dict[str, torch.Tensor]:
    """fp32 weights of the plain model from checkpoint `folder`; `template` is the plain model's state dict.

    `ema`: the EMA weights (train.ema_decay > 0) in place of the trained parameters; buffers stay the model's.

    Wrapper name parts (DDP's `module.`, activation checkpointing, compile) are removed; only keys of the
    template are kept (DeepSpeed also returns non-persistent buffers). Raises naming the folder on mismatch.
    """
    folder = Path(folder)
    meta = ckpt.read_meta(folder)
    readers = {"ddp": _ddp_state, "fsdp": _fsdp_state, "deepspeed": _deepspeed_state}
    if meta.backend not in readers:
        raise ValueError(f"{folder / ckpt.COMPLETE}: backend={meta.backend!r}, expected ddp, fsdp or deepspeed")
    raw = readers[meta.backend](folder, False)
    if ema:
        averaged = readers[meta.backend](folder, True)
        if not averaged:
            raise ValueError(f"{folder}: holds no EMA weights (the run had train.ema_decay=0); export without ema")
        raw = {**{plain_name(k): v for k, v in raw.items()}, **{plain_name(k): v for k, v in averaged.items()}}
    state = {plain_name(k): v.detach().to("cpu", torch.float32) for k, v in raw.items()}
    missing = sorted(set(template) - set(state))
    if missing:
        raise KeyError(f"{folder} ({meta.backend}) lacks {len(missing)} weights of the configured model, e.g. "
                       f"{missing[:5]}: was it written with another model config?")
    return {k: state[k] for k in template}
