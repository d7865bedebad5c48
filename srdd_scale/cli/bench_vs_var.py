"""Side-by-side speed and memory of this stack against the official VAR code (FoundationVision/VAR).

    git clone https://github.com/FoundationVision/VAR /path/to/VAR
    python tools/bench_vs_var.py --var-root /path/to/VAR --label after
    python tools/bench_vs_var.py --var-root /path/to/VAR --device cuda --dtype bf16 --label gpu

Cases (VAR's 256 px schedule, 680 tokens, class-conditional, 1000 classes): a training step (forward,
backward, AdamW) at d4/d8/d16 with batch 4; sampling at d16/d20 with batch 1 and 8 (CFG 1.5, top-k 900,
top-p 0.96, VAR's linear guidance ramp, no image decode); VQ-VAE encode and decode of 4 images at 256 px.
Every (case, implementation) runs in its own process (so peak memory does not depend on what ran before),
the order alternates over rounds (a shared machine's load hits both sides alike) and the best round counts.
Weights are random with identical shapes on both sides (speed does not depend on them). VAR is imported
from `--var-root` at run time and never copied here; its optional fused kernels (flash-attn, xformers)
are used only if they are installed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from srdd_scale.analysis.bench_kit import write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_int
from srdd_scale.model.config import VAR_PATCH_NUMS_256
from srdd_scale.utils.peak_memory import PeakMemory
from srdd_scale.utils.rundir import bench_provenance

ROOT = Path(__file__).resolve().parents[2]
TINY = (1, 2, 3, 4)  # --tiny: a 4-scale schedule for CPU tests of the harness itself
NUM_CLASSES = 1000
MODEL_IMPLS = ("var", "markovian", "block_causal")
VQVAE_IMPLS = ("var", "ours")
HOW_TO_GET_VAR = (
    "bench_vs_var compares against the official VAR code, which is not part of this repository.\n"
    "Get it with:  git clone https://github.com/FoundationVision/VAR /path/to/VAR\n"
    "then run:     python tools/bench_vs_var.py --var-root /path/to/VAR"
)
TABLE_BEGIN = "<!-- bench_vs_var:{label}:begin -->"
TABLE_END = "<!-- bench_vs_var:{label}:end -->"


@dataclass(frozen=True)
class Case:
    """One measured workload; `impls` are the implementations compared on it."""

    name: str
    kind: str  # train | sample | encode | decode
    depth: int = 0
    batch: int = 4

    @property
    def impls(self) -> tuple[str, ...]:
        return VQVAE_IMPLS if self.kind in ("encode", "decode") else MODEL_IMPLS


CASES = {c.name: c for c in (
    Case("train_d4", "train", 4), Case("train_d8", "train", 8), Case("train_d16", "train", 16),
    Case("sample_d16_b1", "sample", 16, 1), Case("sample_d16_b8", "sample", 16, 8),
    Case("sample_d20_b1", "sample", 20, 1), Case("sample_d20_b8", "sample", 20, 8),
    Case("vqvae_encode", "encode"), Case("vqvae_decode", "decode"),
)}


def _autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ the two stacks


def _import_var(var_root: str | Path):
    """VAR's `models` package from a checkout (its flash-attn/xformers imports are optional there)."""
    root = str(Path(var_root).resolve())
    if not (Path(root) / "models" / "var.py").is_file():
        raise FileNotFoundError(f"--var-root {root}: no models/var.py there; expected a FoundationVision/VAR checkout")
    if root not in sys.path:
        sys.path.insert(0, root)
    import models  # noqa: PLC0415 (VAR's package, importable only once its root is on sys.path)
    return models


def _var_vqvae(models, patch_nums: tuple[int, ...], tiny: bool):
    kwargs = dict(ch=32, share_quant_resi=4) if tiny else dict(ch=160, share_quant_resi=4)
    return models.VQVAE(vocab_size=4096, z_channels=32, test_mode=True, v_patch_nums=patch_nums, **kwargs)


