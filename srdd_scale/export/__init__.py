"""Hugging Face export/import: any backend's checkpoint -> an HF folder; the folder -> a pipeline or a new run."""
