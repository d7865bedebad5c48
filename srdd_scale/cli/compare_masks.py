"""SRDD vs VAR at small scale: train `markovian`, `markovian_prev` and `block_causal` on the same data, budget
and seed, then compare held-out loss vs steps and vs FLOPs, prompt accuracy and sampling latency/memory.

    python tools/compare_masks.py                                  # CPU default: d3, 80 steps x 16 images
    python tools/compare_masks.py --steps 1000 --depth 6 --tokenizer artifacts/tokenizer/shapes_64/tokenizer

The default took 323 s on 2 shared cores (load ~11) with the tokenizer and shards already made; a first run
adds the 3-minute tokenizer training (plus its evaluation) and pretokenizing 2304 images (~1.5 min).

Steps, each reused when its output exists (re-running resumes): the caption sentencepiece model
(tools/train_text_tokenizer.py), the image tokenizer (--tokenizer, else tools/train_tokenizer.py with
configs/tokenizer/shapes_64.yaml for --tokenizer-minutes), synthetic shapes MDS shards (tools/pretokenize.py),
one single-process training run per mask (tools/train.py), an HF export per run, and a sampling job per export
in a fresh process (held-out prompts -> prompt accuracy with the shapes analyser; seconds per image; peak
memory: CUDA max allocated, or the process's peak RSS on CPU). Writes WORK/compare_masks.json and
WORK/compare_masks.png (held-out loss vs steps and vs FLOPs) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from srdd_scale.cli import entry_point, tool_command
from srdd_scale.cli.args import positive_float, positive_int
from srdd_scale.utils.rundir import PROJECT_ROOT as ROOT

TOKENIZER_YAML = ROOT / "configs" / "tokenizer" / "shapes_64.yaml"
TEXT_YAML = ROOT / "configs" / "text" / "shapes_spm.yaml"


def parse_args(argv: list[str] | None):
    from srdd_scale.analysis.compare_masks import CompareSettings

    defaults = CompareSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "artifacts" / "compare_masks"),
                        help="folder for tokenizers, shards, runs, exports and results")
    parser.add_argument("--tokenizer", default=None, help="saved image tokenizer folder (default: train one)")
    parser.add_argument("--tokenizer-minutes", type=positive_float, default=3.0,
                        help="budget of the shapes_64 tokenizer trained when --tokenizer is not given")
    parser.add_argument("--masks", default=",".join(defaults.masks), help="comma-separated mask modes")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="OMP/torch threads of the training and sampling processes (on a shared CPU machine, "
                        "oversubscribed OpenMP threads run many times slower than one)")
    for field in fields(defaults):
        if field.name != "masks":
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                                default=getattr(defaults, field.name),
                                help="default %(default)s (CompareSettings in srdd_scale/analysis/compare_masks.py)")
    parser.add_argument("--sample-job", default=None, help=argparse.SUPPRESS)  # internal: one export to sample
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(defaults) if f.name != "masks"}
    settings = CompareSettings(masks=tuple(args.masks.split(",")), **values)
    settings.validate()
    return args, settings


def run(cmd: list, env: dict | None = None) -> tuple[float, str]:
    """Run a tool to completion (stderr streamed), return its wall seconds and stdout; exit if it fails."""
    print("$", " ".join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=False, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd[1:4]))} exited with {proc.returncode} (see its output above)\n"
                 f"{proc.stdout[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def prepare_inputs(args, settings, work: Path) -> tuple[Path, Path, list[str], dict]:
    """Caption model, image tokenizer and shards (each reused if present); their overrides and timings."""
    from srdd_scale.analysis.compare_masks import tokenizer_overrides
    from srdd_scale.tokenizer import load_tokenizer

    timings = {}
    text_model = work / "text" / "shapes_spm.model"
    if not text_model.is_file():
        timings["text_tokenizer_s"], _ = run([*tool_command("train_text_tokenizer"), TEXT_YAML,
                                           "--output", text_model.with_suffix(""), "--seed", settings.seed])
    tokenizer_dir = Path(args.tokenizer) if args.tokenizer else work / "tokenizer_run" / "tokenizer"
    if not args.tokenizer and not (tokenizer_dir / "tokenizer_config.json").is_file():
        timings["image_tokenizer_s"], _ = run([*tool_command("train_tokenizer"), TOKENIZER_YAML,
                                            f"tokenizer_train.max_minutes={args.tokenizer_minutes}",
                                            f"data.seed={settings.seed}", "--output", tokenizer_dir.parent])
    tok_overrides = tokenizer_overrides(tokenizer_dir)
    identity = load_tokenizer(tokenizer_dir).identity()[:12]
    data_dir = work / f"data-{identity}-{settings.train_samples}-{settings.heldout_samples}-s{settings.seed}"
    if not (data_dir / "heldout" / "meta.json").is_file():
        timings["pretokenize_s"], _ = run([
            *tool_command("pretokenize"), ROOT / "configs" / "data" / "shapes.yaml", TEXT_YAML,
            *tok_overrides, f"text.tokenizer={text_model}", f"data.seed={settings.seed}",
            f"data.synthetic_train_samples={settings.train_samples}",
            f"data.synthetic_heldout_samples={settings.heldout_samples}", "data.decode_workers=1",
            "--output", data_dir / "train", "--heldout-output", data_dir / "heldout"])
    return data_dir, text_model, tok_overrides, {"tokenizer": str(tokenizer_dir), "tokenizer_identity": identity,
                                                 "data": str(data_dir), "text_tokenizer": str(text_model), **timings}


def training_flops_per_image(run_dir: Path) -> float:
    """The FLOP count the trainer's SpeedMonitor uses, from the run's saved config."""
    from srdd_scale.config import load_saved_config
    from srdd_scale.run_config import RunConfig
    from srdd_scale.model.flops import flops_per_image
    from srdd_scale.text import FrozenTextEncoder
    from srdd_scale.tokenizer import load_tokenizer

    cfg = load_saved_config(run_dir / "config.yaml", RunConfig)
    tokenizer = load_tokenizer(cfg.tokenizer.checkpoint, patch_nums=tuple(cfg.tokenizer.patch_nums))
    text_dim = FrozenTextEncoder(cfg.text).dim if cfg.model.cross_attn else None
    return flops_per_image(cfg.model, tuple(tokenizer.patch_nums), cfg.model.mask, cfg.text.max_length, True,
                           tokenizer.vocab_size, tokenizer.latent_dim, text_dim)


def sample_job(export_dir: str, settings) -> dict:
    """In a fresh process: sample one image per held-out prompt, score it, time it (JSON on stdout's last line)."""
    import torch

    from srdd_scale.data.shapes import iter_shapes
    from srdd_scale.eval.prompt_accuracy import prompt_accuracy
    from srdd_scale.export.pipeline import SRDDPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = SRDDPipeline.from_pretrained(export_dir, device=device)
    prompts = list(iter_shapes("heldout", seed=settings.seed + 1, image_size=pipe.tokenizer.image_size,
                               count=settings.prompts))  # seed+1: prompts are not the held-out shards' images
    pipe([p.caption for p in prompts[:1]], seed=settings.seed)  # warm-up (allocator, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    images = pipe([p.caption for p in prompts], batch_size=settings.sample_batch, seed=settings.seed)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    grid_dir = Path(export_dir).parent.parent / "samples"
    grid_dir.mkdir(parents=True, exist_ok=True)
    from srdd_scale.eval.grid import captioned_grid

    grid = grid_dir / f"{pipe.model.cfg.mask}.png"
    captioned_grid(images[:16], [p.caption for p in prompts[:16]]).save(grid)
    return {"device": device, "images": len(images), "batch_size": settings.sample_batch,
            "seconds_per_image": seconds / len(images), "sampling": asdict(pipe.sampling),
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
            "prompt_accuracy": prompt_accuracy(zip(images, [p.attrs for p in prompts])), "grid": str(grid)}


def run_sample_job(export_dir: Path, argv: list[str], env: dict) -> dict:
    """The sampling job in a child process; on CPU its peak RSS (wait4's ru_maxrss) is the memory figure."""
    cmd = [*tool_command("compare_masks"), *argv, "--sample-job", str(export_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"error: sampling job for {export_dir} exited with {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["peak_mib"] is None:
        result["peak_mib"] = usage.ru_maxrss / 1024  # KiB on Linux; includes Python + torch (~same for all masks)
        result["peak_mib_kind"] = "process peak RSS"
    else:
        result["peak_mib_kind"] = "cuda max allocated"
    return result


@entry_point
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, settings = parse_args(argv)
    if args.sample_job:
        print(json.dumps(sample_job(args.sample_job, settings)))
        return 0

    from srdd_scale.analysis.compare_masks import eval_curve, plot_curves, summary_table, train_overrides
    from srdd_scale.export.export import export_checkpoint
    from srdd_scale.train.callbacks.loggers import read_metrics
    from srdd_scale.utils.rundir import bench_provenance

    started = time.perf_counter()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dir, text_model, tok_overrides, inputs = prepare_inputs(args, settings, work)
    tmp = work / "tmp"  # streaming's locks and shared-memory names, away from other jobs
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp), WANDB_SILENT="true", OMP_NUM_THREADS=str(args.threads))
    env.pop("WORLD_SIZE", None)
    results = {}
    for mask in settings.masks:
        output_dir = work / "runs" / mask
        overrides = train_overrides(settings, mask, data_dir, text_model, output_dir)
        train_s, stdout = run([*tool_command("train"), ROOT / "configs" / "model" / "base.yaml",
                               TEXT_YAML, *tok_overrides, *overrides], env=env)
        summary = json.loads(stdout.strip().splitlines()[-1])  # tools/train.py prints the run summary last
        run_dir = Path(summary["run_dir"])
        records = read_metrics(run_dir)
        flops = training_flops_per_image(run_dir)
        export_dir = work / "exports" / mask
        export_dir.parent.mkdir(exist_ok=True)  # export_checkpoint stages its folder beside export_dir
        export_checkpoint(run_dir, export_dir, overwrite=True)
        sampling = run_sample_job(export_dir, argv, env)
        perf = [r for r in records if "perf/tokens_per_s" in r]
        results[mask] = {
            "run_dir": str(run_dir), "flops_per_image": flops,
            "curve": eval_curve(records, flops, settings.global_batch_size), "train_seconds": train_s,
            "train_tokens_per_s_last": perf[-1]["perf/tokens_per_s"] if perf else None,
            "train_wall_seconds_in_trainer": summary["wall_seconds"],
            "sampling": sampling,
        }
        print(f"{mask}: final eval loss {results[mask]['curve']['eval_loss'][-1]:.4f}, "
              f"colour+shape {sampling['prompt_accuracy']['joint_colour_shape']:.2f}", flush=True)
    title = (f"d{settings.depth}, {settings.steps} steps x {settings.global_batch_size} images, seed {settings.seed}, "
             f"synthetic shapes (held-out attribute pairs)")
    plot = plot_curves(results, work / "compare_masks.png", title)
    report = {"tool": "compare_masks", "settings": asdict(settings), "inputs": inputs, "results": results,
              "plot": str(plot), "wall_seconds": time.perf_counter() - started,
              "provenance": bench_provenance()}
    out = work / "compare_masks.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(summary_table(results))
    print(f"wrote {out} and {plot} ({report['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