def _our_tokenizer(patch_nums: tuple[int, ...], tiny: bool):
    from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer  # noqa: PLC0415 (keep --help fast)

    if tiny:
        cfg = TokenizerConfig(image_size=64, ch=32, patch_nums=patch_nums)
    else:
        cfg = TokenizerConfig(patch_nums=patch_nums)
    return build_tokenizer(cfg)


def _var_model(models, vqvae, depth: int, patch_nums: tuple[int, ...]):
    """VAR as its build_vae_var builds it (without its global switch-off of torch's default inits)."""
    model = models.VAR(vqvae, num_classes=NUM_CLASSES, depth=depth, embed_dim=64 * depth, num_heads=depth,
                       drop_path_rate=0.1 * depth / 24, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1,
                       attn_l2_norm=True, patch_nums=patch_nums)
    model.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    return model


def _model_config(depth: int, **fields):
    """Our ModelConfig for the compared shapes: class-conditional, no text cross-attention."""
    from srdd_scale.model import ModelConfig  # noqa: PLC0415

    return ModelConfig(depth=depth, cross_attn=False, num_classes=NUM_CLASSES, **fields)


def _our_model(depth: int, mask: str, patch_nums: tuple[int, ...], attention_impl: str | None):
    from srdd_scale.model import build_model  # noqa: PLC0415

    extra = {} if attention_impl is None else {"attention_impl": attention_impl}
    return build_model(_model_config(depth, mask=mask, **extra), patch_nums, 4096, 32, None)


def _seeded_model(impl: str, models, vqvae, depth: int, patch_nums: tuple[int, ...], attention_impl: str | None,
                  device: torch.device):
    """Either side's model of ``depth`` from seed 0, so every process times the same initial weights."""
    torch.manual_seed(0)
    if impl == "var":
        return _var_model(models, vqvae, depth, patch_nums).to(device)
    return _our_model(depth, impl, patch_nums, attention_impl).to(device)


def _codes(batch: int, patch_nums: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 4096, (batch, p, p), generator=generator).to(device) for p in patch_nums]


# ------------------------------------------------------------------------------------------ one case


def _train_step_fn(case: Case, impl: str, device, dtype, patch_nums, tiny, var_root, attention_impl):
    """(build, step): build() creates model + optimizer inside the memory window; step() is one iteration."""
    codes = _codes(case.batch, patch_nums, device)
    labels = torch.arange(case.batch, device=device) % NUM_CLASSES
    targets = torch.cat([c.flatten(1) for c in codes], dim=1)
    if impl == "var":
        models = _import_var(var_root)
        vqvae = _var_vqvae(models, patch_nums, tiny).to(device)
        with torch.no_grad():
            inputs = vqvae.quantize.idxBl_to_var_input([c.flatten(1) for c in codes])
    else:
        from srdd_scale.model.loss import scale_losses  # noqa: PLC0415

        models = vqvae = None
        tokenizer = _our_tokenizer(patch_nums, tiny).to(device)
        with torch.no_grad():
            inputs = tokenizer.teacher_forcing_inputs(codes)
    state = {}

    def build() -> None:
        state["model"] = _seeded_model(impl, models, vqvae, case.depth, patch_nums, attention_impl, device).train()
        state["opt"] = torch.optim.AdamW(state["model"].parameters(), lr=1e-4, fused=device.type == "cuda")

    def step() -> None:
        model, opt = state["model"], state["opt"]
        with _autocast(device, dtype):
            if impl == "var":
                logits = model(labels, inputs)
                loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            else:
                logits = model(inputs, class_ids=labels)
                loss = scale_losses(logits, targets, patch_nums)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return build, step


