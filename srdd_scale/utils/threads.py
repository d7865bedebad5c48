"""How many CPU threads a stage may use on a machine that other work shares, and an OpenMP wait that yields.

With more threads than free cores, every parallel region waits for the thread that lost its core, and under
OpenMP's default wait the other threads spin meanwhile: on this shared 2-core machine (load average ~10) the
image tokenizer with 2 threads burnt ~10x the CPU per step of 1 thread and ran ~25x slower (docs/LOG.md). A passive wait
sleeps instead of spinning, and a thread count that follows the free cores avoids most of the waiting.
"""
from __future__ import annotations

import os
from typing import Mapping, MutableMapping, Optional

WAIT_POLICY_VAR = "OMP_WAIT_POLICY"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_cores(load: Optional[float] = None) -> int:
    """Usable cores minus those the 1-minute load average says are busy; at least 1."""
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, usable_cores() - int(round(load)))


def stage_threads(requested: Optional[int], load: Optional[float] = None) -> int:
    """Threads for one stage: an explicit request as asked (results depend on the count, so a config that
    names one must get it), or, for None, the cores free now."""
    return requested if requested else free_cores(load)


def with_passive_wait(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` for a child process whose OpenMP threads sleep, not spin, while they wait.

    OpenMP reads the policy once, when torch first loads it, so it must be in the environment before the
    child starts; a value the user set is kept.
    """
    child = dict(env)
    child.setdefault(WAIT_POLICY_VAR, "PASSIVE")
    return child


def use_passive_wait(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the passive wait for this process; call it in a CLI entry point before anything imports torch."""
    environ.setdefault(WAIT_POLICY_VAR, "PASSIVE")
