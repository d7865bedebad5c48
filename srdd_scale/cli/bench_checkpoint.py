"""What verified checkpoints cost: hash throughput (s/GB) of sha256 and xxh3-128 over checkpoint files, and the
share of a real DCP checkpoint save that hashing the written files adds. Prints a table, writes JSON.

    python tools/bench_checkpoint.py --out artifacts/bench/bench_checkpoint.json
    python tools/bench_checkpoint.py --save-depth 16     # the d16 save itself (about 3.6 GB of disk and RAM)

The save is of the model's fp32 weights plus AdamW's two moments (what a DDP/FSDP checkpoint holds) into a
temporary folder on ``--dir``'s disk. A depth other than 16 is projected to d16 by size (hashing and writing
are both linear in bytes); the JSON says which was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from srdd_scale.train.checkpoint import file_digest, payload_files
from srdd_scale.utils.rundir import PROJECT_ROOT, bench_provenance
from srdd_scale.cli import entry_point

ALGORITHMS = ("sha256", "xxh3_128")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-depth", type=int, default=8, help="model depth whose checkpoint is saved and hashed")
    parser.add_argument("--repeats", type=int, default=3, help="timed hashes of the files per algorithm")
    parser.add_argument("--dir", default=None, help="where the temporary checkpoint is written (default: TMPDIR)")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_checkpoint-<time>.json)")
    args = parser.parse_args(argv)
    for key in ("save_depth", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}: got {getattr(args, key)}, expected an int >= 1")
    return args


def model_state(depth: int) -> dict[str, dict[str, torch.Tensor]]:
    """fp32 weights and AdamW's exp_avg/exp_avg_sq of a text-conditional model of ``depth`` (VAR-sized)."""
    from srdd_scale.model import ModelConfig, build_model

    model = build_model(ModelConfig(depth=depth), (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 4096, 32, 768)
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    return {"model": weights, "exp_avg": {k: torch.randn_like(v) for k, v in weights.items() if v.is_floating_point()},
            "exp_avg_sq": {k: torch.rand_like(v) for k, v in weights.items() if v.is_floating_point()}}


def checkpoint_bytes(depth: int) -> int:
    """Bytes of the same checkpoint at ``depth``, counted on the meta device (nothing allocated)."""
    from srdd_scale.model import ModelConfig, build_model

    with torch.device("meta"):
        model = build_model(ModelConfig(depth=depth), (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 4096, 32, 768)
    return 3 * sum(v.numel() * v.element_size() for v in model.state_dict().values())


def measure(args: argparse.Namespace) -> dict:
    import torch.distributed.checkpoint as dcp

    state = model_state(args.save_depth)
    folder = Path(tempfile.mkdtemp(prefix="bench_checkpoint.", dir=args.dir))
    try:
        start = time.perf_counter()
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save(state, checkpoint_id=str(folder), no_dist=True)
        os.sync()
        save_s = time.perf_counter() - start
        files = [folder / name for name in payload_files(folder)]
        size = sum(p.stat().st_size for p in files)
        rows = []
        for algorithm in ALGORITHMS:
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for path in files:
                    file_digest(path, algorithm)
                times.append(time.perf_counter() - start)
            hash_s = min(times)
            rows.append({"algorithm": algorithm, "seconds": hash_s, "s_per_gb": hash_s / (size / 1e9),
                         "gb_per_s": size / 1e9 / hash_s, "share_of_save": hash_s / save_s})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    d16 = checkpoint_bytes(16)
    return {"save_depth": args.save_depth, "checkpoint_bytes": size, "save_seconds": save_s,
            "save_gb_per_s": size / 1e9 / save_s, "d16_checkpoint_bytes": d16,
            "d16_projected": args.save_depth != 16, "hashes": rows}


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    print(f"d{result['save_depth']} checkpoint: {result['checkpoint_bytes'] / 1e9:.2f} GB saved in "
          f"{result['save_seconds']:.2f} s ({result['save_gb_per_s']:.2f} GB/s); d16 is "
          f"{result['d16_checkpoint_bytes'] / 1e9:.2f} GB")
    print(f"{'algorithm':<10} {'s/GB':>8} {'GB/s':>8} {'share of save':>14}")
    for row in result["hashes"]:
        print(f"{row['algorithm']:<10} {row['s_per_gb']:>8.3f} {row['gb_per_s']:>8.2f} {row['share_of_save']:>13.1%}")
    out = Path(args.out) if args.out else (PROJECT_ROOT / "artifacts" / "bench" /
                                           f"bench_checkpoint-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "provenance": bench_provenance()}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
