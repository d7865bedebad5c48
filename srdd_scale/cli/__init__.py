"""Command-line tools; each module has ``main(argv=None) -> int`` and a thin shim in ``tools/``."""
