"""Read the plain model weights out of any backend's training checkpoint, on one process, any original world size.

The reading itself is each backend's ``read_weights`` (DCP for DDP/FSDP, zero_to_fp32 for DeepSpeed), found
through the backend registry by the name the checkpoint's COMPLETE marker records.
"""

from __future__ import annotations

from pathlib import Path

import torch

from srdd_scale.train import checkpoint as ckpt
from srdd_scale.train.backends import BACKENDS, backend_class
from srdd_scale.train.optim import plain_name
from srdd_scale.utils.logging import get_logger

log = get_logger("srdd_scale.export")


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run_dir, checkpoint folder) for a run directory (its newest *verified* checkpoint, warning about newer
    damaged ones) or one `step_*` folder (verified, else refused naming the file)."""
    path = Path(path)
    if (path / ckpt.COMPLETE).is_file():
        ckpt.verify_share(path, ckpt.read_meta(path))
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
    for _, folder in reversed(found):
        try:
            ckpt.verify_share(folder, ckpt.read_meta(folder))
        except ckpt.CheckpointVerificationError as err:
            log.warning("skipping checkpoint %s: %s", folder, err)
            continue
        return path, folder
    raise ckpt.CheckpointVerificationError(f"{path}: none of its {len(found)} complete checkpoints passed "
                                           f"verification (see the warnings above)")


def read_model_state(folder: str | Path, template: dict[str, torch.Tensor], ema: bool = False
                     ) -> dict[str, torch.Tensor]:
    """fp32 weights of the plain model from checkpoint `folder`; `template` is the plain model's state dict.

    `ema`: the EMA weights (train.ema_decay > 0) in place of the trained parameters; buffers stay the model's.

    Wrapper name parts (DDP's `module.`, activation checkpointing, compile) are removed; only keys of the
    template are kept (DeepSpeed also returns non-persistent buffers). Raises naming the folder on mismatch.
    """
    folder = Path(folder)
    meta = ckpt.read_meta(folder)
    if meta.backend not in BACKENDS:
        raise ValueError(f"{folder / ckpt.COMPLETE}: backend={meta.backend!r}, expected one of {sorted(BACKENDS)}")
    read_weights = backend_class(meta.backend).read_weights  # each backend's reader sits beside its writer
    raw = read_weights(folder, False)
    if ema:
        averaged = read_weights(folder, True)
        if not averaged:
            raise ValueError(f"{folder}: holds no EMA weights (the run had train.ema_decay=0); export without ema")
        raw = {**{plain_name(k): v for k, v in raw.items()}, **{plain_name(k): v for k, v in averaged.items()}}
    state = {plain_name(k): v.detach().to("cpu", torch.float32) for k, v in raw.items()}
    missing = sorted(set(template) - set(state))
    if missing:
        raise KeyError(f"{folder} ({meta.backend}) lacks {len(missing)} weights of the configured model, e.g. "
                       f"{missing[:5]}: was it written with another model config?")
    return {k: state[k] for k in template}
