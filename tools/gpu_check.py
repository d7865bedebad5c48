"""The prepared one-GPU check of issue 16: see ``srdd_scale.cli.gpu_check`` (also installed as ``srdd-gpu-check``)."""
import sys

from srdd_scale.cli.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
