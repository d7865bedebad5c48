"""Image batches for tokenizer training: any data source, reshuffled per epoch, resumable by position."""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch

from srdd_scale.data.config import DataConfig
from srdd_scale.data.preprocess import SkipSample, image_to_tensor
from srdd_scale.data.sources import iter_refs, list_inputs, part_slice, resolve_source


def to_tensor_or_none(sample, cfg: DataConfig) -> torch.Tensor | None:
    """Preprocess one RawSample; unreadable or too-small images come back as None (counted by the caller)."""
    if sample.skip_reason is not None or sample.image is None:
        return None
    try:
        return image_to_tensor(sample.image, cfg.image_size, cfg.resize_ratio, cfg.min_size, cfg.max_image_pixels,
                               cfg.max_aspect_ratio)
    except SkipSample:
        return None


class TrainImageStream:
    """Endless batches of this rank's part of the training images.

    Each epoch permutes the inputs (images, or whole .tar shards) with `seed + epoch`, then gives rank r
    the r-th contiguous part. `state()` / `load_state()` resume at the same epoch and position.
    """

    def __init__(self, cfg: DataConfig, batch_size: int, seed: int, rank: int, world_size: int):
        self.cfg, self.batch_size, self.seed = cfg, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.refs = list_inputs(cfg, "train")
        self.epoch, self.position, self.skipped = 0, 0, 0

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "skipped": self.skipped}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], state["skipped"]

    def _epoch_samples(self) -> Iterator:
        order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.refs))
        refs = [self.refs[int(i)] for i in order]
        return iter_refs(self.cfg, part_slice(refs, self.rank, self.world_size), "train")

    def __iter__(self) -> Iterator[torch.Tensor]:
        batch: list[torch.Tensor] = []
        while True:
            samples = self._epoch_samples()
            started_at = self.position
            for _ in range(self.position):  # resume: skip what this epoch already gave
                next(samples, None)
            yielded_any = False
            for sample in samples:
                self.position += 1
                image = to_tensor_or_none(sample, self.cfg)
                if image is None:
                    self.skipped += 1
                    continue
                yielded_any = True
                batch.append(image)
                if len(batch) == self.batch_size:
                    yield torch.stack(batch)
                    batch = []
            if not yielded_any and started_at == 0:
                raise RuntimeError(f"rank {self.rank}: no usable training image in data.input={self.cfg.input!r} "
                                   f"({self.skipped} skipped)")
            self.epoch, self.position = self.epoch + 1, 0


def load_eval_images(cfg: DataConfig, eval_input: str, count: int) -> tuple[torch.Tensor, str]:
    """Up to `count` held-out images and a label saying where they came from."""
    if eval_input:
        cfg, split, label = dataclasses.replace(cfg, input=eval_input, source="auto"), "train", eval_input
    elif resolve_source(cfg) == "synthetic":
        cfg = dataclasses.replace(cfg, synthetic_heldout_samples=max(count, cfg.synthetic_heldout_samples))
        split, label = "heldout", "synthetic heldout split"
    else:
        split, label = "train", "first training images (no eval_input given)"
    images = []
    for sample in iter_refs(cfg, list_inputs(cfg, split), split):
        image = to_tensor_or_none(sample, cfg)
        if image is not None:
            images.append(image)
        if len(images) == count:
            break
    if not images:
        raise RuntimeError(f"no usable evaluation image from {label}")
    return torch.stack(images), label
