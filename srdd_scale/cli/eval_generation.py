"""FID + IS (with 95% bootstrap intervals), class accuracy, sampling FLOPs and latency of a class-conditional
checkpoint, by the fixed protocol of docs/reproduction.md; or a CFG sweep that picks the guidance on a
validation split.

    python tools/eval_generation.py --checkpoint RUN_DIR --reference data/fashion_mnist/test --out row.json
    python tools/eval_generation.py --checkpoint RUN_DIR/checkpoints/step_00000100 --reference ... \\
        sampling.resample=simple sampling.sr_steps=1
    python tools/eval_generation.py --checkpoint RUN_DIR --cfg-sweep 0,1,2,3,4 \\
        --reference data/fashion_mnist/train --out cfg_sweep.json     # then use its best_cfg on the test split

Samples: --per-class images of every class, one seed. Reference: the first --reference-per-class images of
every class of an ImageFolder split, features cached under --cache-dir. Sampling settings are
``sampling.KEY=VALUE`` overrides of SamplingConfig (defaults: VAR's FID settings).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int, positive_int
from srdd_scale.config import ConfigError


def load_checkpoint_model(source: str):
    """(model, tokenizer, run config, step) of a run dir (newest complete checkpoint) or one step_* folder."""
    import torch

    from srdd_scale.config import load_saved_config
    from srdd_scale.export.checkpoints import read_model_state, resolve_checkpoint
    from srdd_scale.export.export import RUN_CONFIG_FILE
    from srdd_scale.run_config import RunConfig
    from srdd_scale.train import checkpoint as ckpt
    from srdd_scale.train.task import SRDDTask

    run_dir, folder = resolve_checkpoint(source)
    cfg = load_saved_config(run_dir / RUN_CONFIG_FILE, RunConfig)
    task = SRDDTask(cfg, torch.device("cpu"))
    model = task.build_model()
    model.load_state_dict(read_model_state(folder, model.state_dict(), ema=False))
    return model.eval(), task.tokenizer, cfg, ckpt.read_meta(folder).step, run_dir


def heldout_loss(run_dir: Path, step: int) -> float | None:
    """The run's last held-out loss (loss/mean) logged at or before ``step``."""
    from srdd_scale.train.callbacks import read_metrics

    found = [r["eval/loss"] for r in read_metrics(run_dir) if "eval/loss" in r and r["step"] <= step]
    return found[-1] if found else None


def sampling_config(overrides: list[str], **fields):
    import yaml

    from srdd_scale.config import build, to_dict
    from srdd_scale.model.config import SamplingConfig

    values = to_dict(SamplingConfig())
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.startswith("sampling.") or not value:
            raise ConfigError(f"{item!r}: expected sampling.KEY=VALUE")
        values[key.removeprefix("sampling.")] = yaml.safe_load(value)  # typed as in a YAML file: 1 -> int
    values.update(fields)
    cfg = build(SamplingConfig, values, prefix="sampling")
    cfg.validate()
    return cfg


