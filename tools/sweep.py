"""Run, inspect and fit a scaling sweep: see ``srdd_scale.cli.sweep`` (also installed as ``srdd-sweep``)."""
import sys

from srdd_scale.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
