"""Write the scaling guide: see ``srdd_scale.cli.scaling_guide`` (also installed as ``srdd-scaling-guide``)."""
import sys

from srdd_scale.cli.scaling_guide import main

if __name__ == "__main__":
    sys.exit(main())