def evaluate_row(model, tokenizer, run_cfg, cfg, ref, inception, per_class: int, seed: int, bootstrap: int,
                 features_out: str | None = None, grid_out: str | None = None) -> dict:
    from srdd_scale.eval.fid import inception_features
    from srdd_scale.eval.generation import (generate_balanced, sampling_flops_per_image, save_features,
                                            save_sample_grid, score)

    images, labels, latency = generate_balanced(model, tokenizer, run_cfg.model.num_classes, per_class, cfg, seed)
    features = inception_features(list(images), inception)
    if features_out:
        save_features(features_out, features, labels)
    if grid_out:
        save_sample_grid(grid_out, images, labels, ref.classes)
    result = score(features, labels, ref, bootstrap, seed)
    result.update(sampling=dataclasses.asdict(cfg), seconds_per_image=latency, seed=seed,
                  sampling_flops_per_image=sampling_flops_per_image(
                      run_cfg.model, tuple(tokenizer.patch_nums), tokenizer.vocab_size, tokenizer.latent_dim, cfg))
    return result


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run directory (newest checkpoint) or step_* folder")
    parser.add_argument("--reference", required=True, help="ImageFolder split to score against (test, or a "
                        "validation split for --cfg-sweep)")
    parser.add_argument("--reference-per-class", type=positive_int, default=200, help="reference images per class")
    parser.add_argument("--per-class", type=positive_int, default=50, help="generated images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=non_negative_int, default=100,
                        help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--cfg-sweep", help="comma-separated guidance scales: score each, report the best FID")
    parser.add_argument("--cache-dir", default="runs/eval_cache", help="cached reference features")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--features-out", help="also write the samples' Inception features (.npz), to pool seeds "
                        "(generation.pooled_score)")
    parser.add_argument("--grid-out", help="also write a PNG of the first samples of every class")
    parser.add_argument("overrides", nargs="*", metavar="sampling.KEY=VALUE")
    args = parser.parse_args(argv)
    if args.cfg_sweep and (args.features_out or args.grid_out):
        parser.error("--features-out and --grid-out keep one row's samples; --cfg-sweep scores several")

    import torch

    from srdd_scale.eval.fid import load_inception
    from srdd_scale.eval.generation import reference

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tokenizer, run_cfg, step, run_dir = load_checkpoint_model(args.checkpoint)
        if run_cfg.model.num_classes <= 0:
            raise ConfigError(f"{args.checkpoint}: model.num_classes=0; this protocol samples class-balanced sets")
        inception = load_inception()  # loaded (and frozen) once for the reference and every scored row
        ref = reference(args.reference, args.reference_per_class, tokenizer.image_size, args.cache_dir, inception)
        base = sampling_config(args.overrides)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from srdd_scale.model.flops import flops_per_image

    train_flops_per_image = flops_per_image(run_cfg.model, tuple(tokenizer.patch_nums), run_cfg.model.mask, 1,
                                            training=True, vocab_size=tokenizer.vocab_size,
                                            latent_dim=tokenizer.latent_dim, text_dim=None)
    record = {"checkpoint": str(args.checkpoint), "run_dir": str(run_dir), "step": step, "mask": run_cfg.model.mask,
              "train_seed": run_cfg.train.seed, "patch_nums": list(tokenizer.patch_nums),
              "training_flops": step * run_cfg.train.global_batch_size * train_flops_per_image,
              "heldout_loss": heldout_loss(run_dir, step), "reference": args.reference,
              "reference_per_class": args.reference_per_class}
    if args.cfg_sweep:
        scales = [float(s) for s in args.cfg_sweep.split(",")]
        rows = [evaluate_row(model, tokenizer, run_cfg, dataclasses.replace(base, cfg_scale=s), ref, inception,
                             args.per_class, args.seed, args.bootstrap) for s in scales]
        best = min(range(len(rows)), key=lambda i: rows[i]["fid"])
        record.update(cfg_sweep=[{"cfg_scale": s, **r} for s, r in zip(scales, rows)], best_cfg=scales[best])
        print(" ".join(f"cfg={s:g}: FID {r['fid']:.2f} IS {r['is']:.2f}" for s, r in zip(scales, rows)))
        print(f"best cfg_scale={scales[best]:g}")
    else:
        record.update(evaluate_row(model, tokenizer, run_cfg, base, ref, inception, args.per_class, args.seed,
                                   args.bootstrap, args.features_out, args.grid_out))
        print(f"FID {record['fid']:.2f} {record['fid_ci95']}  IS {record['is']:.2f}  acc "
              f"{record['class_accuracy']:.3f}  {record['seconds_per_image'] * 1e3:.1f} ms/image  "
              f"{record['sampling_flops_per_image']:.3g} FLOPs/image")
    if args.out:  # atomically: run_eval.py takes an existing row file as a finished row
        from srdd_scale.data.mds import write_json

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, record)
    return 0
