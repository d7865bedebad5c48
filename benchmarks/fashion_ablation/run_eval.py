#!/usr/bin/env python
"""Scores every row of the Fashion-MNIST ablation (docs/reproduction.md) with tools/eval_generation.py, and trains
the two distilled students, as a queue of jobs run by ``--workers`` processes of one thread each.

    python benchmarks/fashion_ablation/run_eval.py [--workers 2] [--out benchmarks/fashion_ablation/results]

A job runs once its inputs exist (a sweep point's result.json, a CFG sweep's JSON, a student's checkpoint) and is
skipped when its output exists, so the script can start while the sweep still trains and can be rerun after a
stop. Jobs are taken in list order: the rows every seed needs first, the extras after.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

RUNS = Path("runs/sweeps/fashion_ablation")
TEST, VALIDATION = "data/fashion_mnist/test", "data/fashion_mnist/train"  # no validation split: CFG picked on train
FEATURES = Path("runs/repro/features")
GRIDS = Path("runs/repro/grids")
STUDENTS = Path("runs/repro/students")
MR = ["sampling.resample=mask", "sampling.mr_steps=3", "sampling.p_resample=0.02"]
SR = ["sampling.resample=simple", "sampling.sr_steps=1"]
MASKS = ("markovian", "block_causal", "markovian_prev")


@dataclasses.dataclass
class Job:
    name: str
    output: Path  # the job is done once this exists
    argv: Callable[[], list[str]]  # built when the job starts (it may read an input's content)
    inputs: list[Path] = dataclasses.field(default_factory=list)


def point_result(mask: str, seed: int) -> Path:
    """The sweep point's result.json (written when the point finishes); one budget per sweep folder."""
    found = sorted((RUNS / "points").glob(f"C*-d4-{mask}-s{seed}"))
    if len(found) > 1:
        raise SystemExit(f"{RUNS}/points holds several budgets for {mask} s{seed}: {[p.name for p in found]}")
    return (found[0] if found else RUNS / "points" / f"missing-{mask}-s{seed}") / "result.json"


def point_dir(mask: str, seed: int) -> Path:
    """The run folder the finished sweep point recorded."""
    return Path(json.loads(point_result(mask, seed).read_text())["run_dir"])


def teacher(seed: int) -> Path:
    """The HF export of seed's SDD (markovian) point: the students' initialisation and distillation teacher."""
    return Path(f"runs/repro/export_sdd_s{seed}")


def best_cfg(sweep_json: Path) -> str:
    return f"sampling.cfg_scale={json.loads(sweep_json.read_text())['best_cfg']}"


