"""The whole pipeline on the built-in synthetic shapes, sized for ~15 minutes on 2 idle CPU cores (README).

    python tools/quickstart.py                    # everything, into outputs/quickstart
    python tools/quickstart.py --out DIR --backend deepspeed
    python tools/quickstart.py --tokenizer runs/tok_shapes64   # reuse a tokenizer trained before (its run folder)

Stages: image tokenizer -> caption tokenizer -> MDS shards -> 2-process SRDD training (FSDP2 by default, or
DeepSpeed ZeRO-2) -> HF export -> samples for held-out prompts from the export -> prompt accuracy -> summary
(terminal, OUT/summary.md, OUT/summary.png). The training stages run the project's own tools as subprocesses,
exactly as a user would. A stage whose outputs exist is skipped, so an interrupted quickstart resumes where it
stopped (training itself resumes from its newest checkpoint).

Budgets are steps and images, not minutes: a busy machine makes the run slower, never worse, and the same seed
gives the same files bit for bit (every stage computes with one thread per process; `--threads auto` trades
that for speed on an idle machine). `--tokenizer-minutes` restores a wall-clock tokenizer budget.
After each stage a gate checks its output against a stated floor (srdd_scale/quickstart/gates.py) and stops
the run with the figure, the floor, the likely cause and how to resume; `--no-gates` goes on regardless.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from srdd_scale.utils.threads import stage_threads, usable_cores, use_passive_wait, with_passive_wait

use_passive_wait()  # OpenMP reads it once, when torch loads: before the imports below bring torch in

from srdd_scale.cli import entry_point, tool_command  # noqa: E402
from srdd_scale.quickstart import gates  # noqa: E402
from srdd_scale.quickstart.summary import summary_figure, summary_markdown  # noqa: E402
from srdd_scale.run_config import RunConfig  # noqa: E402
from srdd_scale.tokenizer.api import RUN_SUBFOLDER, WEIGHTS_FILE, saved_tokenizer_path  # noqa: E402
from srdd_scale.utils.rundir import run_dir_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_CONFIG = ROOT / "configs" / "quickstart.yaml"
TOKENIZER_CONFIG = ROOT / "configs" / "tokenizer" / "shapes_64.yaml"
BACKEND_CONFIGS = {"fsdp": "configs/train/fsdp.yaml", "deepspeed": "configs/train/zero2.yaml",
                   "ddp": "configs/train/ddp.yaml"}
# ~7 steps/s with one thread on an idle core (bf16, batch 8): about 3 minutes, ~22 dB held-out (docs/LOG.md)
TOKENIZER_STEPS = 1200
SAMPLE_SEED = 0
SAMPLE_BATCH = 16


class GateStop(Exception):
    """A stage's output missed its floor; the message says which, why, and how to resume."""


@dataclass
class Stage:
    name: str
    run: Callable[[], None]
    done: Callable[[], bool]  # true once the stage's outputs are complete (then it is skipped)
    gate: Optional[Callable[[], gates.GateResult]] = None


