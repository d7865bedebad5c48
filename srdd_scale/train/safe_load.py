"""Loading from run folders and exports without executing code: an allow-listed unpickler for DCP's metadata
and a context that forces ``torch.load(weights_only=True)`` inside libraries that would unpickle freely.

A run folder may come from a colleague or a shared bucket; a pickle in it can run anything on load. Every
load in srdd_scale goes through ``weights_only=True``, safetensors or the unpickler below, and the libraries
that call ``torch.load(weights_only=False)`` themselves (DCP's non-tensor values, DeepSpeed's state files)
run inside ``weights_only_loads`` with the exact extra types their files hold allowed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import IO, Any, Iterator

import torch


class UnsafePickleError(pickle.UnpicklingError):
    """A file asked to build an object outside the allow-list: it is refused, never executed."""


# DCP's checkpoint metadata holds only these dataclasses, torch sizes/dtypes and a path (torch 2.4+ layout).
_DCP_METADATA_TYPES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath"},
    "collections": {"OrderedDict"},
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, handle: IO[bytes], source: str, allowed: dict[str, set[str]]):
        super().__init__(handle)
        self.source, self.allowed = source, allowed

    def find_class(self, module: str, name: str) -> Any:
        if name in self.allowed.get(module, ()) or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                     torch.dtype)):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refers to {module}.{name}, which is not an allowed type for this file; it was not "
            f"loaded (a planted pickle payload or a file from an incompatible library version)"
        )


def load_dcp_metadata(handle: IO[bytes], source: str | Path) -> Any:
    """Unpickle DCP's ``.metadata`` allowing only DCP's metadata dataclasses and torch sizes and dtypes."""
    return _AllowListUnpickler(handle, str(source), _DCP_METADATA_TYPES).load()


@contextlib.contextmanager
def weights_only_loads(extra_types: list[Any] = ()) -> Iterator[None]:
    """Every ``torch.load`` inside runs with ``weights_only=True`` (even where a library passes False), with
    ``extra_types`` added to torch's allow-list for the duration."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(list(extra_types)):
            yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def refuse_unpickling(err: pickle.UnpicklingError, path: str | Path) -> UnsafePickleError:
    """torch's weights-only refusal, re-raised naming the file and what it means."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(err).__name__)
    return UnsafePickleError(f"{path}: refused to unpickle ({reason}); the file holds objects other than tensors "
                             f"and plain values (a planted pickle payload or an incompatible writer), nothing "
                             f"from it was executed")
