"""Process-group plumbing shared by every launcher: torchrun, plain ``srun`` (SLURM variables), submitit, or alone."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_env(*names: str) -> str | None:
    for name in names:
        if os.environ.get(name) not in (None, ""):
            return os.environ[name]
    return None


def dist_env_from_environ() -> DistEnv:
    """Read rank/world from torchrun's variables, else SLURM's (``srun`` without torchrun), else a single process."""
    rank = _first_env("RANK", "SLURM_PROCID")
    world = _first_env("WORLD_SIZE", "SLURM_NTASKS")
    local_rank = _first_env("LOCAL_RANK", "SLURM_LOCALID")
    local_world = _first_env("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE")
    world_size = int(world) if world else 1
    if local_world and "(" in local_world:  # SLURM writes e.g. "2(x3)" for heterogeneous counts
        local_world = local_world.split("(")[0]
    return DistEnv(
        rank=int(rank) if rank else 0,
        world_size=world_size,
        local_rank=int(local_rank) if local_rank else 0,
        local_world_size=int(local_world) if local_world else world_size,
    )


def _slurm_master_addr() -> str:
    """First host of the SLURM node list (``node[01-04]`` -> ``node01``) via scontrol when it is available."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "127.0.0.1"
    if "[" not in nodelist and "," not in nodelist:
        return nodelist
    import subprocess

    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        return out.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        raise RuntimeError(
            f"cannot resolve the master host from SLURM_JOB_NODELIST={nodelist!r}: set MASTER_ADDR explicitly"
        ) from None


def device_for(env: DistEnv) -> torch.device:
    """This rank's device: its local GPU when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def init_distributed(timeout_minutes: int = 30) -> DistEnv:
    """Join (or create) the default process group: nccl on CUDA, gloo on CPU; a world of 1 also gets a group.

    Launchers: torchrun (RANK...), plain ``srun`` (SLURM_PROCID...; the master is the first node, the port a
    function of the job id), submitit (its TorchDistributedEnvironment), or nothing (one process).

    A single process still gets a 1-rank group so that one code path (collectives, DCP, DeepSpeed) serves every
    launch mode.
    """
    if "SUBMITIT_EXECUTOR" in os.environ and "RANK" not in os.environ:
        # a submitit task (local or SLURM): submitit's helper exports torchrun-style variables for it
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    env = dist_env_from_environ()
    _set_default_env("RANK", str(env.rank))
    _set_default_env("WORLD_SIZE", str(env.world_size))
    _set_default_env("LOCAL_RANK", str(env.local_rank))
    _set_default_env("LOCAL_WORLD_SIZE", str(env.local_world_size))
    if "MASTER_ADDR" not in os.environ:
        _set_default_env("MASTER_ADDR", _slurm_master_addr() if "SLURM_JOB_ID" in os.environ else "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if env.world_size > 1 and "SLURM_JOB_ID" not in os.environ:
            raise RuntimeError("MASTER_PORT is not set for a multi-process job: launch with torchrun or set it")
        # SLURM job ids differ between concurrent jobs on one node, so the port does too
        job = int(os.environ.get("SLURM_JOB_ID", "0"))
        _set_default_env("MASTER_PORT", str(20000 + job % 20000) if job else str(_free_port()))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Launcher variables init_distributed filled in itself. destroy_distributed removes them again so that a tool run
# in-process (a test, a notebook) does not hand RANK/MASTER_PORT to the jobs it launches next (sbatch and submitit
# export the caller's environment, and a stale MASTER_PORT makes their rendezvous fail with EADDRINUSE).
_ENV_WE_SET: list[str] = []


def _set_default_env(name: str, value: str) -> None:
    if name not in os.environ:
        os.environ[name] = value
        _ENV_WE_SET.append(name)


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    while _ENV_WE_SET:
        os.environ.pop(_ENV_WE_SET.pop(), None)


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable, small), in rank order, on every rank; ``[value]`` without a group."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
