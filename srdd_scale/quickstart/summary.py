"""The quickstart's last page: what each stage took and reached, what the model draws, and where to go next."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

# Exact commands that go further than the 15-minute run (README "Quickstart" has the figures they reach).
NEXT_STEPS = {
    "longer run (~35 min on 2 cores: a 4000-step tokenizer, then 2400 training steps on 32768 images)": [
        "python tools/train_tokenizer.py configs/tokenizer/shapes_64.yaml --output runs/tok_shapes64",
        "python tools/quickstart.py --tokenizer runs/tok_shapes64 --steps 2400 --train-images 32768 "
        "--out outputs/quickstart_2400",
    ],
    "real images (Fashion-MNIST photos through the same tokenizer recipe)": [
        "apt-get install -y dataset-fashion-mnist",
        "python tools/import_fashion_mnist.py --output data/fashion_mnist",
        "python tools/train_tokenizer.py configs/tokenizer/fashion_64.yaml --output runs/tok_fashion",
    ],
    "GPU recipe (VAR's d16 settings, 8 GPUs; docs/scaling_guide.md sizes larger models)": [
        "torchrun --nproc_per_node=8 tools/train.py configs/quickstart.yaml configs/train/fsdp.yaml "
        "configs/train/var_d16.yaml",
    ],
}


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def accuracy_rows(accuracy: dict) -> list[tuple[str, str]]:
    """(figure, value) rows of the prompt-accuracy table, colour+shape first."""
    rows = [("colour+shape (every object)", _pct(accuracy.get("joint_colour_shape")))]
    rows += [(attr, _pct(value)) for attr, value in accuracy.get("accuracy", {}).items()]
    rows += [(name, _pct(accuracy.get(name))) for name in ("count", "background", "all")]
    return rows


def summary_markdown(summary: dict, figure: Path) -> str:
    """The page as Markdown (also printed to the terminal)."""
    lines = ["# Quickstart summary\n", f"Finished in {summary['wall_time_s']:.0f} s "
             f"(load average at start {summary['load_average_start']:.2f}, at end {summary['load_average_end']:.2f}"
             f", {summary['usable_cores']} usable cores). ![summary]({figure.name})\n",
             "| stage | seconds | gate |", "| --- | ---: | --- |"]
    gates = {gate["stage"]: gate for gate in summary["gates"]}
    for stage, seconds in summary["stage_time_s"].items():
        gate = gates.get(stage)
        verdict = "" if gate is None else "; ".join(
            f"{c['figure']} {c['value']:.3g}{c['unit']} ({'>=' if c['higher_is_better'] else '<='} {c['floor']:.3g}"
            f"{c['unit']}) {'ok' if c['passed'] else 'MISSED'}" for c in gate["checks"])
        lines.append(f"| {stage} | {seconds:.0f} | {verdict} |")
    lines += ["", f"Held-out prompt accuracy ({summary['prompt_accuracy'].get('num_images', 0)} prompts whose colour "
              "x shape pairs training never shows):", "", "| figure | accuracy |", "| --- | ---: |"]
    lines += [f"| {name} | {value} |" for name, value in accuracy_rows(summary["prompt_accuracy"])]
    lines += ["", "Files:", ""] + [f"- {name}: `{path}`" for name, path in summary["paths"].items()]
    lines += ["", "Go further:", ""]
    for what, commands in NEXT_STEPS.items():
        lines += [f"- {what}:", "", "  ```bash"] + [f"  {command}" for command in commands] + ["  ```"]
    return "\n".join(lines) + "\n"


def summary_figure(train_metrics: list[dict], stage_time_s: dict[str, float], tokenizer_grid: Optional[Path],
                   prompt_grid: Path, path: Path) -> None:
    """One PNG: loss curves, time per stage, the tokenizer's reconstructions and the held-out samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig = plt.figure(figsize=(14, 10))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 1.6))
    losses, times = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    train = [(r["step"], r["loss"]) for r in train_metrics if "loss" in r]
    heldout = [(r["step"], r["eval/loss"]) for r in train_metrics if "eval/loss" in r]
    for points, label, style in ((train, "training loss", "-"), (heldout, "held-out loss", "o-")):
        if points:
            losses.plot(*zip(*points), style, label=label)
    losses.set(xlabel="step", ylabel="cross-entropy (nats)", title="transformer loss")
    losses.legend()
    losses.grid(alpha=0.3)
    names = list(stage_time_s)
    times.barh(names, [stage_time_s[n] for n in names])
    times.invert_yaxis()
    times.set(xlabel="seconds", title="time per stage")
    for position, (image_path, title) in enumerate(((tokenizer_grid, "tokenizer: originals, then scales 1..k"),
                                                    (prompt_grid, "held-out prompts (green: all right)"))):
        axis = fig.add_subplot(grid[1, position])
        axis.axis("off")
        axis.set_title(title)
        if image_path is not None and Path(image_path).is_file():
            axis.imshow(Image.open(image_path).convert("RGB"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
