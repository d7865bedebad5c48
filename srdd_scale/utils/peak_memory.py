"""Peak memory growth of a code region, in MiB, on CUDA or on Linux CPUs (shared by the bench tools)."""
from __future__ import annotations

from pathlib import Path

import torch


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


class PeakMemory:
    """Peak memory of what runs inside `with`, minus what was in use when it started (`mib`, None if unknown).

    CUDA: torch.cuda.max_memory_allocated. CPU: the process's peak RSS (VmHWM, reset through
    /proc/self/clear_refs) minus its RSS at entry. Freed CPU memory stays in the allocator, so measure each
    setting in a fresh process for figures that do not depend on what ran before.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None
        self.base: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
                self.base = _status_kib("VmRSS") * 1024
            except (OSError, RuntimeError):  # not Linux, or not allowed: report no memory figure
                self.base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.base is None:
            return
        else:
            # the kernel syncs its per-thread RSS counters lazily, so VmHWM can read a little below the VmRSS
            # taken at entry: a peak is never below where the window started
            peak = max(_status_kib("VmHWM") * 1024, self.base)
        self.mib = (peak - self.base) / 2**20
