"""Frozen text encoder: caption ids -> per-token states that the transformer cross-attends to."""

from __future__ import annotations

import torch
from torch import nn

from srdd_scale.config import ConfigError
from srdd_scale.text.config import TINY_T5, TextConfig
from srdd_scale.text.tokenizer import resolve_text_path

# HF model types whose encoder is loaded alone (AutoModel would build the whole encoder-decoder).
_T5_MODEL_TYPES = ("t5", "mt5", "umt5")


def _tiny_t5(cfg: TextConfig) -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_model // cfg.num_heads, d_ff=cfg.d_ff,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, use_cache=False,
    )
    # Seed only this init, so every rank builds identical weights without disturbing the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return T5EncoderModel(config)


def _pretrained(cfg: TextConfig) -> nn.Module:
    from transformers import AutoConfig, AutoModel, T5EncoderModel

    path = str(resolve_text_path(cfg.encoder, "text.encoder"))
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model_cls = T5EncoderModel if config.model_type in _T5_MODEL_TYPES else AutoModel
    return model_cls.from_pretrained(path, local_files_only=True)


class FrozenTextEncoder(nn.Module):
    """A text encoder whose weights never train: always in eval mode, forward under ``no_grad``."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.encoder == "none":
            raise ConfigError("text.encoder='none': no text encoder is configured (class-conditional run)")
        self.model = _tiny_t5(cfg) if cfg.encoder == TINY_T5 else _pretrained(cfg)
        self.model.requires_grad_(False)
        if cfg.dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        config = self.model.config
        self.dim: int = int(getattr(config, "d_model", None) or config.hidden_size)
        self.vocab_size: int = int(config.vocab_size)
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        # Dropout stays off even when the trainer puts the whole model in train mode.
        return super().train(False)

    @torch.no_grad()
    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """``text_ids`` [B,T] long, ``text_mask`` [B,T] bool -> float32 states [B,T,dim]."""
        if text_ids.numel():  # checked on the device without waiting for it (no host sync in the train step)
            torch._assert_async(text_ids.max() < self.vocab_size,
                                f"a text id is outside the text encoder's vocabulary of {self.vocab_size}: the "
                                f"caption tokenizer and text.encoder/text.vocab_size do not match")
        out = self.model(input_ids=text_ids, attention_mask=text_mask.to(torch.long))
        return out.last_hidden_state.float()
