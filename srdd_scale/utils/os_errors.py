"""One line for the file-system faults a user can fix (full disk, read-only or foreign folder, wrong path):
the path, the system's message and what to do. Shared by every tool's entry point and by writers that turn
such an error into their own one-line error."""

from __future__ import annotations

import errno
from pathlib import Path

# errno -> what the user can do about it
OS_ERROR_HINTS = {
    errno.ENOSPC: "free space there, or choose an output folder on another disk",
    errno.EDQUOT: "free space there, or choose an output folder on another disk",
    errno.EFBIG: "the file outgrew what this file system allows: choose an output folder on another disk",
    errno.EROFS: "choose an output folder on a writable file system",
    errno.EACCES: "choose a folder you can write to, or fix its permissions",
    errno.EPERM: "choose a folder you own, or fix its permissions",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EEXIST: "something is already there: remove it or choose another path",
    errno.ENOENT: "check the path (relative paths start at the current folder)",
}


def describe_os_error(error: OSError, fallback_path: str | Path | None = None) -> str | None:
    """``PATH: system message; what to do`` for an errno in OS_ERROR_HINTS, else None (not a user's fix).

    ``fallback_path`` names the place when the error carries no file name (a write that filled the disk)."""
    hint = OS_ERROR_HINTS.get(error.errno)
    if hint is None:
        return None
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    where = " -> ".join(paths) or (str(fallback_path) if fallback_path is not None else "(path not reported)")
    return f"{where}: {error.strerror or errno.errorcode[error.errno]}; {hint}"
