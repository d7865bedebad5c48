"""Command-line tools: one module per tool with ``main(argv=None) -> int``, installed as ``srdd-<name>``.

``tools/<name>.py`` are thin shims kept so that ``python tools/<name>.py`` (README, SLURM scripts) still works.
"""

from __future__ import annotations

import sys


def tool_command(name: str) -> list[str]:
    """The command that runs tool ``name`` in a child process, by module so that it needs no tools/ path."""
    return [sys.executable, "-m", f"srdd_scale.cli.{name}"]
