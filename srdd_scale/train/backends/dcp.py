"""The DCP checkpoint of DDP and FSDP: model + optimizer through ``get_state_dict``/``set_state_dict`` into
torch.distributed.checkpoint, so a run resumes across ``ddp`` <-> ``fsdp`` and across world sizes (DCP stores
each tensor with its global shape), and its offline reader for export. Nothing in it is unpickled freely.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from srdd_scale.train.safe_load import (
    UnsafePickleError, load_dcp_metadata, refuse_unpickling, weights_only_loads,
)

DCP_FOLDER = "dcp"


class SafeFileSystemReader(dcp.FileSystemReader):
    """DCP's file reader whose ``.metadata`` goes through the allow-listed unpickler (DCP's own uses pickle)."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as handle:
            metadata = load_dcp_metadata(handle, path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _training_state(model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> dict[str, Any]:
    """FQN-keyed model and optimizer state (wrapper prefixes removed, so DDP and FSDP agree) plus ``extra``."""
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state, "extra": extra}


def load_into(state: dict[str, Any], path: Path, no_dist: bool = False) -> None:
    """``dcp.load`` with the safe reader; DCP's errors (BaseExceptions) become ordinary ones naming ``path``."""
    with open(Path(path) / ".metadata", "rb") as handle:  # DCP would turn a refusal into an anonymous error
        load_dcp_metadata(handle, Path(path) / ".metadata")
    try:
        with weights_only_loads():  # DCP torch.loads its non-tensor values with weights_only=False
            dcp.load(state, storage_reader=SafeFileSystemReader(str(path)), no_dist=no_dist)
    except pickle.UnpicklingError as err:
        raise _unsafe(err, path) from None
    except CheckpointException as err:  # a BaseException: turn it into an ordinary, catchable error
        for cause in _causes(err):
            if isinstance(cause, pickle.UnpicklingError):
                raise _unsafe(cause, path) from None
        raise RuntimeError(f"cannot read the DCP checkpoint in {path}: {err}") from None


def _unsafe(err: pickle.UnpicklingError, path: Path) -> UnsafePickleError:
    return err if isinstance(err, UnsafePickleError) else refuse_unpickling(err, path)


def _causes(err: CheckpointException) -> list[BaseException]:
    """The per-rank exceptions DCP collected (each stored with its traceback)."""
    return [value[0] if isinstance(value, tuple) else value for value in (getattr(err, "failures", {}) or {}).values()]


def save(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, extra: dict[str, Any]) -> None:
    """Collective: every rank writes its shard (replicated tensors once) into ``folder/dcp``."""
    dcp.save(_training_state(model, optimizer, extra), checkpoint_id=str(Path(folder) / DCP_FOLDER))


def load(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, extra_template: dict[str, Any]
         ) -> dict[str, Any]:
    """Collective: restore model + optimizer from ``folder/dcp`` (any backend of this family, any world size)."""
    state = _training_state(model, optimizer, extra_template)
    load_into(state, Path(folder) / DCP_FOLDER)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return state["extra"]


def read_weights(folder: Path, ema: bool) -> dict[str, torch.Tensor]:
    """Offline, one process: the model (or EMA) tensors only, never the larger optimizer entries."""
    path = Path(folder) / DCP_FOLDER
    prefix = "extra.ema." if ema else "model."
    with open(path / ".metadata", "rb") as handle:
        stored = load_dcp_metadata(handle, path / ".metadata").state_dict_metadata
    wanted = {key[len(prefix):]: torch.empty(tuple(meta.size), dtype=torch.float32)
              for key, meta in stored.items() if key.startswith(prefix) and hasattr(meta, "size")}
    if wanted:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            load_into({"extra": {"ema": wanted}} if ema else {"model": wanted}, path, no_dist=True)
    return wanted
