"""Rank-aware logging: every line says which rank wrote it, and progress bars show on rank 0 only."""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def current_rank() -> int:
    """Global rank from torchrun's or SLURM's environment (0 when launched alone)."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def get_logger(name: str = "srdd_scale", level: int = logging.INFO) -> logging.Logger:
    """A logger whose lines carry ``[rank N]``; configured once per process."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s [rank {current_rank()}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return logger


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """tqdm that is silent on every rank but 0, so N processes do not print N bars."""
    kwargs.setdefault("disable", current_rank() != 0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
