"""Caption tokenization (sentencepiece / HF tokenizers) and the frozen text encoder."""

from srdd_scale.text.config import TextConfig
from srdd_scale.text.encoder import FrozenTextEncoder
from srdd_scale.text.tokenizer import CaptionTokenizer, load_text_tokenizer, pad_text_ids, train_sentencepiece

__all__ = ["CaptionTokenizer", "FrozenTextEncoder", "TextConfig", "load_text_tokenizer", "pad_text_ids",
           "train_sentencepiece"]
