"""Checkpoint layout shared by all backends: ``checkpoints/step_XXXXXXXX/`` with a ``COMPLETE`` marker written last.

A folder without the marker was interrupted mid-write and is never resumed from. Each backend writes its own
payload inside the folder (one file for DDP, a DCP folder for FSDP, DeepSpeed's native folder); this module adds
what every backend shares: per-rank RNG and loader state, the trainer counters, discovery and pruning.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

COMPLETE = "COMPLETE"
STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass(frozen=True)
class CheckpointMeta:
    """Contents of the COMPLETE marker: enough to decide whether and how a checkpoint can be resumed."""

    step: int
    backend: str
    world_size: int
    zero_stage: int
    config_hash: str


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
    return CheckpointMeta(**json.loads((Path(folder) / COMPLETE).read_text()))


def mark_complete(folder: Path, meta: CheckpointMeta) -> None:
    """Write the marker atomically (tmp + rename), after every rank has finished writing its part."""
    tmp = Path(folder) / f".{COMPLETE}.tmp"
    tmp.write_text(json.dumps(asdict(meta)))
    os.replace(tmp, Path(folder) / COMPLETE)


def prepare_step_dir(folder: Path) -> None:
    """Clear a leftover incomplete folder of the same step (a crash mid-save) and create it (rank 0)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints, and incomplete folders older than them."""
    complete = complete_checkpoints(root)
    removed = [folder for _, folder in complete[:-keep_last]]
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
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
