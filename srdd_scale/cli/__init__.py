"""Command-line tools: one module per tool with ``main(argv=None) -> int``, installed as ``srdd-<name>``.

``tools/<name>.py`` are thin shims kept so that ``python tools/<name>.py`` (README, SLURM scripts) still works.
Every ``main`` is wrapped by :func:`entry_point`, so a full disk or a read-only folder ends the tool with one line
naming the path and what to do, instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

from srdd_scale.utils.os_errors import describe_os_error


def entry_point(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a tool's ``main``: an OSError with a known fix becomes one line on stderr and exit code 1."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except OSError as error:
            message = describe_os_error(error)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            return 1

    return run


def tool_command(name: str) -> list[str]:
    """The command that runs tool ``name`` in a child process, by module so that it needs no tools/ path."""
    return [sys.executable, "-m", f"srdd_scale.cli.{name}"]
