"""Benchmark the image tokenizer: encode and decode images/s per config and batch size. Prints a table, writes JSON.

    python tools/bench_tokenizer.py --out artifacts/bench/bench_tokenizer.json
    python tools/bench_tokenizer.py --configs configs/tokenizer/shapes_64.yaml --batch-sizes 1,16,64

Weights are random (speed does not depend on them); `--checkpoint` benchmarks a saved tokenizer instead.
On CPU the VAR 256 px config is measured at small batches only (it takes seconds per image on 2 cores).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from pathlib import Path

import torch

from srdd_scale.analysis.bench_kit import Column, print_table, time_call, write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_int, positive_int_list
from srdd_scale.config import load_config
from srdd_scale.tokenizer import build_tokenizer, load_tokenizer
from srdd_scale.tokenizer.config import TokenizerRunConfig
from srdd_scale.utils.rundir import PROJECT_ROOT

DEFAULT_CONFIGS = ("configs/tokenizer/shapes_64.yaml", "configs/tokenizer/var_256.yaml")
COLUMNS = (Column("config", "config"), Column("px", "image_size"), Column("batch", "batch_size"),
           Column("encode img/s", "encode_images_per_s", ".3g"), Column("decode img/s", "decode_images_per_s", ".3g"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated tokenizer YAMLs")
    parser.add_argument("--checkpoint", default=None, help="benchmark this saved tokenizer instead of --configs")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=(1, 16, 64, 256) if cuda else (1, 8, 32),
                        help="batch sizes for configs up to 64 px")
    parser.add_argument("--large-batch-sizes", type=positive_int_list, default=(1, 8, 32) if cuda else (1, 2),
                        help="batch sizes for configs above 64 px (VAR 256)")
    parser.add_argument("--repeats", type=positive_int, default=5 if cuda else 2, help="timed calls per measurement")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16" if cuda else "fp32")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_tokenizer-<time>.json)")
    return parser.parse_args(argv)


def bench_one(name: str, tokenizer, batch_sizes, repeats: int, device: torch.device, precision: str) -> list[dict]:
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    rows = []
    generator = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        images = (torch.rand(batch, 3, tokenizer.image_size, tokenizer.image_size, generator=generator) * 2 - 1
                  ).to(device)
        with autocast:
            indices = tokenizer.encode(images)
            encode = time_call(functools.partial(tokenizer.encode, images), calls=repeats)
            decode = time_call(functools.partial(tokenizer.decode, indices), calls=repeats)
        rows.append({"config": name, "image_size": tokenizer.image_size, "batch_size": batch,
                     "tokens_per_image": tokenizer.tokens_per_image,
                     "params_m": round(sum(p.numel() for p in tokenizer.parameters()) / 1e6, 2),
                     "encode_images_per_s": batch / encode.seconds, "decode_images_per_s": batch / decode.seconds})
    return rows


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.checkpoint:
        tokenizers = [(Path(args.checkpoint).name, load_tokenizer(args.checkpoint))]
    else:
        torch.manual_seed(0)
        tokenizers = [(Path(p).stem, build_tokenizer(load_config([PROJECT_ROOT / p], [], TokenizerRunConfig).tokenizer))
                      for p in args.configs.split(",")]
    rows = []
    for name, tokenizer in tokenizers:
        tokenizer = tokenizer.to(device).eval()
        sizes = args.batch_sizes if tokenizer.image_size <= 64 else args.large_batch_sizes
        rows += bench_one(name, tokenizer, sizes, args.repeats, device, args.precision)
    print_table(rows, COLUMNS)
    write_report({"device": str(device), "precision": args.precision, "threads": torch.get_num_threads(),
                  "repeats": args.repeats, "results": rows}, "bench_tokenizer", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
