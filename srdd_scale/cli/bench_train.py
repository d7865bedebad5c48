"""Training throughput (tokens/s, images/s) and MFU per backend and depth, through the real trainer.

Writes its own assets first (a small random image tokenizer with the chosen patch schedule, a sentencepiece
model, MDS shards of random codes), then for every (backend, depth) starts ``--world`` ranks with torchrun,
times ``--steps`` optimizer steps after ``--warmup`` and prints + writes one JSON record per combination.

CPU, 2 processes (this machine):
    python tools/bench_train.py --preset cpu --out bench_train_cpu.json
One GPU, bf16, d16 and d24 at 256 px (VAR's 680-token schedule; about 6 minutes on one H100):
    python tools/bench_train.py --preset gpu --out bench_train_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from srdd_scale.analysis.bench_kit import Column, print_table, write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int, positive_int
from srdd_scale.model.config import VAR_PATCH_NUMS_256
from srdd_scale.utils.rundir import PROJECT_ROOT as ROOT

COLUMNS = (Column("backend", "backend"), Column("depth", "depth"), Column("ranks", "world_size"),
           Column("tokens/s", "tokens_per_s", ".0f"), Column("MFU", "mfu", ".2%"),
           Column("peak GiB", "peak_memory_gib", ".2f"), Column("wall s", "wall_seconds_incl_startup", ".0f"))
PRESETS = {
    "cpu": dict(world=2, backends=["ddp", "fsdp", "zero1", "zero2", "zero3"], depths=[2, 4], patch_nums=[1, 2, 4, 8],
                image_size=16, micro_batch=4, steps=6, warmup=2, precision="fp32", samples=256),
    "gpu": dict(world=1, backends=["ddp", "fsdp", "zero2"], depths=[16, 24], patch_nums=list(VAR_PATCH_NUMS_256),
                image_size=256, micro_batch=32, steps=12, warmup=4, precision="bf16", samples=4096),
}
BACKEND_OVERRIDES = {
    "ddp": ["parallel.backend=ddp"],
    "fsdp": ["parallel.backend=fsdp"],
    "zero1": ["parallel.backend=deepspeed", "parallel.zero_stage=1", "train.non_finite=stop"],
    "zero2": ["parallel.backend=deepspeed", "parallel.zero_stage=2", "train.non_finite=stop"],
    "zero3": ["parallel.backend=deepspeed", "parallel.zero_stage=3", "train.non_finite=stop"],
}


def write_assets(folder: Path, patch_nums: list[int], image_size: int, samples: int) -> list[str]:
    """Random-code shards for a small random tokenizer with the real schedule; returns config overrides."""
    import numpy as np
    import torch

    from srdd_scale.data.mds import META_FILE, open_writer, sample_record, tokenizer_meta, write_json
    from srdd_scale.data.shapes import iter_shapes
    from srdd_scale.text import TextConfig, load_text_tokenizer, train_sentencepiece
    from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, save_tokenizer

    downsample = image_size // patch_nums[-1]
    levels = downsample.bit_length()  # ch_mult length: downsample == 2 ** (levels - 1)
    tok_cfg = TokenizerConfig(image_size=image_size, ch=16, ch_mult=tuple([1] * (levels - 1) + [2]),
                              num_res_blocks=1, latent_dim=32, vocab_size=4096, patch_nums=tuple(patch_nums),
                              norm_groups=8)
    torch.manual_seed(0)
    tokenizer = build_tokenizer(tok_cfg)
    save_tokenizer(tokenizer, folder / "tokenizer")
    captions = [s.caption for s in iter_shapes("train", seed=0, image_size=64, count=samples)]
    spm = train_sentencepiece(captions, folder / "spm", vocab_size=256)
    text_cfg = TextConfig(tokenizer=str(spm), encoder="tiny_t5", vocab_size=256)
    text_tokenizer = load_text_tokenizer(text_cfg)
    text_ids = text_tokenizer.encode(captions)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, tok_cfg.vocab_size, size=(samples, sum(p * p for p in patch_nums)), dtype=np.uint16)
    with open_writer(folder / "train", size_limit=1 << 24) as writer:
        for i in range(samples):
            writer.write(sample_record(codes[i], text_ids[i], captions[i], str(i), -1, {}))
    write_json(folder / "train" / META_FILE, {**tokenizer_meta(tokenizer, text_tokenizer), "num_samples": samples,
                                              "source": "random codes (bench)"})
    tok_keys = {"image_size": image_size, "ch": 16, "ch_mult": list(tok_cfg.ch_mult), "num_res_blocks": 1,
                "latent_dim": 32, "vocab_size": 4096, "patch_nums": list(patch_nums), "norm_groups": 8,
                "checkpoint": str(folder / "tokenizer")}
    return ([f"tokenizer.{k}={json.dumps(v)}" for k, v in tok_keys.items()]
            + [f"text.tokenizer={spm}", "text.vocab_size=256", f"data.image_size={image_size}",
               f"data.train_path={folder / 'train'}", "data.heldout_path=", "data.num_workers=1"])


def worker(args: argparse.Namespace) -> None:
    """One rank: the trainer's own setup and train_step, timed without checkpoints or logging."""
    from srdd_scale.analysis.bench_kit import time_call
    from srdd_scale.run_config import RunConfig
    from srdd_scale.train.callbacks.speed import SpeedMonitor, peak_memory_gib
    from srdd_scale.train.trainer import Trainer
    from srdd_scale.utils.dist import destroy_distributed, device_for, init_distributed

    cfg = RunConfig.load([], args.overrides)
    env = init_distributed()
    try:
        trainer = Trainer(cfg, env, device_for(env))
        speed = SpeedMonitor()  # its FLOP count and peak FLOP/s, so that MFU matches the trainer's logs
        speed.on_train_start(trainer.state())
        batches = trainer.micro_batches()
        losses = []
        def step_and_read_back() -> None:  # as a run that logs every step: the read-back waits for the device
            trainer.train_step(batches)
            losses.append(trainer.settle()[0].metrics["loss"])

        timing = time_call(step_and_read_back, warmup=args.warmup, calls=args.steps)
        if env.is_main:
            images_per_s = cfg.train.global_batch_size / timing.seconds
            summary = {
                "images_per_s": images_per_s,
                "tokens_per_s": images_per_s * trainer.task.tokens_per_image,
                "mfu": images_per_s * speed.flops_per_image / speed.cluster_peak,
                "peak_memory_gib": peak_memory_gib(trainer.device),
                "final_loss": losses[-1],
                "grad_accum_steps": trainer.plan.grad_accum_steps,
            }
            Path(args.result).write_text(json.dumps(summary))
    finally:
        destroy_distributed()


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--backends", nargs="+", choices=sorted(BACKEND_OVERRIDES), help="override the preset")
    parser.add_argument("--depths", nargs="+", type=positive_int, help="override the preset")
    parser.add_argument("--steps", type=positive_int, help="timed optimizer steps (override the preset)")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_train-<time>.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=non_negative_int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    preset = dict(PRESETS[args.preset])
    for key in ("backends", "depths", "steps"):
        if getattr(args, key):
            preset[key] = getattr(args, key)
    records = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp_path = Path(tmp)
        data_overrides = write_assets(tmp_path / "assets", preset["patch_nums"], preset["image_size"],
                                      preset["samples"])
        for depth in preset["depths"]:
            for backend in preset["backends"]:
                global_batch = preset["micro_batch"] * preset["world"]
                overrides = data_overrides + BACKEND_OVERRIDES[backend] + [
                    f"model.depth={depth}", f"train.precision={preset['precision']}",
                    f"train.global_batch_size={global_batch}", f"parallel.micro_batch_size={preset['micro_batch']}",
                    f"train.total_steps={preset['warmup'] + preset['steps']}", "train.warmup_steps=1",
                    f"logging.output_dir={tmp_path / 'runs'}", f"logging.run_name={backend}-d{depth}",
                    "logging.wandb_mode=disabled",
                ]
                result = tmp_path / f"{backend}-d{depth}.json"
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={preset['world']}", "-m", "srdd_scale.cli.bench_train", "--worker",
                           f"--warmup={preset['warmup']}", f"--steps={preset['steps']}", f"--result={result}",
                           *overrides]
                env = dict(os.environ, TMPDIR=str(tmp_path), DS_ACCELERATOR=os.environ.get(
                    "DS_ACCELERATOR", "cuda" if preset["precision"] == "bf16" else "cpu"), PYTHONPATH=str(ROOT))
                started = time.perf_counter()
                proc = subprocess.run(command, env=env, capture_output=True, text=True)
                record = {"backend": backend, "depth": depth, "world_size": preset["world"],
                          "micro_batch": preset["micro_batch"], "precision": preset["precision"],
                          "tokens_per_image": sum(p * p for p in preset["patch_nums"]),
                          "wall_seconds_incl_startup": round(time.perf_counter() - started, 1)}
                if proc.returncode == 0 and result.exists():
                    record.update(json.loads(result.read_text()))
                else:
                    record["error"] = (proc.stdout + proc.stderr)[-3000:]
                print(f"{backend} d{depth}: {'failed' if 'error' in record else 'ok'}", flush=True)
                records.append(record)
    print_table(records, COLUMNS)
    write_report({"preset": args.preset, "settings": preset, "records": records}, "bench_train", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
