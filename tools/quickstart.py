"""The whole pipeline on the built-in synthetic shapes, sized for ~15 minutes on 2 CPU cores (docs/LOG.md has timings).

    python tools/quickstart.py                    # everything, into outputs/quickstart
    python tools/quickstart.py --out DIR --backend deepspeed
    python tools/quickstart.py --tokenizer runs/tok_shapes64   # reuse a tokenizer trained before (its run folder)

Steps (each one of the project's own tools, run as a subprocess exactly as a user would):
tokenizer -> caption tokenizer -> MDS shards -> 2-process SRDD training (FSDP2 by default, or DeepSpeed ZeRO-2)
-> HF export -> samples for held-out prompts from the export -> prompt accuracy -> summary. A step whose outputs
exist is skipped, so an interrupted quickstart resumes where it stopped (training itself resumes from its
newest checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srdd_scale.run_config import RunConfig  # noqa: E402
from srdd_scale.tokenizer.api import RUN_SUBFOLDER, WEIGHTS_FILE, saved_tokenizer_path  # noqa: E402
from srdd_scale.utils.rundir import run_dir_for  # noqa: E402

QUICKSTART_CONFIG = ROOT / "configs" / "quickstart.yaml"
BACKEND_CONFIGS = {"fsdp": "configs/train/fsdp.yaml", "deepspeed": "configs/train/zero2.yaml",
                   "ddp": "configs/train/ddp.yaml"}


@dataclass
class Step:
    name: str
    command: list[str]
    done: Callable[[], bool]  # true once the step's outputs are complete (then it is skipped)


def run_step(step: Step) -> float:
    if step.done():
        print(f"[quickstart] {step.name}: done already, reusing its outputs")
        return 0.0
    print(f"[quickstart] {step.name}: {' '.join(step.command)}", flush=True)
    start = time.time()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("WANDB_MODE", "offline")
    result = subprocess.run(step.command, cwd=ROOT, env=env)
    if result.returncode != 0 or not step.done():
        sys.exit(f"[quickstart] step '{step.name}' failed (exit {result.returncode}); re-run the same command "
                 f"to resume from here")
    elapsed = time.time() - start
    print(f"[quickstart] {step.name}: finished in {elapsed:.0f} s", flush=True)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/quickstart", help="folder for everything the quickstart makes")
    parser.add_argument("--backend", choices=sorted(BACKEND_CONFIGS), default="fsdp",
                        help="training backend for the 2-process run")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (torchrun --nproc_per_node)")
    parser.add_argument("--tokenizer-minutes", type=float, default=3.0, help="tokenizer training budget")
    parser.add_argument("--tokenizer", help="reuse this trained shapes tokenizer (a folder written by "
                        "tools/train_tokenizer.py) instead of training one")
    parser.add_argument("--steps", type=int, default=None, help="training steps, warmup = 10%% of them (default: configs/quickstart.yaml)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="synthetic training images to pretokenize (default: configs/quickstart.yaml)")
    parser.add_argument("--num-prompts", type=int, default=64, help="held-out prompts sampled and scored")
    args = parser.parse_args(argv)

    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    tok_run, spm = out / "tokenizer", out / "text" / "shapes_spm"
    tokenizer = saved_tokenizer_path(Path(args.tokenizer).resolve()) if args.tokenizer else tok_run / RUN_SUBFOLDER
    if args.tokenizer and not (tokenizer / WEIGHTS_FILE).is_file():
        sys.exit(f"[quickstart] --tokenizer {args.tokenizer}: no {WEIGHTS_FILE} there (expected a run folder of "
                 "tools/train_tokenizer.py or the tokenizer folder inside it)")
    shards_train, shards_heldout = out / "shards" / "train", out / "shards" / "heldout"
    export_dir, samples = out / "export", out / "samples"
    prompts, eval_json = out / "heldout_prompts.jsonl", out / "prompt_accuracy.json"

    overrides = [f"tokenizer.checkpoint={tokenizer}", f"text.tokenizer={spm}.model",
                 f"data.train_path={shards_train}", f"data.heldout_path={shards_heldout}",
                 f"logging.output_dir={out / 'runs'}", "logging.run_name=quickstart"]
    if args.train_images:
        overrides.append(f"data.synthetic_train_samples={args.train_images}")
    if args.steps:
        overrides += [f"train.total_steps={args.steps}", f"train.warmup_steps={args.steps // 10}"]
    train_yaml = [str(QUICKSTART_CONFIG), str(ROOT / BACKEND_CONFIGS[args.backend])]
    cfg = RunConfig.load(train_yaml, overrides)
    run_dir = run_dir_for(cfg, cfg.logging.output_dir, cfg.logging.run_name)
    final_ckpt = run_dir / "checkpoints" / f"step_{cfg.train.total_steps:08d}" / "COMPLETE"

    steps = [
        Step("image tokenizer", [py, "tools/train_tokenizer.py", "configs/tokenizer/shapes_64.yaml",
                                 f"tokenizer_train.max_minutes={args.tokenizer_minutes}", "--output", str(tok_run)],
             lambda: (tokenizer / WEIGHTS_FILE).is_file()),
        Step("caption tokenizer", [py, "tools/train_text_tokenizer.py", "configs/text/shapes_spm.yaml",
                                   "--output", str(spm)],
             lambda: Path(f"{spm}.model").is_file()),
        Step("pretokenize to MDS", [py, "tools/pretokenize.py", str(QUICKSTART_CONFIG), "--output", str(shards_train),
                                    "--heldout-output", str(shards_heldout), *overrides],
             lambda: (shards_train / "stats.json").is_file() and (shards_heldout / "index.json").is_file()),
        Step(f"train ({args.backend}, {args.nproc} processes)",
             [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}", "tools/train.py",
              *train_yaml, *overrides],
             final_ckpt.is_file),
        Step("export to Hugging Face format", [py, "tools/export_hf.py", str(run_dir), str(export_dir), "--overwrite"],
             lambda: (export_dir / "config.json").is_file() and (export_dir / "generation_config.json").is_file()),
        Step("held-out prompts", [py, "tools/evaluate.py", "--write-prompts", str(prompts), "--split", "heldout",
                                  "--count", str(args.num_prompts)],
             prompts.is_file),
        Step("sample from the export", [py, "tools/sample.py", "--model", str(export_dir), "--prompts-file",
                                        str(prompts), "--num", "1", "--seed", "0", "--out", str(samples)],
             lambda: (samples / "grid.png").is_file()),
        Step("prompt accuracy", [py, "tools/evaluate.py", "--prompt-accuracy", str(samples), "--out", str(eval_json),
                                 "--grid", str(out / "prompt_grid.png")],
             eval_json.is_file),
    ]
    start = time.time()
    timings = {step.name: round(run_step(step), 1) for step in steps}
    accuracy = json.loads(eval_json.read_text())
    summary = {
        "wall_time_s": round(time.time() - start, 1),
        "step_time_s": timings,
        "paths": {
            "tokenizer": str(tokenizer), "shards": str(shards_train), "heldout_shards": str(shards_heldout),
            "run_dir": str(run_dir), "checkpoint": str(final_ckpt.parent), "loss_curve": str(run_dir / "plots"),
            "export": str(export_dir), "samples_grid": str(samples / "grid.png"),
            "prompt_grid": str(out / "prompt_grid.png"), "prompt_accuracy": str(eval_json),
        },
        "prompt_accuracy": accuracy.get("prompt_accuracy", accuracy),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"[quickstart] finished in {summary['wall_time_s']:.0f} s; summary written to {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
