"""Multi-scale residual VQ image tokenizer (VAR-compatible); see docs/contracts.md."""
from srdd_scale.tokenizer.api import CheckpointMismatchError, build_tokenizer, load_tokenizer, save_tokenizer
from srdd_scale.tokenizer.config import TokenizerConfig, TokenizerTrainConfig
from srdd_scale.tokenizer.vqvae import MultiScaleVQTokenizer, flatten_codes, split_codes

__all__ = [
    "CheckpointMismatchError", "MultiScaleVQTokenizer", "TokenizerConfig", "TokenizerTrainConfig",
    "build_tokenizer", "flatten_codes", "load_tokenizer", "save_tokenizer", "split_codes",
]
