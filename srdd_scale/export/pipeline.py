"""`SRDDPipeline`: an exported folder -> prompts (or class ids) in, PIL images out, with srdd_scale's own sampler."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from srdd_scale.config import build
from srdd_scale.export.folder import (
    IMAGE_TOKENIZER_DIR, check_export_folder, check_identity, read_sampling_defaults, text_paths,
)
from srdd_scale.export.importing import load_exported_weights
from srdd_scale.model import SamplingConfig, SRDDTransformer, build_model
from srdd_scale.model.hf import SRDDConfig
from srdd_scale.text.tokenizer import pad_text_ids


def _local_text_config(text_config: dict[str, Any], folder: Path):
    """TextConfig of the export, its tokenizer/encoder paths resolved inside the folder (or refused)."""
    from srdd_scale.text import TextConfig

    return build(TextConfig, {**text_config, **text_paths(folder, text_config)}, prefix="text_config")


def images_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> RGB PIL images."""
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(np.ascontiguousarray(p.permute(1, 2, 0).cpu().numpy())) for p in pixels]


def pil_to_images(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """RGB PIL images resized (no crop) to size x size -> [B, 3, size, size] in [-1, 1]."""
    pixels = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2) / 127.5 - 1


class SRDDPipeline:
    """The transformer, the image tokenizer and (for text models) the caption tokenizer + frozen text encoder."""

    def __init__(self, model: SRDDTransformer, tokenizer, text_tokenizer=None, text_encoder=None,
                 sampling: SamplingConfig | None = None, config: Optional[SRDDConfig] = None):
        self.model = model.eval()
        self.tokenizer = tokenizer.eval()
        self.text_tokenizer = text_tokenizer
        self.text_encoder = text_encoder
        self.sampling = sampling or SamplingConfig()
        self.config = config

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        patch_nums: Optional[Sequence[int]] = None) -> "SRDDPipeline":
        """Load an export written by tools/export_hf.py; every file is checked first (errors name the file).

        `patch_nums` samples on a subset of the exported schedule (same first and last scale), embeddings re-laid
        as for scale distillation (export/importing.py); without fine-tuning, expect lower quality.
        """
        from srdd_scale.tokenizer import load_tokenizer

        folder = Path(folder)
        check_export_folder(folder)
        config = SRDDConfig.from_pretrained(str(folder))
        schedule = tuple(int(p) for p in (patch_nums or config.patch_nums))
        model = build_model(config.model_config(), schedule, config.vocab_size, config.latent_dim, config.text_dim)
        load_exported_weights(model, folder)
        identities = getattr(config, "identities", None) or {}
        tokenizer = load_tokenizer(folder / IMAGE_TOKENIZER_DIR)  # the exported schedule: what identity covers
        check_identity(folder, "image tokenizer", tokenizer.identity(), identities.get("image_tokenizer"))
        if schedule != tuple(tokenizer.patch_nums):
            tokenizer.set_patch_nums(schedule)
        text_tokenizer = text_encoder = None
        if config.text_dim is not None:
            from srdd_scale.text import FrozenTextEncoder, load_text_tokenizer

            text_cfg = _local_text_config(config.text_config, folder)
            text_tokenizer = load_text_tokenizer(text_cfg)
            check_identity(folder, "text tokenizer", text_tokenizer.identity(), identities.get("text_tokenizer"))
            text_encoder = FrozenTextEncoder(text_cfg).to(device)
            if text_encoder.dim != config.text_dim:
                raise ValueError(f"{folder}: text encoder {text_cfg.encoder!r} has width {text_encoder.dim}, "
                                 f"config.json text_dim={config.text_dim}")
        sampling = dataclasses.replace(SamplingConfig(), **read_sampling_defaults(folder))
        return cls(model.to(device), tokenizer.to(device), text_tokenizer, text_encoder, sampling, config)

    @property
    def device(self) -> torch.device:
        return self.model.pos_embed.device

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states [B, T, dim] and mask [B, T] of `prompts`, right-padded to the longest one."""
        if self.text_encoder is None:
            raise ValueError("this model is not text-conditional (config.json text_dim is null): pass class_ids")
        text_ids, text_mask = pad_text_ids(self.text_tokenizer.encode(list(prompts)), self.text_tokenizer.pad_id)
        text_mask = text_mask.to(self.device)
        return self.text_encoder(text_ids.to(self.device), text_mask), text_mask

    def condition(self, prompts: Optional[Sequence[str]], class_ids: Optional[Sequence[int]]) -> dict[str, Any]:
        """Sampler keyword arguments for one batch: text states/mask and/or class ids (None where absent)."""
        kwargs: dict[str, Any] = {"text_states": None, "text_mask": None, "class_ids": None}
        if prompts is not None:
            kwargs["text_states"], kwargs["text_mask"] = self.encode_prompts(prompts)
        if class_ids is not None:
            if not self.model.cfg.num_classes:
                raise ValueError("this model is not class-conditional (config.json num_classes is 0): pass prompts")
            kwargs["class_ids"] = torch.as_tensor(list(class_ids), dtype=torch.long, device=self.device)
        return kwargs

    def _sampling(self, sampling: Optional[SamplingConfig], overrides: dict[str, Any]) -> SamplingConfig:
        cfg = dataclasses.replace(sampling or self.sampling, **overrides)
        cfg.validate()
        return cfg

    @torch.no_grad()
    def generate_codes(self, prompts: Optional[Sequence[str]] = None, class_ids: Optional[Sequence[int]] = None,
                       *, num_images: Optional[int] = None, sampling: Optional[SamplingConfig] = None,
                       generator: Optional[torch.Generator] = None, seed: int = 0, **overrides) -> list[torch.Tensor]:
        """Per-scale token maps of one batch (one image per prompt / class id, or `num_images` unconditional)."""
        generator = generator or torch.Generator(self.device).manual_seed(seed)
        from srdd_scale.model.sampler import sample

        return sample(self.model, self.tokenizer, cfg=self._sampling(sampling, overrides), generator=generator,
                      batch_size=num_images, **self.condition(prompts, class_ids))

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor]) -> list[Image.Image]:
        return images_to_pil(self.tokenizer.decode(codes))

    def __call__(self, prompts: Optional[Sequence[str]] = None, class_ids: Optional[Sequence[int]] = None, *,
                 num_images: Optional[int] = None, batch_size: int = 16, seed: int = 0,
                 sampling: Optional[SamplingConfig] = None, **overrides) -> list[Image.Image]:
        """One image per prompt (or class id; or `num_images` unconditional ones), sampled `batch_size` at a time.

        One generator seeded with `seed` runs through the batches in order, so a call is reproducible for
        a given batch size. `overrides` replace SamplingConfig fields (cfg_scale=3.0, top_k=0, ...).
        """
        items = list(prompts) if prompts is not None else list(class_ids) if class_ids is not None else None
        total = len(items) if items is not None else int(num_images or 1)
        generator = torch.Generator(self.device).manual_seed(seed)
        images: list[Image.Image] = []
        for begin in range(0, total, batch_size):
            end = min(total, begin + batch_size)
            chunk = None if items is None else items[begin:end]
            codes = self.generate_codes(
                prompts=chunk if prompts is not None else None, class_ids=chunk if prompts is None else None,
                num_images=end - begin, sampling=sampling, generator=generator, **overrides)
            images.extend(self.decode(codes))
        return images

    @torch.no_grad()
    def edit(self, mode: str, images: Sequence[Image.Image], known: Optional[torch.Tensor] = None,
             prompts: Optional[Sequence[str]] = None, class_ids: Optional[Sequence[int]] = None, *, seed: int = 0,
             sampling: Optional[SamplingConfig] = None, **overrides) -> list[Image.Image]:
        """Zero-shot editing (docs/method.md §7) via model/editing.py.

        `inpaint`/`outpaint`: `images` are resized to the model's size, `known` [B, H, W] bool is True where
        pixels are kept. `superres`: `images` are the low-resolution inputs, kept at their own size.
        """
        from srdd_scale.model import editing

        cfg = self._sampling(sampling, overrides)
        generator = torch.Generator(self.device).manual_seed(seed)
        kwargs = {**self.condition(prompts, class_ids), "cfg": cfg, "generator": generator}
        if mode in ("inpaint", "outpaint"):
            if known is None:
                raise ValueError(f"{mode} needs a known-pixel mask")
            pixels = pil_to_images(images, self.tokenizer.image_size).to(self.device)
            codes = editing.inpaint(self.model, self.tokenizer, pixels, known.to(self.device), **kwargs)
        elif mode == "superres":
            side = images[0].size[0]
            pixels = pil_to_images(images, side).to(self.device)
            codes = editing.superres(self.model, self.tokenizer, pixels, **kwargs)
        else:
            raise ValueError(f"mode={mode!r}: expected inpaint, outpaint or superres")
        return self.decode(codes)
