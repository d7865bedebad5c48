"""Checkpoint layout shared by all backends: ``checkpoints/step_XXXXXXXX/`` with a ``COMPLETE`` marker written last.

A folder without the marker was interrupted mid-write and is never resumed from. The marker records a content
hash of every payload file of every rank (read back from disk after the write), so resume and export can prove
that what they load is what was written: a flipped byte, a truncated or missing file or a stale marker is found
and named before anything is loaded. Each backend writes its own payload inside the folder (a DCP folder for
DDP/FSDP, DeepSpeed's native folder); this module adds what every backend shares: per-rank RNG and loader
state, the trainer counters, hashing and verification, discovery and pruning.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srdd_scale.train.safe_load import refuse_unpickling

COMPLETE = "COMPLETE"
STEP_DIR = re.compile(r"^step_(\d{8})$")
# xxh3-128 detects bit rot and truncation as well as sha256 at ~10x the speed (cli/bench_checkpoint.py); it is
# no defence against a hostile writer, who could rewrite COMPLETE too: that is the safe loaders' job.
HASH_ALGORITHM = "xxh3_128"
CHUNK_BYTES = 8 << 20


class CheckpointVerificationError(RuntimeError):
    """A checkpoint's files differ from what its COMPLETE marker recorded; the message names the file."""


@dataclass(frozen=True)
class CheckpointMeta:
    """Contents of the COMPLETE marker: enough to decide whether and how a checkpoint can be resumed."""

    step: int
    backend: str
    world_size: int
    zero_stage: int
    config_hash: str
    hash_algorithm: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path -> {"bytes", "hash"}


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint whose COMPLETE marker exists, oldest first."""
    root = Path(root)
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = STEP_DIR.match(child.name)
            if match and (child / COMPLETE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def read_meta(folder: Path) -> CheckpointMeta:
    path = Path(folder) / COMPLETE
    try:
        return CheckpointMeta(**json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise CheckpointVerificationError(f"{path}: not a COMPLETE marker written by srdd_scale ({err})") from None


def file_digest(path: Path, algorithm: str = HASH_ALGORITHM) -> str:
    """Streaming content hash of one file (constant memory, any size)."""
    import xxhash

    digest = xxhash.xxh3_128() if algorithm == "xxh3_128" else hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def payload_files(folder: Path) -> list[str]:
    """Every file of a checkpoint folder except its marker (and a marker's temporary), relative, sorted."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name not in (COMPLETE, f".{COMPLETE}.tmp"))


def hash_share(folder: Path, rank: int, world_size: int) -> dict[str, dict[str, Any]]:
    """This rank's share (every ``world_size``-th file) of the folder's payload, hashed as it now is on disk."""
    folder = Path(folder)
    return {name: {"bytes": (folder / name).stat().st_size, "hash": file_digest(folder / name)}
            for name in payload_files(folder)[rank::world_size]}


def verify_share(folder: Path, meta: CheckpointMeta, rank: int = 0, world_size: int = 1) -> None:
    """Check this rank's share of the recorded files (rank 0 also looks for unrecorded ones); raises naming the
    first file that is missing, resized, changed or not recorded."""
    folder = Path(folder)
    if not meta.files:
        raise CheckpointVerificationError(f"{folder / COMPLETE}: records no file hashes (written before verified "
                                          f"checkpoints existed, or hand-made), so the payload cannot be trusted")
    if rank == 0:
        unrecorded = sorted(set(payload_files(folder)) - set(meta.files))
        if unrecorded:
            raise CheckpointVerificationError(f"{folder / unrecorded[0]}: not recorded in {COMPLETE} (a stale marker "
                                              f"or a file added after the checkpoint was written)")
    for name in sorted(meta.files)[rank::world_size]:
        path, expected = folder / name, meta.files[name]
        if not path.is_file():
            raise CheckpointVerificationError(f"{path}: missing (recorded in {COMPLETE}; an interrupted copy or a "
                                              f"lost rank file)")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointVerificationError(f"{path}: {size} bytes, {COMPLETE} recorded {expected['bytes']} "
                                              f"(truncated or rewritten)")
        if file_digest(path, meta.hash_algorithm) != expected["hash"]:
            raise CheckpointVerificationError(f"{path}: content hash differs from the one {COMPLETE} recorded "
                                              f"(bit rot or a modified file)")


def mark_complete(folder: Path, meta: CheckpointMeta) -> None:
    """Write the marker atomically (tmp + rename), after every rank has finished writing its part."""
    tmp = Path(folder) / f".{COMPLETE}.tmp"
    tmp.write_text(json.dumps(asdict(meta)))
    os.replace(tmp, Path(folder) / COMPLETE)


def describe_write_error(folder: Path, err: BaseException) -> str:
    """One line for a failed checkpoint write: the file and the OS's reason, and what would fix it.

    torch's C++ writer reports a full disk only as ``basic_ios::clear``, so the disk is looked at directly.
    """
    failures = getattr(err, "failures", None)  # DCP collects each rank's exception
    if failures:
        first = next(iter(failures.values()))
        err = first[0] if isinstance(first, tuple) else first
    if isinstance(err, OSError) and err.strerror:
        what = f"{err.filename or folder}: {err.strerror}"
    else:
        what = f"{type(err).__name__}: {str(err).strip() or 'no detail'}"
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or free < (1 << 20):
        return (f"{what} (the disk holding {existing} is full: {free} bytes free); free space there or set "
                f"logging.output_dir to a larger disk")
    if not os.access(existing, os.W_OK) or (isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES)):
        return f"{what} ({existing} is not writable: read-only or no permission); make it writable"
    return what


def prepare_step_dir(folder: Path) -> None:
    """Clear a leftover incomplete folder of the same step (a crash mid-save) and create it (rank 0)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def prune(root: Path, keep_last: int, verified: Path) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints, and incomplete folders older than them.

    ``verified`` (the checkpoint just written and hashed back from disk) is never deleted, whatever else is newer.
    """
    complete = complete_checkpoints(root)
    removed = [folder for _, folder in complete[:-keep_last] if folder != Path(verified)]
    newest_kept = complete[-keep_last][0] if len(complete) >= keep_last else (complete[0][0] if complete else -1)
    for child in Path(root).iterdir() if Path(root).is_dir() else ():
        match = STEP_DIR.match(child.name)
        if match and not (child / COMPLETE).is_file() and int(match.group(1)) < newest_kept:
            removed.append(child)
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def rng_state() -> dict[str, Any]:
    """Every RNG stream this rank draws from, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, *rest = state["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_rank_state(folder: Path, rank: int, state: dict[str, Any]) -> None:
    torch.save(state, Path(folder) / f"rank_{rank:05d}.pt")


def load_rank_state(folder: Path, rank: int) -> dict[str, Any] | None:
    """This rank's saved state, or None when the checkpoint came from a smaller world."""
    path = Path(folder) / f"rank_{rank:05d}.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise refuse_unpickling(err, path) from None
