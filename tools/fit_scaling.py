"""Fit scaling laws to a finished sweep: see ``srdd_scale.cli.fit_scaling`` (also installed as ``srdd-fit-scaling``)."""
import sys

from srdd_scale.cli.fit_scaling import main

if __name__ == "__main__":
    sys.exit(main())
