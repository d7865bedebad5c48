"""Benchmark runner plan and report: which bench tool runs with which arguments, and one markdown table.

tools/bench_all.py runs the plan (each tool in its own process, writing its own JSON through
srdd_scale/analysis/bench_kit.py); this module knows each tool's JSON layout only to pick the headline numbers
for the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Bench:
    """One bench tool run: its tool and arguments per mode (cpu | gpu); every bench tool takes --out JSON_PATH."""

    name: str  # key in the collected results
    tool: str  # srdd_scale.cli.<tool> (tools/<tool>.py)
    cpu_args: tuple[str, ...]  # small sizes: the whole CPU plan runs in < 10 min on 2 cores
    gpu_args: tuple[str, ...]  # one GPU, the whole plan <= 8 min
    what: str  # one line for the docs


BENCHES = (
    Bench("tokenizer", "bench_tokenizer",
          ("--configs", "configs/tokenizer/shapes_64.yaml,configs/tokenizer/var_256.yaml", "--batch-sizes", "1,16",
           "--large-batch-sizes", "1", "--repeats", "2"),
          ("--batch-sizes", "16,64", "--large-batch-sizes", "8,32", "--repeats", "5"),
          "image tokenizer encode/decode images/s (random weights)"),
    Bench("pretokenize", "bench_pretokenize",
          ("--small-images", "256", "--var-images", "8"),
          ("--small-images", "2048", "--var-images", "256"),
          "images -> MDS shards images/s (shapes 64 px; JPEG folder at 256 px through VAR's tokenizer)"),
    Bench("loader", "bench_loader",
          ("--samples", "4096", "--workers", "0,2"),
          ("--samples", "16384", "--workers", "0,4"),
          "streaming loader samples/s (build_dataloader over random-code shards, 680 tokens/sample)"),
    Bench("train", "bench_train",
          ("--preset", "cpu", "--depths", "2", "--steps", "4"),
          ("--preset", "gpu", "--depths", "16", "--steps", "8"),
          "trainer tokens/s and MFU per backend (torchrun; ddp, fsdp, DeepSpeed ZeRO-1/2/3)"),
    Bench("model", "bench_model",
          ("--depths", "2,4", "--steps", "2", "--sample-masks", "markovian,markovian_prev,block_causal"),
          ("--depths", "16", "--steps", "5", "--sample-masks", "markovian,markovian_prev,block_causal"),
          "transformer train-step tokens/s per mask; sampler latency and peak memory per mask"),
)


def _num(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _tokenizer_rows(data: dict) -> list[tuple[str, str, str]]:
    return [(f"{r['config']} {r['image_size']}px, batch {r['batch_size']}", "encode / decode images/s",
             f"{r['encode_images_per_s']:.1f} / {r['decode_images_per_s']:.1f}") for r in data["results"]]


def _pretokenize_rows(data: dict) -> list[tuple[str, str, str]]:
    return [(f"{r['config']} ({r['image_size']}px, {r['tokens_per_image']} tokens, {r['written']} images)",
             "images/s", f"{r['images_per_s']:.1f}") for r in data["results"]]


def _loader_rows(data: dict) -> list[tuple[str, str, str]]:
    return [(f"{r['workers']} workers, batch {r['batch_size']}, {r['tokens_per_sample']} tokens/sample",
             "samples/s (first batch s)", f"{_num(r['samples_per_s'], '.0f')} ({r['first_batch_s']:.2f})")
            for r in data["results"]]


def _train_rows(data: dict) -> list[tuple[str, str, str]]:
    rows = []
    for r in data["records"]:
        setting = f"{r['backend']} d{r['depth']}, {r['world_size']} ranks x {r['micro_batch']}, {r['precision']}"
        if "error" in r:
            rows.append((setting, "tokens/s, MFU", "failed: " + r["error"].strip().splitlines()[-1][:120]))
        else:
            rows.append((setting, "tokens/s, MFU, peak GiB",
                         f"{r['tokens_per_s']:.0f}, {r['mfu']:.2%}, {r['peak_memory_gib']:.2f}"))
    return rows


def _model_rows(data: dict) -> list[tuple[str, str, str]]:
    rows = []
    for r in data["results"]:
        peak = _num(r.get("peak_mib"), ".0f")
        if r["kind"] == "train":
            rows.append((f"train d{r['depth']} {r['mask']}", "tokens/s, TFLOP/s, peak MiB",
                         f"{r['tokens_per_s']:.0f}, {r['tflops_per_s']:.3f}, {peak}"))
        else:
            rows.append((f"sample d{r['depth']} {r['mask']}", "s/batch, images/s, peak MiB",
                         f"{r['batch_s']:.3f}, {r['images_per_s']:.2f}, {peak}"))
    return rows


ROWS: dict[str, Callable[[dict], list[tuple[str, str, str]]]] = {
    "tokenizer": _tokenizer_rows, "pretokenize": _pretokenize_rows, "loader": _loader_rows, "train": _train_rows,
    "model": _model_rows,
}


# Kept at the end of docs/benchmarks.md by every bench_all run: where the one-GPU figures go once measured.
GPU_CHECK_SECTION = """## One-GPU check

