"""Distributed trainer: one loop, DDP / FSDP2 / DeepSpeed backends, exact resume (see docs/contracts.md)."""

from __future__ import annotations

from typing import Any


def run(cfg: Any, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train a RunConfig; see :func:`srdd_scale.train.trainer.run` (imported lazily: configs import this package)."""
    from srdd_scale.train.trainer import run as _run

    return _run(cfg, stop_at_step=stop_at_step)