def jobs(args) -> list[Job]:
    out = Path(args.out)
    evaluate = [sys.executable, "tools/eval_generation.py", "--threads", "1"]

    def row(name: str, mask: str, seed: int, extra: Callable[[], list[str]] = list, inputs=(), checkpoint=None,
            per_class: int = args.per_class, features: bool = True) -> Job:
        def argv() -> list[str]:
            source = checkpoint() if checkpoint else str(point_dir(mask, seed))
            return [*evaluate, "--checkpoint", source, "--reference", TEST,
                    "--reference-per-class", str(args.reference_per_class), "--per-class", str(per_class),
                    "--bootstrap", str(args.bootstrap), "--out", str(out / f"{name}.json"),
                    *(["--features-out", str(FEATURES / f"{name}.npz"), "--grid-out", str(GRIDS / f"{name}.png")]
                      if features else []), *extra()]
        return Job(name, out / f"{name}.json", argv, [point_result(mask, seed), *inputs])

    def cfg_sweep(mask: str, seed: int) -> Job:
        name = f"cfgsweep-{mask}-s{seed}"
        return Job(name, out / f"{name}.json", lambda: [
            *evaluate, "--checkpoint", str(point_dir(mask, seed)), "--reference", VALIDATION,
            "--reference-per-class", str(args.validation_per_class), "--per-class", str(args.cfg_per_class),
            "--bootstrap", "0", "--cfg-sweep", args.cfg_values, "--out", str(out / f"{name}.json")],
            [point_result(mask, seed), out / ".reference-validation"])

    def export_teacher(seed: int) -> Job:
        return Job(f"export-teacher-s{seed}", teacher(seed) / "config.json", lambda: [
            sys.executable, "tools/export_hf.py", str(point_dir("markovian", seed)), str(teacher(seed))],
            [point_result("markovian", seed)])

    def student(kind: str, seed: int) -> Job:
        """A student of seed's SDD teacher, trained with that seed (distill: teacher KL; finetune: CE only)."""
        name = f"{kind}-s{seed}"
        extra = [f"train.distill_from={teacher(seed)}"] if kind == "distill" else [
            "train.distill_weight=0", "train.distill_from="]
        return Job(f"train-{name}", STUDENTS / f"{name}.done", lambda: [
            "bash", "-c", f"torchrun --nproc_per_node=1 --master_port={29700 + 10 * seed + len(kind)} "
            f"tools/train.py configs/experiments/fashion_32_distill.yaml configs/train/ddp.yaml "
            f"train.init_from={teacher(seed)} train.seed={seed} {' '.join(extra)} "
            f"logging.output_dir={STUDENTS} logging.run_name={name} && touch {STUDENTS / (name + '.done')}"],
            [teacher(seed) / "config.json"])

    def student_dir(name: str) -> str:
        return str(sorted(STUDENTS.glob(f"{name}-*"))[0])

    seeds = range(args.seeds)
    queue = [Job("reference-test", out / ".reference-test", lambda: [
        sys.executable, "-c", "import sys; from srdd_scale.eval.generation import reference as r; "
        f"r('{TEST}', {args.reference_per_class}, 32, 'runs/eval_cache'); open(sys.argv[1], 'w').close()",
        str(out / ".reference-test")]),
        Job("reference-validation", out / ".reference-validation", lambda: [
            sys.executable, "-c", "import sys; from srdd_scale.eval.generation import reference as r; "
            f"r('{VALIDATION}', {args.validation_per_class}, 32, 'runs/eval_cache'); open(sys.argv[1], 'w').close()",
            str(out / ".reference-validation")])]
    ready = [out / ".reference-test"]
    for seed in seeds:
        queue += [row(f"{mask}-s{seed}", mask, seed, inputs=ready) for mask in MASKS]
    for seed in seeds:
        queue += [row(f"markovian-s{seed}-mr", "markovian", seed, lambda: MR, ready),
                  row(f"markovian-s{seed}-sr", "markovian", seed, lambda: SR, ready)]
    for seed in seeds:
        for mask in ("markovian", "block_causal"):
            sweep = cfg_sweep(mask, seed)
            queue += [sweep, row(f"{mask}-s{seed}-cfg", mask, seed, lambda s=sweep.output: [best_cfg(s)],
                                 [*ready, sweep.output])]
    for seed in seeds:
        queue += [export_teacher(seed), student("distill", seed), student("finetune", seed)]
        for kind in ("distill", "finetune"):
            name = f"{kind}-s{seed}"
            queue.append(row(f"student-{name}", "markovian", seed, inputs=[*ready, STUDENTS / f"{name}.done"],
                             checkpoint=lambda n=name: student_dir(n)))
    for mask in MASKS:  # FID vs training FLOPs: seed 0's checkpoints at a quarter, half, three quarters and the end
        for step in args.curve_steps.split(","):
            queue.append(row(f"curve-{mask}-s0-{step}", mask, 0, inputs=ready, per_class=args.curve_per_class,
                             features=False, checkpoint=lambda m=mask, s=step: str(
                                 point_dir(m, 0) / "checkpoints" / f"step_{int(s):08d}") if s != "final"
                             else str(point_dir(m, 0))))
    return queue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/fashion_ablation/results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=167, help="samples per class per seed (3 seeds: 5,010)")
    parser.add_argument("--reference-per-class", type=int, default=500, help="test images per class")
    parser.add_argument("--bootstrap", type=int, default=10, help="bootstrap resamples per seed row")
    parser.add_argument("--cfg-values", default="0.5,1.5,3")
    parser.add_argument("--cfg-per-class", type=int, default=30)
    parser.add_argument("--validation-per-class", type=int, default=100)
    parser.add_argument("--curve-steps", default="100,200,300,final")
    parser.add_argument("--curve-per-class", type=int, default=25)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pending, running = jobs(args), {}
    logs = Path("runs/repro/eval_logs")
    logs.mkdir(parents=True, exist_ok=True)
    while pending or running:
        for name, (process, job) in list(running.items()):
            if process.poll() is not None:
                del running[name]
                ok = process.returncode == 0 and job.output.exists()
                print(f"{time.strftime('%H:%M:%S')} {'done' if ok else 'FAILED'} {name}", flush=True)
        for job in list(pending):
            if len(running) >= args.workers:
                break
            if job.output.exists():
                pending.remove(job)
            elif all(p.exists() for p in job.inputs):
                pending.remove(job)
                try:
                    argv = job.argv()
                except (OSError, ValueError, KeyError, IndexError) as error:  # an input it reads is not usable
                    print(f"{time.strftime('%H:%M:%S')} FAILED {job.name}: {error}", flush=True)
                    continue
                print(f"{time.strftime('%H:%M:%S')} start {job.name}", flush=True)
                with open(logs / f"{job.name}.log", "w") as log:
                    running[job.name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), job)
        if not running and pending and not any(all(p.exists() for p in j.inputs) for j in pending):
            if all(point_result(m, s).exists() for m in MASKS for s in range(args.seeds)):
                print("stuck (an input failed): " + ", ".join(j.name for j in pending), flush=True)
                return 1
        time.sleep(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
