"""Real file-system faults for the tests: a read-only folder and a tiny full disk, as tmpfs mounts.

Running as root, a chmod'ed folder stays writable, so only a read-only mount gives a true EROFS. Tests that use
these skip (with the reason) where the test process may not mount.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """``folder`` as a tmpfs mounted with ``options`` (e.g. ``ro`` or ``size=64k``) for the ``with`` block."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """An empty folder on a read-only file system (every write raises EROFS)."""
    with tmpfs(tmp_path / "read_only", "ro") as folder:
        yield folder
