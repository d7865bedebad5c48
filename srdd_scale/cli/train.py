"""Train an SRDD transformer: ``torchrun --nproc_per_node=N tools/train.py CONFIG.yaml key=value ...``.

The same command runs under plain ``srun`` (ranks from SLURM variables) or alone. After SIGTERM/SIGUSR1 the
job saves a checkpoint at the next step boundary and exits with 124 (requeue me); a relaunch with the same
config resumes from the newest complete checkpoint in the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_int
from srdd_scale.config import add_config_args, config_from_args, parse_config_args
from srdd_scale.run_config import RunConfig


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--stop-at-step", type=positive_int, default=None,
                        help="save a checkpoint and exit 0 once this many steps are done (the run stays resumable)")
    args = parse_config_args(parser, argv)
    cfg = config_from_args(args, RunConfig)

    from srdd_scale.train import run

    summary = run(cfg, stop_at_step=args.stop_at_step)
    if summary["rank"] == 0:
        print(json.dumps(summary, default=str))
    return int(summary["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
