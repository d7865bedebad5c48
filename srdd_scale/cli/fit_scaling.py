"""Fit scaling laws to a finished sweep and write fits.json + PNG plots.

    python tools/fit_scaling.py runs/sweeps/demo_cpu [--loss eval:loss/mean] [--target-flops 1e21]
"""

from __future__ import annotations

import argparse
import sys

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int, positive_float
from srdd_scale.sweep.fit import FitError
from srdd_scale.sweep.report import analyse, format_summary


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", help="sweep directory holding points/*/result.json")
    parser.add_argument("--out", default=None, help="output folder (default: SWEEP_DIR/analysis)")
    parser.add_argument("--loss", default="train:loss/mean",
                        help="which loss to fit: train|eval : loss/mean|loss/last|loss/scale_k")
    parser.add_argument("--target-flops", type=positive_float, default=None,
                        help="training compute to recommend a model size and token count for")
    parser.add_argument("--bootstrap", type=non_negative_int, default=100,
                        help="bootstrap resamples of the parametric fit")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    try:
        summary = analyse(args.sweep_dir, args.out, args.loss, args.target_flops, args.bootstrap, args.seed)
    except FitError as err:
        print(f"fit error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
