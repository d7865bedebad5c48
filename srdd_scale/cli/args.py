"""argparse value types shared by the tools, so that a bad count names its flag and what was expected."""

from __future__ import annotations

import argparse
from typing import Callable, TypeVar

Number = TypeVar("Number", int, float)


def _checked(text: str, convert: Callable[[str], Number], expected: str, valid: Callable[[Number], bool]) -> Number:
    """``convert(text)`` when it parses and is ``valid``; else an error argparse prefixes with the flag's name."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not valid(value):  # `not v > 0` also rejects nan
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer > 0 (counts, sizes, steps)."""
    return _checked(text, int, "a whole number > 0", lambda v: v > 0)


def non_negative_int(text: str) -> int:
    """An integer >= 0, for options where 0 means 'off' or 'all'."""
    return _checked(text, int, "a whole number >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """A number > 0 (durations, budgets, memory sizes)."""
    return _checked(text, float, "a number > 0", lambda v: v > 0)


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers >= 0, e.g. ``0,2`` (worker counts)."""
    return tuple(_checked(v, int, "comma-separated whole numbers >= 0", lambda n: n >= 0) for v in text.split(","))


def positive_int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers > 0 (batch sizes, depths, GPU counts)."""
    return tuple(_checked(v, int, "comma-separated whole numbers > 0", lambda n: n > 0) for v in text.split(","))
