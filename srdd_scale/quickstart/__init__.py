"""The quickstart's quality gates and its summary page (the pipeline itself is ``srdd_scale.cli.quickstart``)."""
