"""Throughput and model FLOP utilisation: tokens/s, images/s, MFU, peak memory."""

from __future__ import annotations

import resource
import time

import torch

from srdd_scale.model.flops import flops_per_image
from srdd_scale.train.callbacks.base import Callback, StepReport
from srdd_scale.train.callbacks.hardware import device_peak_flops
from srdd_scale.train.state import TrainState


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class SpeedMonitor(Callback):
    """Adds ``perf/*`` metrics on each settled step, averaged over the steps since the previous one.

    Between settled steps the host runs ahead of an accelerator, so only a window that ends where the host has
    waited for the device measures it; eval, sampling and checkpoint time stay out (``on_step_done``).
    """

    def on_train_start(self, state: TrainState) -> None:
        cfg = state.cfg
        self.flops_per_image = flops_per_image(
            cfg.model, state.task.patch_nums, cfg.model.mask, cfg.text.max_length, training=True,
            vocab_size=state.task.tokenizer.vocab_size, latent_dim=state.task.tokenizer.latent_dim,
            text_dim=state.task.text_dim,
        )
        peak = cfg.logging.peak_flops or device_peak_flops(state.device, cfg.train.precision)
        self.cluster_peak = peak * state.env.world_size if peak else None  # None: unknown device, no MFU
        self.images_per_step = cfg.train.global_batch_size
        self.last_time = time.perf_counter()
        self.window_seconds, self.window_steps = 0.0, 0

    def on_step_end(self, state: TrainState, report: StepReport) -> None:
        now = time.perf_counter()
        self.window_seconds += now - self.last_time
        self.window_steps += 1
        self.last_time = now
        if not report.settled:
            return
        seconds = self.window_seconds / self.window_steps
        self.window_seconds, self.window_steps = 0.0, 0
        images_per_s = self.images_per_step / seconds
        report.metrics.update({
            "perf/step_seconds": seconds,
            "perf/images_per_s": images_per_s,
            "perf/tokens_per_s": images_per_s * state.task.tokens_per_image,
            "perf/peak_memory_gib": peak_memory_gib(state.device),
        })
        if self.cluster_peak:
            report.metrics["perf/mfu"] = images_per_s * self.flops_per_image / self.cluster_peak

    def on_step_done(self, state: TrainState) -> None:
        """Exclude eval/sampling/checkpoint time from the next step's throughput."""
        self.last_time = time.perf_counter()
