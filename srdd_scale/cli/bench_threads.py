"""Steps/s of the image tokenizer and the 2-process trainer per thread setting, with 0 and 1 busy background cores.

    python tools/bench_threads.py --assets outputs/quickstart --out bench_threads.json

Each measurement runs the real tool (srdd_scale.cli.train_tokenizer; torchrun srdd_scale.cli.train on the quickstart's
shards in ASSETS, a finished quickstart's --out folder) in a fresh process, so that the OpenMP wait policy is
read at start-up as in real use, and takes the rate from the tool's own metrics (first window dropped as
warm-up). The busy core is a `yes > /dev/null` process started by this tool and ended by its pid. Settings
alternate within each round, so that a change in the machine's other load spreads over all of them; the
1-minute load average is recorded before each measurement. `cpu_per_wall` (child CPU seconds / wall seconds)
shows spinning: a thread that waits actively burns a core without progress. A measurement stopped at
--timeout keeps the rate of the windows it finished (marked *).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from srdd_scale.analysis.bench_kit import write_report
from srdd_scale.cli import entry_point, tool_command
from srdd_scale.cli.args import positive_float, positive_int

ROOT = Path(__file__).resolve().parents[2]
# (name, intra-op threads per process, OMP_WAIT_POLICY or None for OpenMP's default spin-then-sleep)
SETTINGS = {
    "tokenizer": [("1 thread", 1, None), ("2 threads, default wait", 2, None),
                  ("2 threads, passive wait", 2, "PASSIVE")],
    # torchrun's default is 1 thread per process; 2 is what an inherited OMP_NUM_THREADS=2 gave before the
    # quickstart pinned it
    "trainer": [("1 thread/process", 1, None), ("2 threads/process, default wait", 2, None)],
}


def _child_env(threads: int, policy: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               WANDB_MODE="disabled")
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return env


def _run(command: list[str], env: dict[str, str], timeout: float) -> tuple[float, float, bool]:
    """(wall seconds, CPU seconds of the child and its children, whether it was stopped at `timeout`).

    The child gets its own process group, so that a stop also ends what it started (torchrun's workers).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        code, timed_out = child.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        code, timed_out = child.wait(), True
    if code != 0 and not timed_out:
        raise RuntimeError(f"{' '.join(command)} exited with {code}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), timed_out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bench_tokenizer(threads: int, policy: str | None, steps: int, work: Path, timeout: float) -> dict:
    out = work / "tokenizer"
    command = [*tool_command("train_tokenizer"), "configs/tokenizer/shapes_64.yaml",
               f"tokenizer_train.steps={steps}", "tokenizer_train.eval_every=0", "tokenizer_train.eval_images=8",
               "tokenizer_train.checkpoint_every=0", "tokenizer_train.log_every=10",
               f"tokenizer_train.num_threads={threads}", "--output", str(out)]
    wall, cpu, timed_out = _run(command, _child_env(threads, policy), timeout)
    metrics = out / "metrics.jsonl"
    records = [r for r in _jsonl(metrics) if r.get("kind") == "train"] if metrics.is_file() else []
    batch = 8
    rates = [r["images_per_s"] / batch for r in records if r["step"] > 10]
    return {"steps_per_s": sum(rates) / len(rates) if rates else None,
            "slowest_window_steps_per_s": min(rates) if rates else None,
            "steps_done": records[-1]["step"] if records else 0, "timed_out": timed_out, "wall_s": wall,
            "cpu_per_wall": cpu / wall}


def bench_trainer(threads: int, policy: str | None, steps: int, work: Path, timeout: float, assets: Path) -> dict:
    tokenizer, spm, shards = assets / "tokenizer" / "tokenizer", assets / "text" / "shapes_spm.model", assets / "shards"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "srdd_scale.cli.train",
               "configs/quickstart.yaml", "configs/train/fsdp.yaml", f"tokenizer.checkpoint={tokenizer}",
               f"text.tokenizer={spm}", f"data.train_path={shards / 'train'}",
               f"data.heldout_path={shards / 'heldout'}",
               f"logging.output_dir={work / 'runs'}", "logging.run_name=bench", f"train.total_steps={steps}",
               "train.warmup_steps=0",  # the recipe's 40 exceed a short run; the LR does not change the speed
               "train.eval_every=0", "train.sample_every=0", "train.checkpoint_every=0", "logging.log_every=1"]
    wall, cpu, timed_out = _run(command, _child_env(threads, policy), timeout)
    found = list((work / "runs").glob("bench-*/metrics.jsonl"))
    records = _jsonl(found[0]) if found else []
    seconds = [r["perf/step_seconds"] for r in records if "perf/step_seconds" in r and r["step"] > 3]
    return {"steps_per_s": len(seconds) / sum(seconds) if seconds else None,
            "slowest_step_s": max(seconds) if seconds else None, "timed_out": timed_out, "wall_s": wall,
            "cpu_per_wall": cpu / wall}


def measure(workload: str, setting: tuple, busy: int, args) -> dict:
    name, threads, policy = setting
    background = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="bench_threads_") as work:
            if workload == "tokenizer":
                result = bench_tokenizer(threads, policy, args.tokenizer_steps, Path(work), args.timeout)
            else:
                result = bench_trainer(threads, policy, args.trainer_steps, Path(work), args.timeout,
                                       Path(args.assets))
    finally:
        for process in background:
            process.kill()
            process.wait()
    return {"workload": workload, "setting": name, "threads": threads, "wait_policy": policy or "default",
            "busy_cores": busy, "load_average_1m_before": load, **result}


def table(results: list[dict]) -> str:
    lines = [f"{'workload':<10} {'setting':<34} {'busy':>4} {'load':>5} {'steps/s':>8} {'cpu/wall':>8}"]
    for r in results:
        rate = "none" if r["steps_per_s"] is None else f"{r['steps_per_s']:.2f}" + ("*" if r["timed_out"] else "")
        lines.append(f"{r['workload']:<10} {r['setting']:<34} {r['busy_cores']:>4} {r['load_average_1m_before']:>5.2f} "
                     f"{rate:>8} {r.get('cpu_per_wall', float('nan')):>8.2f}")
    return "\n".join(lines)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", help="a finished quickstart's --out folder (its tokenizer, caption model and "
                        "shards feed the trainer); without it only the tokenizer is measured")
    parser.add_argument("--workloads", default="tokenizer,trainer")
    parser.add_argument("--busy", default="0,1", help="background busy cores to measure with")
    parser.add_argument("--rounds", type=positive_int, default=1, help="rounds over all settings (alternating)")
    parser.add_argument("--tokenizer-steps", type=positive_int, default=80)
    parser.add_argument("--trainer-steps", type=positive_int, default=15)
    parser.add_argument("--timeout", type=positive_float, default=300,
                        help="seconds before one measurement is given up")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_threads-<time>.json)")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w != "trainer" or args.assets]
    results = []
    for _ in range(args.rounds):
        for busy in (int(b) for b in args.busy.split(",")):
            for workload in workloads:
                for setting in SETTINGS[workload]:
                    results.append(measure(workload, setting, busy, args))
                    print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    print("* stopped at --timeout: the rate of the windows it finished")
    write_report({"usable_cores": len(os.sched_getaffinity(0)), "results": results}, "bench_threads", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
