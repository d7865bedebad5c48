"""Run a scaling sweep with submitit, show its state, and fit scaling laws to its results.

    python tools/sweep.py configs/sweep/demo_cpu.yaml [key=value ...] [--executor slurm|local|auto]
                          [--resubmit-failed] [--no-wait] [--train KEY=VALUE ...]
    python tools/sweep.py status configs/sweep/demo_cpu.yaml
    python tools/sweep.py fit configs/sweep/demo_cpu.yaml

`key=value` overrides the sweep config (e.g. executor.array_parallelism=2); `--train` adds trainer overrides
for every point (e.g. --train data.train_path=/data/shards). Points whose result.json exists are skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from srdd_scale.cli import entry_point
from srdd_scale.config import ConfigError, add_config_args, config_from_args, parse_config_args
from srdd_scale.sweep.config import SweepConfig
from srdd_scale.sweep.fit import FitError
from srdd_scale.sweep.grid import plan, sweep_dir
from srdd_scale.sweep.launch import format_status, launch, resolve_kind, sweep_states, to_launch
from srdd_scale.sweep.report import analyse, format_summary

COMMANDS = ("run", "status", "fit")


def _fit(sweep: SweepConfig) -> int:
    try:
        summary = analyse(sweep_dir(sweep), loss=sweep.fit.loss, target_flops=sweep.fit.target_flops or None,
                          num_bootstrap=sweep.fit.num_bootstrap, seed=sweep.fit.seed)
    except FitError as err:
        print(f"fit error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


@entry_point
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    parser = argparse.ArgumentParser(prog=f"sweep.py {command}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--executor", choices=("auto", "slurm", "local"), default=None,
                        help="force where points run (default: the config's executor.kind)")
    parser.add_argument("--resubmit-failed", action="store_true", help="also relaunch points that failed")
    parser.add_argument("--no-wait", action="store_true",
                        help="SLURM: return after submitting (fit later with `sweep.py fit`)")
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                        help="trainer override added to every point (repeatable)")
    args = parse_config_args(parser, argv)
    base = config_from_args(args, SweepConfig)
    try:
        sweep = dataclasses.replace(base, train_overrides=(*base.train_overrides, *args.train))
        points = plan(sweep)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if command == "status":
        print(format_status(sweep_states(sweep, points), sweep.fit.loss.split(":", 1)[1]))
        return 0
    if command == "fit":
        return _fit(sweep)

    kind = resolve_kind(sweep, args.executor)
    pending = to_launch(sweep_states(sweep, points), args.resubmit_failed)
    print(f"sweep {sweep.name}: {len(points)} points, {len(pending)} to launch on {kind} "
          f"(dir {sweep_dir(sweep)})")
    failures = launch(sweep, pending, kind, wait=not args.no_wait or kind == "local")
    states = sweep_states(sweep, points)
    print(format_status(states, sweep.fit.loss.split(":", 1)[1]))
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    if args.no_wait and kind == "slurm":
        return 0
    if any(s.state != "done" for s in states):
        print("not every point is done: fix and rerun with --resubmit-failed, then `sweep.py fit`", file=sys.stderr)
        return 1
    return _fit(sweep)


if __name__ == "__main__":
    sys.exit(main())