`python tools/gpu_check.py --out benchmarks/results/<date>-gpu_check.json` (`srdd-gpu-check`; under 8 minutes on
one H100/H200; `--device cpu --tiny` runs the same code on CPU) writes one JSON with: bf16 train steps at d16 and
d24, markovian vs block_causal, regional compile off/on (tokens/s, MFU, peak memory); forward/backward equality of
the attention paths; sampling latency and peak memory at d16 and d30, batch 32, markovian (no KV cache) vs
block_causal (KV cache); the layout planner's peak against the measured one on that GPU.

No GPU has been lent to this project yet, so no figures: fill this table from the JSON when one is.

| check | setting | metric | value (GPU, date) |
|---|---|---|---|
| train | d16 / d24, markovian / block_causal, compile off / on, bf16 | tokens/s, MFU, peak GiB | not measured |
| attention | 3 masks: each path vs the first | max abs diff fwd / bwd | not measured |
| sample | d16 / d30, batch 32, markovian vs block_causal | s/batch, peak GiB | not measured |
| planner | d16, 1 GPU, activation checkpointing | planned / measured peak GiB | not measured |
"""  # noqa: E501 (markdown table rows cannot wrap)


def render_markdown(collected: dict) -> str:
    """The table of one bench_all run (docs/benchmarks.md), with where and on what it ran."""
    prov = collected["provenance"]
    machine, libs = prov["machine"], prov["libraries"]
    device = ", ".join(machine.get("cuda_devices") or []) or f"CPU only, {machine['cpu_count']} cores"
    lines = [
        "# Benchmarks", "",
        f"Latest `python tools/bench_all.py{' --gpu' if collected['mode'] == 'gpu' else ''}` run "
        f"({collected['mode']} sizes), {prov['time_utc']} on `{machine['hostname']}` ({device}; "
        f"{machine['platform']}), commit `{(prov['git_commit'] or '?')[:12]}`"
        f"{' (dirty tree)' if prov['git_dirty'] else ''}; OMP_NUM_THREADS="
        f"{collected.get('omp_num_threads') or 'unset'} per process; torch {libs.get('torch')}, deepspeed "
        f"{libs.get('deepspeed')}, mosaicml-streaming {libs.get('mosaicml-streaming')}. "
        f"Load average at start: {collected['load_average_start']:.1f} (the machine may be shared: treat CPU "
        "numbers as rough).", "",
        f"Full JSON: `{collected['results_file']}`. Every bench tool also runs on its own (see its --help).", "",
        "| benchmark | setting | metric | value |", "|---|---|---|---|",
    ]
    for name, entry in collected["benches"].items():
        if entry.get("error"):
            error = entry["error"][:200].replace("|", "/")  # a '|' would split the table cell
            lines.append(f"| {name} | - | - | failed after {entry['seconds']:.0f} s: {error} |")
            continue
        for setting, metric, value in ROWS[name](entry["result"]):
            lines.append(f"| {name} | {setting} | {metric} | {value} |")
    lines += ["", "Wall time per bench (s): " + ", ".join(
        f"{name} {entry['seconds']:.0f}" for name, entry in collected["benches"].items())
        + f"; total {collected['total_seconds']:.0f} s.", ""]
    lines += ["What each measures:", ""] + [f"* **{b.name}** (`tools/{b.tool}.py`): {b.what}." for b in BENCHES
                                           if b.name in collected["benches"]]
    return "\n".join(lines) + "\n\n" + GPU_CHECK_SECTION
