"""Hugging Face wrappers: `SRDDConfig` (config.json) and `SRDDModel` (a PreTrainedModel around SRDDTransformer).

This file and the siblings it imports are what `save_pretrained` copies next to the weights, so an exported
folder loads with `AutoModel.from_pretrained(dir, trust_remote_code=True)` where `srdd_scale` is not installed
(docs/contracts.md, "Hugging Face remote code constraint"): only torch/transformers/stdlib and `.sibling` imports.
"""
from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass
from typing import Optional

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

# transformers copies only the relative imports of *this* file into its module cache (yet resolves them
# recursively when loading), so every sibling the transformer needs is imported here by name.
from .blocks import SRDDBlock
from .config import VAR_PATCH_NUMS_256, ModelConfig
from .masks import attention_allowed  # noqa: F401  (see above: makes transformers copy masks.py)
from .transformer import SRDDTransformer

MODEL_FIELDS = tuple(field.name for field in dataclasses.fields(ModelConfig))
# file types some loader would unpickle (torch.load, pickle): never part of an export, refused when present
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class SRDDConfig(PretrainedConfig):
    """Every architecture field of ModelConfig (flat, as HF configs are) plus the token geometry it was built for.

    `text_config` (the TextConfig dict), `image_tokenizer`, `training` and friends are extra keys the
    srdd_scale pipeline reads; a plain transformers user needs only the architecture fields.
    """

    model_type = "srdd"

    def __init__(
        self,
        patch_nums: tuple[int, ...] = VAR_PATCH_NUMS_256,
        vocab_size: int = 4096,
        latent_dim: int = 32,
        text_dim: Optional[int] = None,
        **kwargs,
    ):
        defaults = ModelConfig()
        for name in MODEL_FIELDS:
            setattr(self, name, kwargs.pop(name, getattr(defaults, name)))
        self.patch_nums = [int(p) for p in patch_nums]
        self.vocab_size = int(vocab_size)
        self.latent_dim = int(latent_dim)
        self.text_dim = None if text_dim is None else int(text_dim)
        super().__init__(**kwargs)

    def model_config(self) -> ModelConfig:
        """The frozen ModelConfig these fields describe (validated by the transformer's constructor)."""
        return ModelConfig(**{name: getattr(self, name) for name in MODEL_FIELDS})

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, patch_nums, vocab_size: int, latent_dim: int,
                          text_dim: Optional[int], **extra) -> "SRDDConfig":
        return cls(patch_nums=tuple(patch_nums), vocab_size=vocab_size, latent_dim=latent_dim, text_dim=text_dim,
                   **dataclasses.asdict(cfg), **extra)


@dataclass
class SRDDOutput(ModelOutput):
    """Teacher-forced logits [B, L, vocab] of every scale, coarse to fine."""

    logits: Optional[torch.FloatTensor] = None


class SRDDModel(PreTrainedModel):
    """`self.transformer` is the unmodified training model; state-dict keys are its own, prefixed `transformer.`."""

    config_class = SRDDConfig
    base_model_prefix = "transformer"
    main_input_name = "teacher_inputs"
    _no_split_modules = [SRDDBlock.__name__]

    def __init__(self, config: SRDDConfig):
        super().__init__(config)
        self.transformer = SRDDTransformer(config.model_config(), tuple(config.patch_nums), config.vocab_size,
                                           config.latent_dim, config.text_dim)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Safetensors only: an SRDD export never holds a pickle-format file, and loading one can run code, so a
        folder holding one is refused (naming it) and transformers is told not to look for pickles."""
        folder = pathlib.Path(str(pretrained_model_name_or_path))
        if folder.is_dir():
            pickles = sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise OSError(f"{pickles[0]}: a pickle-format file in an SRDD export (which holds safetensors "
                              f"only); refusing to load the folder, since unpickling can run code")
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _init_weights(self, module: torch.nn.Module) -> None:
        """No-op: SRDDTransformer applies VAR's init in its constructor; HF's generic init would overwrite it."""

    def forward(
        self,
        teacher_inputs: torch.Tensor,
        text_states: Optional[torch.Tensor] = None,
        text_mask: Optional[torch.Tensor] = None,
        class_ids: Optional[torch.Tensor] = None,
        cond_drop: Optional[torch.Tensor] = None,
    ) -> SRDDOutput:
        logits = self.transformer(teacher_inputs, text_states, text_mask, class_ids, cond_drop)
        return SRDDOutput(logits=logits)


SRDDConfig.register_for_auto_class()
SRDDModel.register_for_auto_class("AutoModel")
