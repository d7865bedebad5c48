"""Tiny trained runs (2 real ranks, 2 steps) of each backend and their exports, shared by the export tests.

The assets and launcher are the trainer tests' own (tests/helpers/training.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from srdd_scale.data.loader import release_stale_shared_memory
from srdd_scale.export.export import export_checkpoint
from tests.helpers.training import base_overrides, launch_ok

# run name -> (backend, extra overrides); ZeRO-3 is the stage whose weights exist only as shards
RUNS = {
    "ddp": ("ddp", {}),
    "fsdp": ("fsdp", {}),
    "deepspeed": ("deepspeed", {"parallel.zero_stage": 3}),
    "fsdp_ema": ("fsdp", {"train.ema_decay": 0.5}),
}


def train_run(assets: dict[str, str], root: Path, name: str) -> Path:
    """Train a d2 model for 2 steps on 2 ranks as RUNS[name] says; returns its run directory."""
    output = root / "runs"
    backend, extra = RUNS[name]
    overrides = base_overrides(assets, output, backend, **{
        "train.total_steps": 2, "train.checkpoint_every": 2, "train.eval_every": 0, **extra})
    launch_ok(overrides, root)
    (run_dir,) = output.glob("run-*")
    return run_dir


@pytest.fixture(scope="session")
def trained(train_assets, tmp_path_factory):
    """run name (RUNS) -> (run_dir, export_dir), built lazily so that a test trains only the runs it uses."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            root = tmp_path_factory.mktemp(f"run_{name}")
            release_stale_shared_memory()  # streaming's prefixes leaked by earlier killed jobs
            try:
                run_dir = train_run(train_assets, root, name)
            finally:
                release_stale_shared_memory()
            cache[name] = (run_dir, export_checkpoint(run_dir, root / "export"))
        return cache[name]

    return get
