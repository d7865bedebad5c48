#!/usr/bin/env python
"""Aggregate the ablation's row JSONs (run_eval.py) into the Markdown tables of docs/reproduction.md, one JSON and
three figures: FID vs training FLOPs per mask, held-out loss vs training FLOPs per mask and seed, sample grids.

    python benchmarks/fashion_ablation/make_table.py [RESULTS_DIR] [--out-dir docs/images]

Per row: FID/IS/class accuracy of the three seeds' samples pooled (the method marginalised over training seeds,
5,010 samples, bootstrap interval), the per-seed mean with a t-interval over seeds, and costs. Then paired
per-seed differences between rows: each seed's models share data order and initialisation, so the difference
is far less noisy than either row.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np

ROWS = [  # (label, file pattern with {s} for the seed, paper's claim)
    ("VAR (block_causal)", "block_causal-s{s}", "baseline"),
    ("SDD (markovian, no tricks)", "markovian-s{s}", "better than VAR"),
    ("SDD + SR (simple resampling, 1 step)", "markovian-s{s}-sr", "better than SDD"),
    ("SDD + MR (mask resampling, 3 x p<0.02)", "markovian-s{s}-mr", "better than SDD"),
    ("SDD + tuned CFG", "markovian-s{s}-cfg", "best row"),
    ("VAR + tuned CFG", "block_causal-s{s}-cfg", "(not in the paper)"),
    ("markovian_prev", "markovian_prev-s{s}", "(not in the paper)"),
    ("distilled student 1-2-4-8 (teacher KL)", "student-distill-s{s}", "close to SDD at fewer steps"),
    ("fine-tuned student 1-2-4-8 (CE only)", "student-finetune-s{s}", "(today's recipe)"),
]
PAIRS = [  # (row, minus row): per-seed differences
    ("markovian-s{s}", "block_causal-s{s}", "SDD - VAR"),
    ("markovian-s{s}-sr", "markovian-s{s}", "SR - SDD"),
    ("markovian-s{s}-mr", "markovian-s{s}", "MR - SDD"),
    ("markovian-s{s}-cfg", "markovian-s{s}", "tuned CFG - SDD (CFG 1.5)"),
    ("block_causal-s{s}-cfg", "block_causal-s{s}", "tuned CFG - VAR (CFG 1.5)"),
    ("markovian-s{s}-cfg", "block_causal-s{s}-cfg", "SDD + tuned CFG - VAR + tuned CFG"),
    ("markovian_prev-s{s}", "markovian-s{s}", "markovian_prev - SDD"),
    ("student-distill-s{s}", "student-finetune-s{s}", "distilled student - fine-tuned student"),
    ("student-distill-s{s}", "markovian-s{s}", "distilled student (4 scales) - its teacher SDD (6 scales)"),
    ("student-finetune-s{s}", "markovian-s{s}", "fine-tuned student (4 scales) - its teacher SDD (6 scales)"),
]
MASKS = ("markovian", "block_causal", "markovian_prev")
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95% t quantiles by degrees of freedom


def mean_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None for one value)."""
    mean = float(np.mean(values))
    if len(values) == 1:
        return mean, None
    return mean, T95[len(values) - 1] * float(np.std(values, ddof=1)) / math.sqrt(len(values))


def fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    mean, half = mean_interval(values)
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"


