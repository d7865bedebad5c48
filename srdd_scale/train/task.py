"""The SRDD objective as the trainer sees it: frozen parts (image tokenizer, text encoder) + batch -> loss.

The transformer inputs are computed on the fly from the stored codes with the tokenizer's codebook and Phi
convolutions (VAR's teacher forcing, docs/method.md §2.2); no image encoder runs during training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from srdd_scale.model import build_model
from srdd_scale.model.loss import scale_losses
from srdd_scale.tokenizer import build_tokenizer, load_tokenizer, split_codes


@torch.no_grad()
def batch_to_model_inputs(batch: dict[str, torch.Tensor], tokenizer, text_encoder, use_class_ids: bool,
                          device: torch.device, cond_drop: torch.Tensor | None) -> dict[str, Any]:
    """A loader batch -> the transformer's forward kwargs: teacher-forcing inputs from the codes (codebook + Phi
    only), frozen text states, class ids. Shared by training and validation so both see the same inputs."""
    codes = batch["codes"].to(device, non_blocking=True)
    inputs: dict[str, Any] = {
        "teacher_inputs": tokenizer.teacher_forcing_inputs(split_codes(codes, tuple(tokenizer.patch_nums))),
        "cond_drop": None if cond_drop is None else cond_drop.to(device),
    }
    if text_encoder is not None:
        text_mask = batch["text_mask"].to(device)
        inputs["text_states"] = text_encoder(batch["text_ids"].to(device), text_mask)
        inputs["text_mask"] = text_mask
    if use_class_ids:
        inputs["class_ids"] = batch["class_ids"].to(device)
    return inputs


class SRDDTask:
    """Holds the frozen modules on ``device`` and turns a loader batch into the loss of the wrapped model."""

    def __init__(self, cfg: Any, device: torch.device):
        self.cfg = cfg
        self.device = device
        if cfg.tokenizer.checkpoint:
            tokenizer = load_tokenizer(cfg.tokenizer.checkpoint, patch_nums=tuple(cfg.tokenizer.patch_nums))
        else:  # a seeded random tokenizer: only meaningful for smoke tests on shards made with the same one
            torch.manual_seed(cfg.train.seed)
            tokenizer = build_tokenizer(cfg.tokenizer)
        self.tokenizer = tokenizer.to(device).eval().requires_grad_(False)
        self.patch_nums = tuple(self.tokenizer.patch_nums)
        self.tokens_per_image = self.tokenizer.tokens_per_image
        self.text_encoder = None
        if cfg.model.cross_attn:
            from srdd_scale.text import FrozenTextEncoder

            self.text_encoder = FrozenTextEncoder(cfg.text).to(device)

    @property
    def text_dim(self) -> int | None:
        return self.text_encoder.dim if self.text_encoder is not None else None

    def expected_meta(self) -> dict[str, Any]:
        """What the MDS shards' meta.json must say for this model (check_meta refuses anything else)."""
        from srdd_scale.data.mds import tokenizer_meta
        from srdd_scale.text import load_text_tokenizer

        text_tokenizer = load_text_tokenizer(self.cfg.text) if self.text_encoder is not None else None
        return tokenizer_meta(self.tokenizer, text_tokenizer)

    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model, self.patch_nums, self.tokenizer.vocab_size, self.tokenizer.latent_dim,
                           self.text_dim)

    def model_inputs(self, batch: dict[str, torch.Tensor], cond_drop: torch.Tensor | None) -> dict[str, Any]:
        """Keyword arguments of the model's forward for one micro-batch (frozen parts run without grad)."""
        return batch_to_model_inputs(batch, self.tokenizer, self.text_encoder, self.cfg.model.num_classes > 0,
                                     self.device, cond_drop)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], cond_drop: torch.Tensor | None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(**self.model_inputs(batch, cond_drop))
        targets = batch["codes"].to(self.device, non_blocking=True)
        return scale_losses(logits, targets, self.patch_nums, self.cfg.model.loss_weighting,
                            self.cfg.model.label_smoothing)
