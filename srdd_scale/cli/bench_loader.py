"""Streaming loader throughput: samples/s of build_dataloader (the trainer's reader) over an MDS folder.

    python tools/bench_loader.py                                # random-code shards in VAR's 256 px layout
    python tools/bench_loader.py --data data/shapes/train --workers 0,2 --batch-size 64

Without --data it first writes --samples records with random codes (680 per image: VAR's 256 px schedule)
and 32 caption ids, zstd-compressed as tools/pretokenize.py writes them. Each setting reads the whole split
for --epochs after a warm-up batch; the first-batch latency (shard decompression, worker start) is reported
apart. Prints a table and writes JSON with machine, versions and commit.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from srdd_scale.analysis.bench_kit import Column, print_table, write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import int_list, positive_int
from srdd_scale.data.config import DataConfig
from srdd_scale.data.loader import build_dataloader, release_stale_shared_memory
from srdd_scale.data.mds import META_FILE, SCHEMA_VERSION, open_writer, read_meta, sample_record, write_json
from srdd_scale.model.config import VAR_PATCH_NUMS_256

COLUMNS = (Column("workers", "workers"), Column("batch", "batch_size"), Column("samples", "samples"),
           Column("first batch s", "first_batch_s", ".2f"), Column("samples/s", "samples_per_s", ".0f"))


def write_random_shards(folder: Path, samples: int, text_len: int, seed: int) -> None:
    """MDS shards of random codes/caption ids with a meta.json marking them as random (not trainable data)."""
    rng = np.random.default_rng(seed)
    tokens = sum(p * p for p in VAR_PATCH_NUMS_256)
    with open_writer(folder, size_limit=1 << 22) as writer:
        for i in range(samples):
            writer.write(sample_record(rng.integers(0, 4096, tokens, dtype=np.uint16),
                                       rng.integers(1, 512, text_len, dtype=np.int32), f"random caption {i}",
                                       f"random-{i}", -1, {}))
    write_json(folder / META_FILE, {
        "schema_version": SCHEMA_VERSION, "patch_nums": list(VAR_PATCH_NUMS_256), "image_size": 256,
        "vocab_size": 4096,
        "latent_dim": 32, "tokenizer_identity": "random-codes", "text_tokenizer_identity": "random-ids",
        "max_text_length": text_len, "text_pad_id": 0, "num_samples": samples, "source": "random codes (bench)"})


def bench_setting(folder: Path, workers: int, batch_size: int, epochs: int, seed: int) -> dict:
    """Read the split ``epochs`` times; the first batch (shard decompression, worker start) is timed apart.

    One pass over a stream, not a repeatable call: timed here with perf_counter rather than the kit's Timer,
    whose own warm-up calls would read whole extra epochs."""
    meta = read_meta(folder)
    expected = {"schema_version": meta["schema_version"], "patch_nums": meta["patch_nums"]}
    data_cfg = DataConfig(train_path=str(folder), num_workers=workers)
    loader = build_dataloader(data_cfg, "train", batch_size, seed, expected, num_workers=workers)
    start = time.perf_counter()
    samples = batches = 0
    first_batch_s = None
    for _ in range(epochs):
        for batch in loader:
            if first_batch_s is None:  # warm-up: decompression and worker start-up, timed apart
                first_batch_s = time.perf_counter() - start
                start = time.perf_counter()
                continue
            samples += batch["codes"].shape[0]
            batches += 1
    seconds = time.perf_counter() - start
    release_stale_shared_memory()
    return {"workers": workers, "batch_size": batch_size, "epochs": epochs, "samples": samples,
            "tokens_per_sample": len(batch["codes"][0]), "first_batch_s": first_batch_s,
            "samples_per_s": samples / seconds if seconds > 0 else None, "batches_per_s": batches / seconds}


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="MDS folder with meta.json (default: write random shards)")
    parser.add_argument("--samples", type=positive_int, default=4096, help="records in the random shards")
    parser.add_argument("--text-len", type=positive_int, default=32, help="caption ids per random record")
    parser.add_argument("--workers", type=int_list, default=(0, 2), help="DataLoader worker counts to measure")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--epochs", type=positive_int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_loader-<time>.json)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        os.environ["TMPDIR"] = tmp  # streaming's locks/shared memory names, away from other jobs
        folder = Path(args.data) if args.data else Path(tmp) / "random"
        if not args.data:
            started = time.perf_counter()
            write_random_shards(folder, args.samples, args.text_len, args.seed)
            print(f"wrote {args.samples} random records in {time.perf_counter() - started:.1f} s")
        if not (folder / META_FILE).is_file():
            sys.exit(f"error: {folder}/{META_FILE} missing: expected an MDS folder written by tools/pretokenize.py")
        rows = [bench_setting(folder, workers, args.batch_size, args.epochs, args.seed) for workers in args.workers]
    print_table(rows, COLUMNS)
    write_report({"data": args.data or f"random codes ({args.samples} x 680 tokens)", "results": rows},
                 "bench_loader", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
