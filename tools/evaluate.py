"""FID, prompt accuracy, analyser checks, validation loss.

See ``srdd_scale.cli.evaluate`` (also installed as ``srdd-evaluate``).
"""
import sys

from srdd_scale.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
