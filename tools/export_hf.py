"""Any backend's checkpoint -> Hugging Face folder.

See ``srdd_scale.cli.export_hf`` (also installed as ``srdd-export``).
"""
import sys

from srdd_scale.cli.export_hf import main

if __name__ == "__main__":
    sys.exit(main())