def _sample_fn(case: Case, impl: str, device, dtype, patch_nums, tiny, var_root, attention_impl):
    labels = torch.arange(case.batch, device=device) % NUM_CLASSES
    top_k = 900
    if impl == "var":
        models = _import_var(var_root)
        vqvae = _var_vqvae(models, patch_nums, tiny).to(device)
        vqvae.fhat_to_img = lambda f_hat: f_hat  # "no decode": VAR's sampler ends in the VAE decoder
    else:
        from srdd_scale.model import SamplingConfig  # noqa: PLC0415
        from srdd_scale.model.sampler import sample  # noqa: PLC0415

        models = vqvae = None
        tokenizer = _our_tokenizer(patch_nums, tiny).to(device)
        sampling = SamplingConfig(cfg_scale=1.5, top_k=top_k, top_p=0.96)
    state = {}

    def build() -> None:
        state["model"] = _seeded_model(impl, models, vqvae, case.depth, patch_nums, attention_impl, device).eval()

    def step() -> None:
        with _autocast(device, dtype):
            if impl == "var":
                state["model"].autoregressive_infer_cfg(case.batch, labels, g_seed=0, cfg=1.5, top_k=top_k, top_p=0.96)
            else:
                sample(state["model"], tokenizer, class_ids=labels, cfg=sampling,
                       generator=torch.Generator(device=device).manual_seed(0))

    return build, step


