import dataclasses

import numpy as np
import pytest

from srdd_scale.config import ConfigError
from srdd_scale.text import TextConfig, load_text_tokenizer, train_sentencepiece


def test_sentencepiece_ids_round_trip_to_caption(spm_model, shapes_captions):
    tok = load_text_tokenizer(TextConfig(tokenizer=str(spm_model), max_length=64))
    ids = tok.encode(shapes_captions[:50])
    for caption, row in zip(shapes_captions[:50], ids):
        assert row.dtype == np.int32
        assert row[-1] == tok.eos_id
        assert tok.pad_id not in row.tolist()
        assert tok.decode(row) == caption
    assert 0 < tok.vocab_size <= 128


def test_truncation_keeps_eos(spm_model, shapes_captions):
    tok = load_text_tokenizer(TextConfig(tokenizer=str(spm_model), max_length=4))
    (row,) = tok.encode([shapes_captions[0]])
    full = load_text_tokenizer(TextConfig(tokenizer=str(spm_model), max_length=64)).encode([shapes_captions[0]])[0]
    assert len(row) == 4 and row[-1] == tok.eos_id
    assert row[:3].tolist() == full[:3].tolist()


def test_sentencepiece_training_is_deterministic(tmp_path, spm_model, shapes_captions):
    again = train_sentencepiece(shapes_captions, tmp_path / "again", vocab_size=128)
    assert again.read_bytes() == spm_model.read_bytes()
    a = load_text_tokenizer(TextConfig(tokenizer=str(spm_model)))
    b = load_text_tokenizer(TextConfig(tokenizer=str(again)))
    assert a.identity() == b.identity()
    other = train_sentencepiece(shapes_captions[:100], tmp_path / "other", vocab_size=64)
    assert load_text_tokenizer(TextConfig(tokenizer=str(other))).identity() != a.identity()


def test_training_refuses_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="no non-empty captions"):
        train_sentencepiece(["", "   "], tmp_path / "empty", vocab_size=32)


def test_hf_wrapper_of_sentencepiece_gives_same_ids(spm_model, shapes_captions):
    tok = load_text_tokenizer(TextConfig(tokenizer=str(spm_model), max_length=64))
    hf = tok.to_hf_tokenizer()
    for caption, row in zip(shapes_captions[:20], tok.encode(shapes_captions[:20])):
        assert hf(caption)["input_ids"] == row.tolist()


def test_minilm_tokenizer_loads_offline_and_round_trips():
    tok = load_text_tokenizer(TextConfig(tokenizer="minilm", max_length=16))
    caption = "a small red circle at the top of the image"
    (row,) = tok.encode([caption])
    assert tok.decode(row) == caption
    assert tok.vocab_size == 30522 and tok.pad_id == 0
    (short,) = tok.encode([caption * 5])
    assert len(short) == 16 and short[-1] == tok.eos_id  # [SEP] kept on truncation


def test_missing_tokenizer_path_is_a_clear_error(tmp_path):
    cfg = TextConfig(tokenizer=str(tmp_path / "nope.model"))
    with pytest.raises(ConfigError, match="text.tokenizer=.*nope.model.*no such file"):
        load_text_tokenizer(cfg)


def test_config_validation_names_key():
    with pytest.raises(ConfigError, match="text.num_heads=3"):
        dataclasses.replace(TextConfig(), num_heads=3).validate()
