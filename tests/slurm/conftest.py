"""Shared setup of the SLURM and sweep-launch tests: the trainer tests' real assets (tiny tokenizers + MDS
shards of synthetic shapes) and a skip marker for when no SLURM controller answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from srdd_scale.sweep.launch import slurm_reachable

ROOT = Path(__file__).resolve().parents[2]

# Reuse (not copy) the trainer tests' asset builder: tests run in importlib mode, so load it by path.
_spec = importlib.util.spec_from_file_location("_train_conftest", ROOT / "tests" / "train" / "conftest.py")
train_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_conftest)
train_assets = train_conftest.train_assets
run_tmp = train_conftest.run_tmp

needs_slurm = pytest.mark.skipif(
    not slurm_reachable(), reason="no SLURM controller answers `sinfo` (start one with .ci/slurm_up.sh)"
)


def trainer_overrides(assets: dict[str, str], output_dir: Path, **extra) -> list[str]:
    """The trainer tests' tiny fp32 setup (ddp backend), pointed at ``output_dir``."""
    return train_conftest.base_overrides(assets, output_dir, "ddp", **extra)