class Runner:
    """Runs the stages in order: skip finished ones, time the rest, check each gate."""

    def __init__(self, threads: str, use_gates: bool):
        self.threads, self.use_gates = threads, use_gates
        self.stage_time_s: dict[str, float] = {}
        self.gate_results: list[gates.GateResult] = []

    def threads_now(self, processes: int = 1) -> int:
        """Threads per process for a stage starting now: fixed, or (`auto`) the free cores shared out."""
        if self.threads != "auto":
            return int(self.threads)
        return max(1, stage_threads(None) // processes)

    def child_env(self, processes: int = 1) -> dict[str, str]:
        env = with_passive_wait(os.environ)
        env.update(PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS=str(self.threads_now(processes)))
        env.setdefault("WANDB_MODE", "offline")
        return env

    def subprocess(self, command: list[str], processes: int = 1) -> Callable[[], None]:
        def run() -> None:
            print(f"[quickstart]   $ {' '.join(command)}", flush=True)
            result = subprocess.run(command, cwd=ROOT, env=self.child_env(processes))
            if result.returncode != 0:
                raise RuntimeError(f"exit code {result.returncode}")
        return run

    def run(self, stage: Stage) -> None:
        if stage.done():
            print(f"[quickstart] {stage.name}: done already, reusing its outputs", flush=True)
            self.stage_time_s[stage.name] = 0.0
        else:
            print(f"[quickstart] {stage.name}", flush=True)
            start = time.time()
            try:
                stage.run()
            except Exception as err:  # noqa: BLE001 - reported with the way to resume, then the run stops
                raise SystemExit(f"[quickstart] stage '{stage.name}' failed ({err}); re-run the same command to "
                                 "resume from here") from err
            if not stage.done():
                raise SystemExit(f"[quickstart] stage '{stage.name}' ended without its outputs; re-run the same "
                                 "command to resume from here")
            self.stage_time_s[stage.name] = round(time.time() - start, 1)
            print(f"[quickstart] {stage.name}: finished in {self.stage_time_s[stage.name]:.0f} s", flush=True)
        if stage.gate is None:
            return
        result = replace(stage.gate(), stage=stage.name)
        self.gate_results.append(result)
        for check in result.checks:
            print(f"[quickstart]   gate: {check.describe()}", flush=True)
        if not result.passed:
            if self.use_gates:
                raise GateStop(result.message())
            print(result.message().replace("stopped the pipeline", "missed (--no-gates: going on)"), flush=True)


def heldout_captions(cfg) -> list[str]:
    from srdd_scale.data.shapes import iter_shapes

    return [s.caption for s in iter_shapes("heldout", cfg.data.seed, cfg.data.image_size,
                                           count=cfg.data.synthetic_heldout_samples)]


def shard_codes(folder: Path):
    """Every sample's flattened codes in an MDS folder, read with streaming as the trainer reads them."""
    from streaming import StreamingDataset

    dataset = StreamingDataset(local=str(folder), remote=None, batch_size=1, shuffle=False)
    for index in range(len(dataset)):
        yield dataset[index]["codes"]


def unigram_baseline(shards_train: Path, shards_heldout: Path, cache: Path) -> dict[str, float]:
    """gates.unigram_baseline of the shards, cached next to them (reading 8k samples takes a few seconds)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from srdd_scale.data.mds import read_meta

    meta = read_meta(shards_train)
    counts = [gates.per_scale_counts(shard_codes(folder), meta["patch_nums"], meta["vocab_size"])
              for folder in (shards_train, shards_heldout)]
    baseline = gates.unigram_baseline(*counts)
    cache.write_text(json.dumps(baseline, indent=2))
    return baseline


def write_heldout_prompts(cfg, path: Path, count: int) -> None:
    """Held-out captions with their attrs, the prompts file tools/sample.py reads."""
    from srdd_scale.data.shapes import iter_shapes

    lines = [json.dumps({"prompt": s.caption, "attrs": s.attrs})
             for s in iter_shapes("heldout", SAMPLE_SEED, cfg.data.image_size, count=count)]
    path.write_text("\n".join(lines) + "\n")


def score_samples(samples: Path, out_json: Path, grid: Path) -> None:
    """Prompt accuracy of the samples (the shapes analyser) and a captioned grid, green where all is right."""
    from PIL import Image

    from srdd_scale.eval.grid import captioned_grid
    from srdd_scale.eval.prompt_accuracy import prompt_accuracy
    from srdd_scale.eval.samples import read_samples_index

    records = read_samples_index(samples)
    images = [Image.open(r["path"]).convert("RGB") for r in records]
    result = prompt_accuracy(zip(images, [r["attrs"] for r in records]), keep_details=True)
    details = result.pop("details")
    captioned_grid(images, [r["prompt"] for r in records], correct=[d["all_correct"] for d in details]).save(grid)
    out_json.write_text(json.dumps(result, indent=2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/quickstart", help="folder for everything the quickstart makes")
    parser.add_argument("--backend", choices=sorted(BACKEND_CONFIGS), default="fsdp",
                        help="training backend for the 2-process run")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (torchrun --nproc_per_node)")
    parser.add_argument("--tokenizer-steps", type=int, default=TOKENIZER_STEPS,
                        help=f"image tokenizer optimizer steps (default {TOKENIZER_STEPS}, ~3 min on an idle core)")
    parser.add_argument("--tokenizer-minutes", type=float, default=None,
                        help="opt-in wall-clock budget for the image tokenizer (stops at whichever of steps and "
                        "minutes comes first; the result then depends on the machine's load)")
    parser.add_argument("--tokenizer", help="reuse this trained shapes tokenizer (a folder written by "
                        "tools/train_tokenizer.py) instead of training one")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps, warmup = 10%% of them (default: configs/quickstart.yaml)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="synthetic training images to pretokenize (default: configs/quickstart.yaml)")
    parser.add_argument("--num-prompts", type=int, default=64, help="held-out prompts sampled and scored")
    parser.add_argument("--threads", default="1",
                        help="threads per process: a number, or 'auto' to follow the free cores (faster on an "
                        "idle machine, but a sum split over 2 threads rounds differently, so not bit-identical)")
    parser.add_argument("--no-gates", action="store_true", help="report missed quality floors but go on")
    args = parser.parse_args(argv)
    if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) >= 1):
        parser.error(f"--threads {args.threads}: expected a positive integer or 'auto'")
    return args


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    tok_run, spm = out / "tokenizer", out / "text" / "shapes_spm"
    tokenizer = saved_tokenizer_path(Path(args.tokenizer).resolve()) if args.tokenizer else tok_run / RUN_SUBFOLDER
    if args.tokenizer and not (tokenizer / WEIGHTS_FILE).is_file():
        print(f"[quickstart] --tokenizer {args.tokenizer}: no {WEIGHTS_FILE} there (expected a run folder of "
              "tools/train_tokenizer.py or the tokenizer folder inside it)", file=sys.stderr)
        return 2
    shards_train, shards_heldout = out / "shards" / "train", out / "shards" / "heldout"
    export_dir, samples = out / "export", out / "samples"
    prompts, eval_json = out / "heldout_prompts.jsonl", out / "prompt_accuracy.json"
    prompt_grid = out / "prompt_grid.png"

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
    runner = Runner(args.threads, use_gates=not args.no_gates)

    def tokenizer_gate() -> gates.GateResult:
        final_metrics = tokenizer.parent / "final_metrics.json"
        if not final_metrics.is_file():  # a reused tokenizer folder without its run's metrics: nothing to check
            return gates.GateResult("image tokenizer", [], "", "")
        budget = (f"a {args.tokenizer_minutes}-minute budget spent on a busy machine"
                  if args.tokenizer_minutes else f"too few steps ({args.tokenizer_steps})")
        return gates.tokenizer_gate(final_metrics, f"{budget}, or a learning rate that collapses the codebook",
                                    f"delete {tok_run} and re-run with more --tokenizer-steps (default "
                                    f"{TOKENIZER_STEPS}), or pass --tokenizer with a better one")

    def caption_gate() -> gates.GateResult:
        from srdd_scale.text import load_text_tokenizer

        coverage = gates.caption_coverage(load_text_tokenizer(cfg.text), heldout_captions(cfg))
        return gates.caption_gate(coverage, f"delete {spm}.model and re-run")

    def pretokenize_gate() -> gates.GateResult:
        from srdd_scale.data.pretokenize import read_stats

        return gates.pretokenize_gate(read_stats(shards_train), cfg.data.synthetic_train_samples,
                                      f"delete {out / 'shards'} and re-run")

    def training_gate() -> gates.GateResult:
        from srdd_scale.train.callbacks.loggers import read_metrics

        records = read_metrics(run_dir)
        first_loss = next(r["loss"] for r in records if "loss" in r)
        eval_losses = [(r["step"], r["eval/loss"]) for r in records if "eval/loss" in r]
        baseline = unigram_baseline(shards_train, shards_heldout, out / "shards" / "unigram_baseline.json")
        return gates.training_gate(first_loss, eval_losses, baseline,
                                   f"re-run with more --steps (resumes from the last checkpoint into a new run "
                                   f"folder), or retrain the tokenizer if the code entropy is low ({tok_run})")

    def export() -> None:
        from srdd_scale.export.export import export_checkpoint

        export_checkpoint(run_dir, export_dir, overwrite=True)

    train_command = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                     "-m", "srdd_scale.cli.train", *train_yaml, *overrides]
    tokenizer_budget = [f"tokenizer_train.steps={args.tokenizer_steps}",
                        f"tokenizer_train.max_minutes={args.tokenizer_minutes or 'null'}"]
    stages = [
        Stage("image tokenizer",
              lambda: runner.subprocess([*tool_command("train_tokenizer"), str(TOKENIZER_CONFIG), *tokenizer_budget,
                                         f"tokenizer_train.num_threads={runner.threads_now()}",
                                         "--output", str(tok_run)])(),
              lambda: (tokenizer / WEIGHTS_FILE).is_file(), tokenizer_gate),
        Stage("caption tokenizer",
              runner.subprocess([*tool_command("train_text_tokenizer"), "configs/text/shapes_spm.yaml",
                                 "--output", str(spm)]),
              lambda: Path(f"{spm}.model").is_file(), caption_gate),
        Stage("pretokenize to MDS",
              runner.subprocess([*tool_command("pretokenize"), str(QUICKSTART_CONFIG), "--output", str(shards_train),
                                 "--heldout-output", str(shards_heldout), *overrides]),
              lambda: (shards_train / "stats.json").is_file() and (shards_heldout / "index.json").is_file(),
              pretokenize_gate),
        Stage(f"train ({args.backend}, {args.nproc} processes)",
              lambda: runner.subprocess(train_command, processes=args.nproc)(), final_ckpt.is_file, training_gate),
        Stage("export to Hugging Face format", export,
              lambda: (export_dir / "config.json").is_file() and (export_dir / "generation_config.json").is_file()),
        Stage("held-out prompts", lambda: write_heldout_prompts(cfg, prompts, args.num_prompts), prompts.is_file),
        Stage("sample from the export",
              runner.subprocess([*tool_command("sample"), "--model", str(export_dir), "--prompts-file", str(prompts),
                                 "--num", "1", "--seed", str(SAMPLE_SEED), "--batch-size", str(SAMPLE_BATCH),
                                 "--out", str(samples)]),
              lambda: (samples / "grid.png").is_file()),
        Stage("prompt accuracy", lambda: score_samples(samples, eval_json, prompt_grid), eval_json.is_file),
    ]
    start, load_start = time.time(), os.getloadavg()[0]
    try:
        for stage in stages:
            runner.run(stage)
    except GateStop as stop:
        print(str(stop), file=sys.stderr, flush=True)
        return 3
    return write_summary(out, runner, start, load_start, {
        "tokenizer": str(tokenizer), "shards": str(shards_train), "heldout_shards": str(shards_heldout),
        "run_dir": str(run_dir), "checkpoint": str(final_ckpt.parent), "export": str(export_dir),
        "samples_grid": str(samples / "grid.png"), "prompt_grid": str(prompt_grid),
        "prompt_accuracy": str(eval_json),
    })


def write_summary(out: Path, runner: Runner, start: float, load_start: float, paths: dict[str, str]) -> int:
    """summary.json (figures), summary.md + summary.png (the page), and the page on the terminal."""
    from srdd_scale.train.callbacks.loggers import read_metrics

    tokenizer_grids = sorted((Path(paths["tokenizer"]).parent / "samples").glob("recon_step_*.png"))
    figure = out / "summary.png"
    paths.update(summary_md=str(out / "summary.md"), summary_png=str(figure))
    summary = {
        "wall_time_s": round(time.time() - start, 1),
        "load_average_start": load_start, "load_average_end": os.getloadavg()[0], "usable_cores": usable_cores(),
        "threads": runner.threads, "stage_time_s": runner.stage_time_s,
        "gates": [result.as_dict() for result in runner.gate_results],
        "prompt_accuracy": json.loads(Path(paths["prompt_accuracy"]).read_text()),
        "paths": paths,
    }
    summary_figure(read_metrics(paths["run_dir"]), runner.stage_time_s,
                   tokenizer_grids[-1] if tokenizer_grids else None, Path(paths["prompt_grid"]), figure)
    page = summary_markdown(summary, figure)
    (out / "summary.md").write_text(page)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(page)
    print(f"[quickstart] finished in {summary['wall_time_s']:.0f} s; summary in {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
