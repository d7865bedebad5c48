import dataclasses

import pytest
import torch

from srdd_scale.text import FrozenTextEncoder, TextConfig, load_text_tokenizer

TINY = TextConfig(encoder="tiny_t5", vocab_size=128, d_model=32, num_layers=2, num_heads=4, d_ff=64, seed=3)


def _batch(tok, captions):
    rows = tok.encode(captions)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.from_numpy(row).long()
        mask[i, : len(row)] = True
    return ids, mask


def test_tiny_t5_shape_frozen_and_deterministic(spm_model, shapes_captions):
    cfg = dataclasses.replace(TINY, tokenizer=str(spm_model))
    tok = load_text_tokenizer(cfg)
    ids, mask = _batch(tok, shapes_captions[:4])
    enc = FrozenTextEncoder(cfg)
    enc.train()
    assert not enc.training and not enc.model.training
    assert all(not p.requires_grad for p in enc.parameters())
    out = enc(ids, mask)
    assert out.shape == (4, ids.shape[1], 32) and out.dtype == torch.float32
    assert not out.requires_grad
    torch.manual_seed(123)  # the caller's RNG must not change the encoder
    again = FrozenTextEncoder(cfg)(ids, mask)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    other = FrozenTextEncoder(dataclasses.replace(cfg, seed=4))(ids, mask)
    assert (other - out).abs().max() > 1e-3


def test_tiny_t5_bf16(spm_model, shapes_captions):
    cfg = dataclasses.replace(TINY, tokenizer=str(spm_model))
    ids, mask = _batch(load_text_tokenizer(cfg), shapes_captions[:2])
    ref = FrozenTextEncoder(cfg)(ids, mask)
    half = FrozenTextEncoder(dataclasses.replace(cfg, dtype="bfloat16"))
    assert next(half.parameters()).dtype == torch.bfloat16
    out = half(ids, mask)
    assert out.dtype == torch.float32
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_ids_outside_vocab_are_refused(spm_model):
    enc = FrozenTextEncoder(TINY)
    with pytest.raises(RuntimeError, match="outside the text encoder's vocabulary of 128"):
        enc(torch.tensor([[500, 1]]), torch.ones(1, 2, dtype=torch.bool))


def test_minilm_encodes_offline_and_ignores_padding():
    cfg = TextConfig(tokenizer="minilm", encoder="minilm", max_length=24)
    tok = load_text_tokenizer(cfg)
    enc = FrozenTextEncoder(cfg)
    assert enc.dim == 384
    captions = ["a red circle", "a large blue square below a green star on a grey background"]
    ids, mask = _batch(tok, captions)
    out = enc(ids, mask)
    assert out.shape == (2, ids.shape[1], 384)
    alone_ids, alone_mask = _batch(tok, captions[:1])
    alone = enc(alone_ids, alone_mask)
    n = int(alone_mask.sum())
    torch.testing.assert_close(out[0, :n], alone[0, :n], rtol=1e-4, atol=1e-4)
    # Different captions give different states (a real pretrained encoder, not zeros).
    assert (out[0, 0] - out[1, 0]).abs().max() > 1e-2


def test_t5_folder_loads_as_encoder_only_and_matches(tmp_path, spm_model, shapes_captions):
    """An HF T5 folder (here the tiny T5 saved with its tokenizer) loads through T5EncoderModel + AutoTokenizer."""
    cfg = dataclasses.replace(TINY, tokenizer=str(spm_model))
    tiny = FrozenTextEncoder(cfg)
    tiny.model.save_pretrained(tmp_path / "t5")
    load_text_tokenizer(cfg).to_hf_tokenizer().save_pretrained(tmp_path / "t5")
    folder_cfg = dataclasses.replace(cfg, tokenizer=str(tmp_path / "t5"), encoder=str(tmp_path / "t5"))
    hf_tok = load_text_tokenizer(folder_cfg)
    assert hf_tok.kind == "hf"
    spm_ids, spm_mask = _batch(load_text_tokenizer(cfg), shapes_captions[:3])
    ids, mask = _batch(hf_tok, shapes_captions[:3])
    assert torch.equal(ids, spm_ids) and torch.equal(mask, spm_mask)
    loaded = FrozenTextEncoder(folder_cfg)
    assert type(loaded.model).__name__ == "T5EncoderModel" and loaded.dim == 32
    torch.testing.assert_close(loaded(ids, mask), tiny(ids, mask), rtol=0, atol=1e-6)