def _vqvae_fn(case: Case, impl: str, device, dtype, patch_nums, tiny, var_root, attention_impl):
    size = 64 if tiny else 256
    images = (torch.rand(case.batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    state = {}

    def build() -> None:
        torch.manual_seed(0)
        if impl == "var":
            vae = _var_vqvae(_import_var(var_root), patch_nums, tiny).to(device).eval()
            encode = vae.img_to_idxBl
            decode = lambda idx: vae.idxBl_to_img(idx, same_shape=True, last_one=True)  # noqa: E731
        else:
            vae = _our_tokenizer(patch_nums, tiny).to(device).eval()
            encode, decode = vae.encode, vae.decode
        with torch.no_grad():
            state["indices"] = encode(images)
        state["run"] = (lambda: encode(images)) if case.kind == "encode" else (lambda: decode(state["indices"]))

    def step() -> None:
        with torch.no_grad(), _autocast(device, dtype):
            state["run"]()

    return build, step


def _total_mib(setup: PeakMemory, running: PeakMemory) -> float | None:
    """Peak growth over both windows, from setup's starting point (each window resets the peak it reads)."""
    if setup.mib is None or running.mib is None:
        return None
    return max(setup.mib, (running.base - setup.base) / 2**20 + running.mib)


def flop_bound(case: Case, impl: str, patch_nums: tuple[int, ...]) -> float | None:
    """VAR's executed FLOPs over ours for a model case: the speed-up equal kernel efficiency would give, i.e.
    the most the mask can buy when the dense matmuls are the same. VAR's training forward runs one masked
    kernel over all L^2 pairs, and its KV-cached sampler the block-causal pairs; ours runs only the pairs its
    mask allows (one unmasked call per scale, masks.first_key_scales). CFG doubles both sides alike. None for
    the VQ-VAE cases (same convolutions on both sides)."""
    from srdd_scale.model.flops import flops_per_image  # noqa: PLC0415
    from srdd_scale.model.masks import attention_pairs  # noqa: PLC0415

    if case.kind not in ("train", "sample") or impl == "var":
        return None
    training = case.kind == "train"
    var_pairs = sum(p * p for p in patch_nums) ** 2 if training else attention_pairs(patch_nums, "block_causal")
    var = flops_per_image(_model_config(case.depth, scale_cond=False), patch_nums, "block_causal", 0, training,
                          pairs=var_pairs)
    return var / flops_per_image(_model_config(case.depth, mask=impl), patch_nums, impl, 0, training)


def run_case(case: str, impl: str, device: str | torch.device = "cpu", dtype: str = "fp32", *,
             var_root: str | Path | None = None, tiny: bool = False, steps: int = 1, warmup: int | None = None,
             attention_impl: str | None = None) -> dict:
    """Time one (case, implementation) in this process: seconds per step (mean of `steps` after `warmup`) and
    peak memory growth in MiB over building the model/optimizer and running. Fresh processes give comparable
    memory figures on CPU (see PeakMemory). `var_root` is needed for impl "var"."""
    spec = CASES[case]
    if impl not in spec.impls:
        raise ValueError(f"impl {impl!r} does not apply to case {case!r}; expected one of {', '.join(spec.impls)}")
    device = torch.device(device)
    patch_nums = TINY if tiny else VAR_PATCH_NUMS_256
    depth = 2 if tiny else spec.depth
    spec = Case(spec.name, spec.kind, depth, spec.batch)
    if warmup is None:  # a train step's first call allocates the optimizer state; CUDA needs warm kernels
        warmup = 1 if device.type == "cuda" or spec.kind == "train" else 0
    make = {"train": _train_step_fn, "sample": _sample_fn}.get(spec.kind, _vqvae_fn)
    build, step = make(spec, impl, device, dtype, patch_nums, tiny, var_root, attention_impl)
    load = os.getloadavg()[0]
    with PeakMemory(device) as setup:
        build()
        for _ in range(warmup):
            step()
        _sync(device)
    with PeakMemory(device) as running:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        seconds = (time.perf_counter() - start) / steps
    return {"case": case, "impl": impl, "device": str(device), "dtype": dtype, "depth": depth,
            "batch": spec.batch, "seconds": seconds, "peak_mib": _total_mib(setup, running), "run_mib": running.mib,
            "threads": torch.get_num_threads(), "flop_bound": flop_bound(spec, impl, patch_nums),
            "load_average_1m": load, "tiny": tiny}


# ------------------------------------------------------------------------------------------ driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-root", default=None, help="a checkout of github.com/FoundationVision/VAR")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--rounds", type=positive_int, default=2, help="rounds (order alternates); the best counts")
    parser.add_argument("--steps", type=positive_int, default=1, help="timed steps per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast on both sides")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads per process")
    parser.add_argument("--tiny", action="store_true", help="d2 and a 4-scale schedule (tests of the harness)")
    parser.add_argument("--label", default="latest", help="table label in docs/benchmarks.md (e.g. before, after)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/bench_vs_var-<label>-<device>.json)")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="markdown file for the table ('' = none)")
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: one 'case:impl' per process
    return parser.parse_args(argv)


def _child(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    case, impl = args.job.split(":")
    result = run_case(case, impl, args.device, args.dtype, var_root=args.var_root, tiny=args.tiny, steps=args.steps)
    print(json.dumps(result))
    return 0


def _run_in_subprocess(args: argparse.Namespace, case: str, impl: str) -> dict:
    cmd = [sys.executable, "-m", "srdd_scale.cli.bench_vs_var", "--job", f"{case}:{impl}", "--device", args.device,
           "--dtype", args.dtype, "--threads", str(args.threads), "--steps", str(args.steps)]
    cmd += ["--var-root", args.var_root] + (["--tiny"] if args.tiny else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_vs_var {case}:{impl} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(runs: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (case, impl): the fastest run's record, with the lowest memory figures of all its runs."""
    best: dict[tuple[str, str], dict] = {}
    for run in runs:
        key = (run["case"], run["impl"])
        if key not in best or run["seconds"] < best[key]["seconds"]:
            same = [r for r in runs if (r["case"], r["impl"]) == key]
            lowest = {field: min((r[field] for r in same if r.get(field) is not None), default=None)
                      for field in ("peak_mib", "run_mib")}
            best[key] = {**run, **lowest, "rounds_s": [r["seconds"] for r in same]}
    return best


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if not num or not den else f"{num / den:.2f}x"


def _mib(record: dict) -> str:
    return " / ".join("-" if record.get(f) is None else f"{record[f]:.0f}" for f in ("peak_mib", "run_mib"))


def render_table(best: dict[tuple[str, str], dict], header: str) -> str:
    """Markdown: per case, VAR's time and memory growth and ours with ratios (speed-up = VAR s / ours s, beside
    the FLOP bound; memory = ours / VAR, total (build + run) / timed steps only)."""
    lines = [header, "",
             "| case | VAR s | markovian s (speed-up; FLOP bound) | block_causal s (speed-up; FLOP bound) "
             "| VAR MiB total / steps | markovian MiB (ratios) | block_causal MiB (ratios) | load 1m |",
             "|---|---|---|---|---|---|---|---|"]
    for name, spec in CASES.items():
        var = best.get((name, "var"))
        if var is None:
            continue
        ours = [best.get((name, impl)) for impl in spec.impls[1:]]
        if spec.impls == VQVAE_IMPLS:
            ours = ours + [None]
        cells = [name, f"{var['seconds']:.3g}"]
        for r in ours:
            bound = "" if r is None or r.get("flop_bound") is None else f"; {r['flop_bound']:.2f}x"
            cells.append("-" if r is None else f"{r['seconds']:.3g} ({_ratio(var['seconds'], r['seconds'])}{bound})")
        cells.append(_mib(var))
        for r in ours:
            cells.append("-" if r is None else f"{_mib(r)} ({_ratio(r.get('peak_mib'), var.get('peak_mib'))} / "
                                               f"{_ratio(r.get('run_mib'), var.get('run_mib'))})")
        loads = [var["load_average_1m"]] + [r["load_average_1m"] for r in ours if r is not None]
        cells.append(f"{min(loads):.1f}-{max(loads):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_doc_section(doc: Path, label: str, table: str) -> None:
    """Replace (or append) this label's block in the markdown file, leaving the other labels' tables alone."""
    begin, end = TABLE_BEGIN.format(label=label), TABLE_END.format(label=label)
    block = f"{begin}\n{table}{end}\n"
    text = doc.read_text() if doc.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.write_text(text)


def write_results(args: argparse.Namespace, runs: list[dict], rounds_done: int, out: Path) -> None:
    """JSON and the doc table of the runs done so far (rewritten after every process: a stopped run keeps them)."""
    best = best_of(runs)
    prov = bench_provenance()
    var_commit = subprocess.run(["git", "-C", args.var_root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or None
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    machine = prov["machine"]
    header = (f"**{args.label}** ({prov['time_utc']}, {device_name}, {args.dtype}, host `{machine['hostname']}` "
              f"({machine['cpu_count']} cores, {machine['platform']}), commit `{str(prov['git_commit'])[:12]}`"
              f"{' + uncommitted changes' if prov['git_dirty'] else ''}, VAR `{str(var_commit)[:12]}`, "
              f"torch {torch.__version__}; best of {rounds_done} alternating round(s), {args.steps} timed step(s) per "
              f"process; random weights of identical shapes; speed-up = VAR s / ours s; FLOP bound = VAR's executed "
              f"FLOPs / ours (the speed-up at equal kernel efficiency); memory = peak RSS growth over build + run "
              f"/ over the timed steps only, ratio = ours / VAR; load = 1-min load average at each process start)")
    table = render_table(best, header)
    write_report({"settings": {k: v for k, v in vars(args).items() if k != "job"}, "var_commit": var_commit,
                  "rounds_done": rounds_done, "runs": runs, "best": list(best.values())}, "bench_vs_var", out,
                 provenance=prov)
    if args.doc:
        write_doc_section(Path(args.doc), args.label, table)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.var_root is None:
        print(HOW_TO_GET_VAR, file=sys.stderr)
        return 2
    if args.job is not None:
        return _child(args)
    _import_var(args.var_root)  # a wrong path fails here, before any case runs
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"unknown case(s) {unknown}; expected some of {', '.join(CASES)}", file=sys.stderr)
        return 2
    jobs = [(name, impl) for name in names for impl in CASES[name].impls]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"bench_vs_var-{args.label}-{args.device}-{stamp}.json")
    runs = []
    for round_index in range(args.rounds):
        for case, impl in (jobs if round_index % 2 == 0 else jobs[::-1]):
            run = _run_in_subprocess(args, case, impl)
            runs.append({**run, "round": round_index})
            print(f"round {round_index} {case:<15} {impl:<13} {run['seconds']:8.3f} s  {_mib(run):>11} MiB  "
                  f"load {run['load_average_1m']:.1f}", flush=True)
            write_results(args, runs, rounds_done=round_index + 1, out=out)
    doc_note = f" and the '{args.label}' table of {args.doc}" if args.doc else ""
    print(render_table(best_of(runs), f"wrote {out}{doc_note}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
