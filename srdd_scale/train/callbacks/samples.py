"""Periodic sample grids for fixed prompts (PNG under ``<run_dir>/samples`` and in wandb).

The weights are gathered to a plain copy of the model on rank 0, so sampling works the same for DDP, FSDP and
every ZeRO stage (the sampler calls model internals that sharded wrappers would not gather).
"""

from __future__ import annotations

import torch

from srdd_scale.train.callbacks.base import Callback, StepReport
from srdd_scale.train.state import TrainState


class SampleGrid(Callback):
    """Every ``train.sample_every`` steps: one image per fixed prompt (or class), same noise each time."""

    def on_train_start(self, state: TrainState) -> None:
        cfg = state.cfg
        self.enabled = bool(cfg.train.sample_every) and state.env.is_main
        if not self.enabled:
            return
        self.text_ids = self.text_mask = self.class_ids = None
        if state.task.text_encoder is not None:
            from srdd_scale.text import load_text_tokenizer, pad_text_ids

            text_tokenizer = load_text_tokenizer(cfg.text)
            self.text_ids, self.text_mask = pad_text_ids(text_tokenizer.encode(list(cfg.train.sample_prompts)),
                                                         text_tokenizer.pad_id)
        if cfg.model.num_classes > 0:
            self.class_ids = torch.tensor(cfg.train.sample_class_ids or range(cfg.model.num_classes)[:4])

    def on_step_end(self, state: TrainState, report: StepReport) -> None:
        every = state.cfg.train.sample_every
        if not every or (report.step % every and report.step != state.cfg.train.total_steps):
            return
        weights = state.backend.full_state_dict()  # collective: every rank takes part
        if not self.enabled:
            return
        with state.rng_isolated():
            report.media["samples"] = str(self._sample_to_png(state, weights, report.step))
        report.log = True

    @torch.no_grad()
    def _sample_to_png(self, state: TrainState, weights: dict[str, torch.Tensor], step: int):
        from torchvision.utils import save_image

        from srdd_scale.model import SamplingConfig
        from srdd_scale.model.sampler import sample

        device, task = state.device, state.task
        model = task.build_model().to(device)
        model.load_state_dict(weights)
        model.eval()
        kwargs = {"text_states": None, "text_mask": None, "class_ids": None}
        if self.text_ids is not None:
            kwargs["text_mask"] = self.text_mask.to(device)
            kwargs["text_states"] = task.text_encoder(self.text_ids.to(device), kwargs["text_mask"])
        if self.class_ids is not None:
            kwargs["class_ids"] = self.class_ids.to(device)
        generator = torch.Generator(device).manual_seed(state.cfg.train.seed)
        indices = sample(model, task.tokenizer, cfg=SamplingConfig(), generator=generator, **kwargs)
        images = task.tokenizer.decode(indices).float().clamp(-1, 1)
        path = state.run_dir / "samples" / f"step_{step:08d}.png"
        save_image((images + 1) / 2, path, nrow=min(8, images.shape[0]))
        return path
