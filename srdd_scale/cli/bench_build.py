"""Peak host RSS per rank of building and wrapping the model: a whole model on every rank against the backend's
own construction (FSDP2: on ``meta``, shards materialised; ZeRO-3: ``deepspeed.zero.Init``).

    python tools/bench_build.py model.depth=16 --world-size 2 --out bench_build.json

Each (backend, construction) pair runs as its own ``torchrun`` job, so freed memory of one never lowers the next
one's figure. A rank reports the growth of its peak RSS (``utils.peak_memory``) over the model build and over build +
``Backend`` wrap (AdamW state is created lazily, at the first step, and is not included). The model is the
trainer's (``SRDDTask.build_model``) with a tiny tokenizer and text encoder built from the config, so no assets
are needed. Memory does not depend on machine load.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from srdd_scale.analysis.bench_kit import Column, print_table, write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_int

CASES = {  # name -> overrides
    "fsdp": ["parallel.backend=fsdp"],
    "zero3": ["parallel.backend=deepspeed", "parallel.zero_stage=3", "train.non_finite=stop"],
}
# The text encoder and image tokenizer at toy sizes: only the transformer's memory is of interest here.
SMALL_PARTS = ["tokenizer.image_size=32", "tokenizer.ch=8", "tokenizer.ch_mult=[1,2,2]", "tokenizer.num_res_blocks=1",
               "tokenizer.latent_dim=4", "tokenizer.vocab_size=4096", "tokenizer.patch_nums=[1,2,4,8]",
               "tokenizer.norm_groups=4", "text.encoder=tiny_t5", "text.d_model=24", "text.num_heads=2",
               "text.d_ff=32", "text.num_layers=1", "model.num_classes=5", "train.precision=bf16"]
MARK = "BENCH_BUILD "


def _rank(construction: str, overrides: list[str]) -> None:
    """One rank: build as ``construction`` ('whole' or 'backend') says, wrap, print one JSON line."""
    import tempfile

    import torch

    from srdd_scale.run_config import RunConfig
    from srdd_scale.train.backends import build_backend, model_construction, plan_batch
    from srdd_scale.train.task import SRDDTask
    from srdd_scale.utils.dist import destroy_distributed, device_for, init_distributed
    from srdd_scale.utils.peak_memory import PeakMemory

    cfg = RunConfig.load([], overrides)
    env = init_distributed()
    try:
        device = device_for(env)
        task = SRDDTask(cfg, device)
        if cfg.parallel.backend == "deepspeed":
            import deepspeed  # noqa: F401  (its import is in the baseline of both constructions)
        torch.manual_seed(cfg.train.seed)
        place = model_construction(cfg.parallel, cfg.train) if construction == "backend" else contextlib.nullcontext()
        host = torch.device("cpu")
        # nested: the inner region starts where the outer one does, so its reset of the peak loses nothing
        with PeakMemory(host) as whole, tempfile.TemporaryDirectory() as run_dir:
            with PeakMemory(host) as build, place:
                model = task.build_model()
            plan = plan_batch(cfg.train, cfg.parallel, env.world_size)
            build_backend(model, 1e-3, env, device, cfg.train, cfg.parallel, plan, Path(run_dir))
        params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
        print(MARK + json.dumps({"rank": env.rank, "params_m": params / 1e6, "build_gib": build.mib / 1024,
                                 "build_and_wrap_gib": whole.mib / 1024}), flush=True)
    finally:
        destroy_distributed()


def _job(case: str, construction: str, overrides: list[str], world: int, port: int) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}", f"--master_port={port}",
               "-m", "srdd_scale.cli.bench_build", "--rank-job", construction, *SMALL_PARTS, *CASES[case],
               *overrides]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{case}/{construction} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line[len(MARK):]) for line in proc.stdout.splitlines() if line.startswith(MARK)]
    return [{"case": case, "construction": construction, **row} for row in sorted(rows, key=lambda r: r["rank"])]


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config key=value (e.g. model.depth=16)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--world-size", type=positive_int, default=2)
    parser.add_argument("--port", type=positive_int, default=29653)
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_build-<time>.json)")
    parser.add_argument("--rank-job", choices=("whole", "backend"), help=argparse.SUPPRESS)  # internal: one rank
    args = parser.parse_args(argv)
    if args.rank_job:
        _rank(args.rank_job, args.overrides)
        return 0
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; expected some of {', '.join(CASES)}")
    rows = [row for case in cases for construction in ("whole", "backend")
            for row in _job(case, construction, args.overrides, args.world_size, args.port)]
    print_table(rows, [Column("case", "case"), Column("build", "construction"), Column("rank", "rank"),
                       Column("params M", "params_m", ".1f"), Column("build GiB", "build_gib", ".2f"),
                       Column("build+wrap GiB", "build_and_wrap_gib", ".2f")])
    write_report({"overrides": args.overrides, "world_size": args.world_size, "results": rows}, "bench_build",
                 args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
