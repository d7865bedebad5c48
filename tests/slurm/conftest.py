"""Shared setup of the SLURM and sweep-launch tests: the trainer tests' real assets (tiny tokenizers + MDS
shards of synthetic shapes) and a skip marker for when no SLURM controller answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from srdd_scale.sweep.launch import slurm_reachable
from tests.helpers.training import base_overrides

ROOT = Path(__file__).resolve().parents[2]

needs_slurm = pytest.mark.skipif(
    not slurm_reachable(), reason="no SLURM controller answers `sinfo` (start one with .ci/slurm_up.sh)"
)


def trainer_overrides(assets: dict[str, str], output_dir: Path, **extra) -> list[str]:
    """The trainer tests' tiny fp32 setup (ddp backend), pointed at ``output_dir``."""
    return base_overrides(assets, output_dir, "ddp", **extra)
