"""Run directories: one per resolved config, holding the config and the provenance of every number in it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from srdd_scale.config import config_hash, save_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRACKED_LIBRARIES = (
    "torch", "deepspeed", "mosaicml-streaming", "transformers", "sentencepiece", "wandb", "submitit",
    "safetensors", "numpy",
)


def run_dir_for(cfg: Any, output_dir: str | Path, run_name: str = "run") -> Path:
    """Deterministic run directory ``<output_dir>/<run_name>-<config hash>`` so a requeued job finds its state."""
    return Path(output_dir) / f"{run_name}-{config_hash(cfg)}"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # torch absent or CUDA driver broken: provenance must never stop a run
        info["cuda_devices"] = []
    return info


def provenance() -> dict[str, Any]:
    """Code version, environment and command line: what modded-nanogpt puts at the top of every log."""
    commit = _git("rev-parse", "HEAD")
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit.strip() if commit else None,
        "git_diff": _git("diff", "HEAD"),
        "libraries": library_versions(),
        "machine": machine_info(),
        "argv": sys.argv,
    }


def bench_provenance() -> dict[str, Any]:
    """What every benchmark JSON records: provenance() without the (long) diff, whether the tree was dirty, and the
    1-minute load average, because CPU rates on a shared machine are only lower bounds."""
    prov = provenance()
    return {**{k: v for k, v in prov.items() if k != "git_diff"}, "git_dirty": bool(prov["git_diff"]),
            "load_average_1m": os.getloadavg()[0]}


def prepare_run_dir(run_dir: str | Path, cfg: Any) -> Path:
    """Create the run directory layout and write config.yaml + provenance.json (rank 0 only)."""
    run_dir = Path(run_dir)
    for sub in ("checkpoints", "samples", "plots"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "provenance.json").write_text(json.dumps(provenance(), indent=2))
    return run_dir
