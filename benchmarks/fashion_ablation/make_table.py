#!/usr/bin/env python
"""Aggregate the ablation's row JSONs (run_eval.sh) into docs/reproduction_table.md-ready Markdown, one JSON and
two plots: FID vs training FLOPs per mask, held-out loss vs training FLOPs per mask and seed.

    python benchmarks/fashion_ablation/make_table.py [RESULTS_DIR] [--out-dir docs/images]
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
    ("distilled student 1-2-4-8 (teacher KL)", "student-distill", "close to SDD at fewer steps"),
    ("fine-tuned student 1-2-4-8 (CE only)", "student-finetune", "(today's recipe)"),
]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95% t quantiles by degrees of freedom


def seed_summary(values: list[float]) -> str:
    if not values:
        return "-"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.2f}"
    half = T95[len(values) - 1] * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return f"{mean:.2f} ± {half:.2f}"


def load_rows(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def _save(fig, path: Path) -> str:
    """Write one figure as PNG and free it; returns the path written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def table(rows: dict[str, dict]) -> tuple[str, list[dict]]:
    lines = ["| row | n seeds | FID ↓ | IS ↑ | class acc ↑ | held-out loss ↓ | train FLOPs | sampling GFLOPs/img | "
             "ms/img | per seed: value [95% bootstrap] | paper's claim |", "|" + "---|" * 11]
    records = []
    for label, pattern, claim in ROWS:
        names = [n for n in dict.fromkeys(pattern.format(s=s) for s in range(3)) if n in rows]
        found = [rows[n] for n in names]
        if not found:
            continue
        get = lambda key, found=found: [r[key] for r in found if r.get(key) is not None]  # noqa: E731
        per_seed = "; ".join(f"FID {r['fid']:.1f} [{r['fid_ci95'][0]:.1f}, {r['fid_ci95'][1]:.1f}], IS {r['is']:.2f} "
                             f"[{r['is_ci95'][0]:.2f}, {r['is_ci95'][1]:.2f}], acc {r['class_accuracy']:.2f} "
                             f"[{r['class_accuracy_ci95'][0]:.2f}, {r['class_accuracy_ci95'][1]:.2f}]" for r in found)
        record = {"row": label, "files": names,
                  **{k: get(k) for k in ("fid", "is", "class_accuracy", "heldout_loss", "training_flops",
                                         "sampling_flops_per_image", "seconds_per_image")}}
        records.append(record)
        lines.append(
            f"| {label} | {len(found)} | {seed_summary(get('fid'))} | {seed_summary(get('is'))} | "
            f"{seed_summary(get('class_accuracy'))} | {seed_summary(get('heldout_loss'))} | "
            f"{np.mean(get('training_flops')):.2e} | {np.mean(get('sampling_flops_per_image')) / 1e9:.2f} | "
            f"{1e3 * np.mean(get('seconds_per_image')):.0f} | {per_seed} | {claim} |")
    return "\n".join(lines), records


def plots(rows: dict[str, dict], runs: Path, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mask in ("markovian", "block_causal", "markovian_prev"):
        points = sorted((r["training_flops"], r["fid"], r["fid_ci95"]) for name, r in rows.items()
                        if re.fullmatch(rf"curve-{mask}-s0-\d+|{mask}-s0", name))
        if points:
            x, y, ci = zip(*points)
            err = np.abs(np.array(ci).T - np.array(y))
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=mask)
    ax.set_xlabel("training FLOPs"), ax.set_ylabel("FID (test, 200-300 samples)"), ax.legend()
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
                    linestyle="-" if seed == "0" else "--", label=f"{mask} s{seed}")
    ax.set_xlabel("training FLOPs"), ax.set_ylabel("held-out loss (mean over tokens)"), ax.legend()
    ax.set_title("Held-out loss vs training compute (every seed)")
    written.append(_save(fig, out_dir / "fashion_loss_vs_flops.png"))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", default="benchmarks/fashion_ablation/results")
    parser.add_argument("--runs", default="runs/sweeps/fashion_ablation")
    parser.add_argument("--out-dir", default="docs/images")
    parser.add_argument("--json", default="benchmarks/fashion_ablation/table.json")
    args = parser.parse_args()
    rows = load_rows(Path(args.results))
    markdown, records = table(rows)
    print(markdown)
    images = plots(rows, Path(args.runs), Path(args.out_dir))
    cfg_sweeps = {name: [(c["cfg_scale"], round(c["fid"], 2), round(c["is"], 2)) for c in r["cfg_sweep"]]
                  for name, r in rows.items() if "cfg_sweep" in r}
    Path(args.json).write_text(json.dumps({"rows": records, "cfg_sweeps": cfg_sweeps, "plots": images,
                                           "markdown": markdown}, indent=2) + "\n")
    for name, sweep in cfg_sweeps.items():
        print(name, sweep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
