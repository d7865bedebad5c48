"""Command-line tools: one module per tool with ``main(argv=None) -> int``, installed as ``srdd-<name>``.

``tools/<name>.py`` are thin shims kept so that ``python tools/<name>.py`` (README, SLURM scripts) still works.
Every ``main`` is wrapped by :func:`entry_point`, so a full disk or a read-only folder ends the tool with one line
naming the path and what to do, instead of a traceback.
"""

from __future__ import annotations

import errno
import functools
import sys
from typing import Callable

# errno -> what the user can do about it (the line also names the path and the system's own message)
OS_ERROR_HINTS = {
    errno.ENOSPC: "free space there, or choose an output folder on another disk",
    errno.EDQUOT: "free space there, or choose an output folder on another disk",
    errno.EROFS: "choose an output folder on a writable file system",
    errno.EACCES: "choose a folder you can write to, or fix its permissions",
    errno.EPERM: "choose a folder you own, or fix its permissions",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.ENOENT: "check the path (relative paths start at the current folder)",
}


def describe_os_error(error: OSError) -> str | None:
    """One line for an OSError the user can fix (path, cause, what to do); None for any other errno."""
    hint = OS_ERROR_HINTS.get(error.errno)
    if hint is None:
        return None
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    where = " -> ".join(paths) if paths else "(the path was not reported)"
    return f"error: {where}: {error.strerror or errno.errorcode[error.errno]}; {hint}"


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
            print(message, file=sys.stderr)
            return 1

    return run


def tool_command(name: str) -> list[str]:
    """The command that runs tool ``name`` in a child process, by module so that it needs no tools/ path."""
    return [sys.executable, "-m", f"srdd_scale.cli.{name}"]