def load_rows(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def pooled(names: list[str], rows: dict[str, dict], features: Path, bootstrap: int, cache_dir: str,
           image_size: int) -> dict | None:
    """Scores of the named rows' samples together (generation.pooled_score); None for a single row. The interval
    is over samples only: the spread between training seeds is the per-seed t-interval's."""
    from srdd_scale.eval.generation import pooled_score, reference

    if len(names) < 2:
        return None
    paths = [features / f"{n}.npz" for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"features of {missing} are missing: rerun those rows with --features-out")
    for name, path in zip(names, paths):
        with np.load(path, allow_pickle=False) as data:
            if len(data["labels"]) != rows[name]["num_samples"]:
                raise SystemExit(f"{path}: {len(data['labels'])} samples, but {name}.json scored "
                                 f"{rows[name]['num_samples']}: stale features")
    references = {(rows[n]["reference"], rows[n]["reference_per_class"]) for n in names}
    if len(references) != 1:
        raise SystemExit(f"{names} were scored against different references: {sorted(references)}")
    folder, per_class = references.pop()
    return pooled_score(paths, reference(folder, per_class, image_size, cache_dir), bootstrap, seed=0)


def _save(fig, path: Path) -> str:
    """Write one figure as PNG and free it; returns the path written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def table(rows: dict[str, dict], features: Path, bootstrap: int, cache_dir: str,
          image_size: int) -> tuple[str, list[dict]]:
    lines = ["| row | seeds | FID ↓ seeds pooled [95% CI] | FID per seed | IS ↑ seeds pooled [95% CI] | IS per seed | "
             "class acc ↑ pooled | held-out loss ↓ | train FLOPs | sampling GFLOPs/img | ms/img | paper's claim |",
             "|" + "---|" * 12]
    records = []
    for label, pattern, claim in ROWS:
        names = [n for n in dict.fromkeys(pattern.format(s=s) for s in range(3)) if n in rows]
        if not names:
            continue
        found = [rows[n] for n in names]
        get = lambda key, found=found: [r[key] for r in found if r.get(key) is not None]  # noqa: E731
        union = pooled(names, rows, features, bootstrap, cache_dir, image_size)
        shown = union or found[0]  # one seed: its own samples and interval

        def cell(key: str, shown=shown) -> str:
            low, high = shown[f"{key}_ci95"]
            return f"{shown[key]:.2f} [{low:.2f}, {high:.2f}]"

        record = {"row": label, "files": names, "pooled": union, "num_samples": shown["num_samples"],
                  **{k: get(k) for k in ("fid", "is", "class_accuracy", "heldout_loss", "training_flops",
                                         "sampling_flops_per_image", "seconds_per_image")}}
        records.append(record)
        lines.append(
            f"| {label} | {len(found)} | {cell('fid')} (N={shown['num_samples']}) | {fmt(get('fid'))} | {cell('is')} | "
            f"{fmt(get('is'))} | {cell('class_accuracy')} | {fmt(get('heldout_loss'), 3)} | "
            f"{np.mean(get('training_flops')):.2e} | {np.mean(get('sampling_flops_per_image')) / 1e9:.2f} | "
            f"{1e3 * np.mean(get('seconds_per_image')):.0f} | {claim} |")
    return "\n".join(lines), records


def differences(rows: dict[str, dict]) -> tuple[str, list[dict]]:
    lines = ["| difference | seeds | FID (lower is better) | IS | class acc | per seed FID |", "|---" * 6 + "|"]
    records = []
    for left, right, label in PAIRS:
        seeds = [s for s in range(3) if left.format(s=s) in rows and right.format(s=s) in rows]
        if not seeds:
            continue
        diff = {k: [rows[left.format(s=s)][k] - rows[right.format(s=s)][k] for s in seeds]
                for k in ("fid", "is", "class_accuracy")}
        records.append({"difference": label, "seeds": seeds, **diff})
        lines.append(f"| {label} | {len(seeds)} | {fmt(diff['fid'])} | {fmt(diff['is'])} | "
                     f"{fmt(diff['class_accuracy'], 3)} | {', '.join(f'{v:+.1f}' for v in diff['fid'])} |")
    return "\n".join(lines), records


def plots(rows: dict[str, dict], runs: Path, grids: Path, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mask in MASKS:
        points = sorted((r["training_flops"], r["fid"], r["fid_ci95"]) for name, r in rows.items()
                        if re.fullmatch(rf"curve-{mask}-s0-(\d+|final)", name))
        if points:
            x, y, ci = zip(*points)
            err = np.abs(np.array(ci).T - np.array(y))
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=mask)
            samples = rows[next(n for n in rows if n.startswith(f"curve-{mask}-s0-"))]["num_samples"]
    if any(n.startswith("curve-") for n in rows):
        ax.set_xlabel("training FLOPs"), ax.set_ylabel(f"FID (test, {samples} samples)"), ax.legend()
        ax.set_title("FID vs training compute (seed 0)")
        written.append(_save(fig, out_dir / "fashion_fid_vs_flops.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    colours = {"markovian": "C0", "block_causal": "C1", "markovian_prev": "C2"}
    per_step = {}
    for result in (runs / "points").glob("*/result.json"):
        record = json.loads(result.read_text())
        per_step[record["mask"]] = record["flops"] / record["steps"]
    for run_dir in sorted((runs / "runs").glob("C*-s[0-9]-*")):
        mask, seed = re.match(r"C[^-]+-d\d+-(.+)-s(\d+)-", run_dir.name).groups()
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = [(m["step"], m["eval/loss"]) for m in metrics if "eval/loss" in m]
        if evals and mask in per_step:
            steps, losses = zip(*evals)
            ax.plot(np.array(steps) * per_step[mask], losses, color=colours[mask], marker=".",
                    linestyle=("-", "--", ":")[int(seed) % 3], label=f"{mask} s{seed}")
    ax.set_xlabel("training FLOPs"), ax.set_ylabel("held-out loss (mean over tokens)"), ax.legend(fontsize=6)
    ax.set_title("Held-out loss vs training compute (every seed)")
    written.append(_save(fig, out_dir / "fashion_loss_vs_flops.png"))

    panels = [(title, grids / f"{name}.png") for title, name in (
        ("VAR (block_causal)", "block_causal-s0"), ("SDD (markovian)", "markovian-s0"),
        ("SDD + MR", "markovian-s0-mr"), ("SDD + tuned CFG", "markovian-s0-cfg"))]
    panels = [(title, path) for title, path in panels if path.is_file()]
    if panels:
        from PIL import Image

        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 6))
        for ax, (title, path) in zip(np.atleast_1d(axes), panels):
            ax.imshow(Image.open(path)), ax.set_title(f"{title}, seed 0"), ax.axis("off")
        written.append(_save(fig, out_dir / "fashion_samples.png"))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="benchmarks/fashion_ablation/results")
    parser.add_argument("--runs", default="runs/sweeps/fashion_ablation")
    parser.add_argument("--features", default="runs/repro/features", help="run_eval.py's saved Inception features")
    parser.add_argument("--grids", default="runs/repro/grids", help="run_eval.py's sample grids")
    parser.add_argument("--cache-dir", default="runs/eval_cache")
    parser.add_argument("--bootstrap", type=int, default=20, help="bootstrap resamples of each pooled row")
    parser.add_argument("--image-size", type=int, default=32, help="the tokenizer's image size (the reference key)")
    parser.add_argument("--out-dir", default="docs/images")
    parser.add_argument("--json", default="benchmarks/fashion_ablation/table.json")
    args = parser.parse_args()
    rows = load_rows(Path(args.results))
    markdown, records = table(rows, Path(args.features), args.bootstrap, args.cache_dir, args.image_size)
    diff_markdown, diff_records = differences(rows)
    print(markdown, "", diff_markdown, sep="\n")
    images = plots(rows, Path(args.runs), Path(args.grids), Path(args.out_dir))
    cfg_sweeps = {name: [(c["cfg_scale"], round(c["fid"], 2), round(c["is"], 2)) for c in r["cfg_sweep"]]
                  for name, r in rows.items() if "cfg_sweep" in r}
    summary = {"rows": records, "differences": diff_records, "cfg_sweeps": cfg_sweeps, "plots": images,
               "markdown": markdown, "differences_markdown": diff_markdown}
    Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    for name, sweep in cfg_sweeps.items():
        print(name, sweep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
