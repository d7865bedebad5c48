"""Evaluation: FID with local Inception weights, a pixel-level shapes analyser, prompt accuracy."""
