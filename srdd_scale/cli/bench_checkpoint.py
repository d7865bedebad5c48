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
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from srdd_scale.analysis.bench_kit import Column, print_table, write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_int
from srdd_scale.model.config import VAR_PATCH_NUMS_256
from srdd_scale.train.checkpoint import file_digest, payload_files

ALGORITHMS = ("sha256", "xxh3_128")
COLUMNS = (Column("algorithm", "algorithm"), Column("s/GB", "s_per_gb", ".3f"), Column("GB/s", "gb_per_s", ".2f"),
           Column("share of save", "share_of_save", ".1%"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-depth", type=positive_int, default=8,
                        help="model depth whose checkpoint is saved and hashed")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed hashes of the files per algorithm")
    parser.add_argument("--dir", default=None, help="where the temporary checkpoint is written (default: TMPDIR)")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_checkpoint-<time>.json)")
    return parser.parse_args(argv)


def model_state(depth: int) -> dict[str, dict[str, torch.Tensor]]:
    """fp32 weights and AdamW's exp_avg/exp_avg_sq of a text-conditional model of ``depth`` (VAR-sized)."""
    from srdd_scale.model import ModelConfig, build_model

    model = build_model(ModelConfig(depth=depth), VAR_PATCH_NUMS_256, 4096, 32, 768)
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    return {"model": weights, "exp_avg": {k: torch.randn_like(v) for k, v in weights.items() if v.is_floating_point()},
            "exp_avg_sq": {k: torch.rand_like(v) for k, v in weights.items() if v.is_floating_point()}}


def checkpoint_bytes(depth: int) -> int:
    """Bytes of the same checkpoint at ``depth`` (fp32 weights + two moments), from the parameter count."""
    from srdd_scale.model import ModelConfig
    from srdd_scale.model.flops import parameter_counts

    return 3 * 4 * parameter_counts(ModelConfig(depth=depth), VAR_PATCH_NUMS_256, 4096, 32, 768)["total"]


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
    print_table(result["hashes"], COLUMNS)
    write_report(result, "bench_checkpoint", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
