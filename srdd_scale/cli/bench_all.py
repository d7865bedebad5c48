"""Run every benchmark at one size, collect their JSONs into one file and write the markdown table.

    python tools/bench_all.py              # CPU sizes: < 10 min on 2 cores
    python tools/bench_all.py --gpu        # one GPU: <= 8 min (bf16, VAR's 256 px schedule, d16)
    python tools/bench_all.py --only loader,model

Each bench tool runs in its own process with the arguments in srdd_scale/analysis/benchmarks.py (BENCHES) and
writes its own JSON; a bench that fails or passes --timeout is recorded with its error and the rest still run.
Output: benchmarks/results/<date>-<host>[-gpu].json (every tool's JSON + machine, versions, commit) and
docs/benchmarks.md (the table, also printed).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from srdd_scale.analysis.bench_kit import write_report
from srdd_scale.analysis.benchmarks import BENCHES, render_markdown
from srdd_scale.cli import entry_point, tool_command
from srdd_scale.cli.args import non_negative_int, positive_float
from srdd_scale.utils.rundir import PROJECT_ROOT as ROOT
from srdd_scale.utils.rundir import bench_provenance


def error_summary(output: str) -> str:
    """The last line that names an error (a traceback's final line), else the last line of the output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or "error:" in line]
    return (named or lines or ["no output"])[-1]


def run_bench(bench, gpu: bool, out: Path, timeout: float, threads: int) -> dict:
    """One bench tool in a subprocess; its JSON, or its error line and output tail when it failed."""
    cmd = [*tool_command(bench.tool), *(bench.gpu_args if gpu else bench.cpu_args), "--out", str(out)]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        failed = proc.returncode != 0 or not out.is_file()
        error = f"exit {proc.returncode}: {error_summary(proc.stdout + proc.stderr)}" if failed else None
        output_tail = (proc.stdout + proc.stderr)[-8000:] if failed else None
    except subprocess.TimeoutExpired:
        error, output_tail = f"timed out after {timeout:.0f} s", None
    seconds = time.perf_counter() - started
    print(f"  {bench.name}: {'ok' if error is None else 'FAILED'} in {seconds:.0f} s", flush=True)
    entry = {"command": cmd[1:], "seconds": seconds}
    if error is None:
        entry["result"] = json.loads(out.read_text())
    else:
        entry["error"] = error
        entry["output_tail"] = output_tail
    return entry


@entry_point
def main(argv: list[str] | None = None) -> int:
    names = [b.name for b in BENCHES]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="GPU sizes (needs CUDA)")
    parser.add_argument("--only", default=",".join(names), help=f"comma-separated subset of {', '.join(names)}")
    parser.add_argument("--timeout", type=positive_float, default=400, help="seconds allowed per bench")
    parser.add_argument("--threads", type=non_negative_int, default=None,
                        help="OMP_NUM_THREADS of every bench (default: 1 on CPU, where a shared machine's "
                        "oversubscribed OpenMP threads distort timings many-fold; unset with --gpu); 0 = unset")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    selected = args.only.split(",")
    unknown = sorted(set(selected) - set(names))
    if unknown:
        sys.exit(f"error: --only {','.join(unknown)}: expected names among {', '.join(names)}")
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: --gpu needs a CUDA device (torch.cuda.is_available() is False)")

    threads = (0 if args.gpu else 1) if args.threads is None else args.threads
    started = time.perf_counter()
    prov = bench_provenance()
    benches = {}
    with tempfile.TemporaryDirectory(prefix="bench_all_") as tmp:
        for bench in BENCHES:
            if bench.name in selected:
                benches[bench.name] = run_bench(bench, args.gpu, Path(tmp) / f"{bench.name}.json", args.timeout,
                                                threads)
    mode = "gpu" if args.gpu else "cpu"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    results_file = Path(args.results_dir) / f"{stamp}-{socket.gethostname()}{'-gpu' if args.gpu else ''}.json"
    collected = {
        "mode": mode, "omp_num_threads": threads or None, "benches": benches,
        "total_seconds": time.perf_counter() - started,
        "load_average_start": prov["load_average_1m"], "load_average_end": os.getloadavg()[0],
        "results_file": str(results_file.relative_to(ROOT) if results_file.is_relative_to(ROOT) else results_file),
    }
    write_report(collected, "bench_all", results_file, provenance=prov)
    markdown = render_markdown({**collected, "provenance": prov})
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(markdown)
    print(markdown)
    print(f"wrote {args.markdown}")
    return 0 if all("error" not in e for e in benches.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
