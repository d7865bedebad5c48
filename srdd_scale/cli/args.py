"""argparse value types shared by the tools, so that a bad count names its flag and what was expected."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer > 0 (counts, sizes, steps); argparse prefixes the error with the flag's name."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0, for options where 0 means 'off' or 'all'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers, e.g. ``1,2,4``."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def positive_int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers > 0 (batch sizes, depths, worker counts > 0)."""
    values = int_list(text)
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers > 0, got {text!r}")
    return values


def positive_float(text: str) -> float:
    """A number > 0 (durations, budgets, memory sizes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value
