"""Checkpoint formats: VAR's released VQ-VAE layout (built from its documented shapes) and our folder format."""
import dataclasses
import json

import pytest
import torch

from srdd_scale.config import ConfigError
from srdd_scale.tokenizer import (CheckpointMismatchError, TokenizerConfig, build_tokenizer, load_tokenizer,
                                  save_tokenizer)


def var_vqvae_shapes(ch=160, ch_mult=(1, 1, 2, 2, 4), z=32, vocab=4096, scales=10, phis=4, blocks=2):
    """Key -> shape of VAR's `vae_ch160v4096z32.pth`, written out from VAR's models/{vqvae,basic_vae,quant}.py."""
    shapes = {}

    def conv(prefix, cin, cout, k):
        shapes[f"{prefix}.weight"] = (cout, cin, k, k)
        shapes[f"{prefix}.bias"] = (cout,)

    def norm(prefix, c):
        shapes[f"{prefix}.weight"] = shapes[f"{prefix}.bias"] = (c,)

    def resblock(prefix, cin, cout):
        norm(f"{prefix}.norm1", cin), conv(f"{prefix}.conv1", cin, cout, 3)
        norm(f"{prefix}.norm2", cout), conv(f"{prefix}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{prefix}.nin_shortcut", cin, cout, 1)

    def attn(prefix, c):
        norm(f"{prefix}.norm", c), conv(f"{prefix}.qkv", c, 3 * c, 1), conv(f"{prefix}.proj_out", c, c, 1)

    def mid(prefix, c):
        resblock(f"{prefix}.block_1", c, c), attn(f"{prefix}.attn_1", c), resblock(f"{prefix}.block_2", c, c)

    last = len(ch_mult) - 1
    conv("encoder.conv_in", 3, ch, 3)
    cin = ch
    for i, m in enumerate(ch_mult):
        for j in range(blocks):
            resblock(f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
            if i == last:
                attn(f"encoder.down.{i}.attn.{j}", cin)
        if i != last:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    mid("encoder.mid", cin)
    norm("encoder.norm_out", cin), conv("encoder.conv_out", cin, z, 3)
    conv("decoder.conv_in", z, cin, 3)
    mid("decoder.mid", cin)
    for i in reversed(range(len(ch_mult))):
        for j in range(blocks + 1):
            resblock(f"decoder.up.{i}.block.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if i == last:
                attn(f"decoder.up.{i}.attn.{j}", cin)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", cin), conv("decoder.conv_out", cin, 3, 3)
    shapes["quantize.ema_vocab_hit_SV"] = (scales, vocab)
    shapes["quantize.embedding.weight"] = (vocab, z)
    for i in range(phis):
        conv(f"quantize.quant_resi.qresi_ls.{i}", z, z, 3)
    conv("quant_conv", z, z, 3), conv("post_quant_conv", z, z, 3)
    return shapes


def random_state(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=generator) * 0.05 for k, s in shapes.items()}


def test_var_256_layout_key_for_key():
    with torch.device("meta"):
        tokenizer = build_tokenizer(TokenizerConfig())  # defaults are VAR's 256 px tokenizer
    ours = {k: tuple(v.shape) for k, v in tokenizer.state_dict().items()}
    assert ours == var_vqvae_shapes()
    assert ours["encoder.mid.attn_1.qkv.weight"] == (1920, 640, 1, 1)  # fused qkv, as VAR saves it
    assert sum(v.numel() for k, v in tokenizer.state_dict().items() if "ema" not in k) == 108_948_355
    assert tokenizer.tokens_per_image == 680 and tokenizer.downsample == 16


def test_var_pth_is_detected_and_loaded(tmp_path):
    shapes = var_vqvae_shapes(ch=32)
    state = random_state(shapes)
    path = tmp_path / "vae_ch32v4096z32.pth"
    torch.save(state, path)
    tokenizer = load_tokenizer(path)
    cfg = tokenizer.config
    assert (cfg.ch, cfg.ch_mult, cfg.latent_dim, cfg.vocab_size, cfg.share_quant_resi) == (32, (1, 1, 2, 2, 4), 32,
                                                                                           4096, 4)
    assert tokenizer.patch_nums == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) and tokenizer.image_size == 256
    assert not tokenizer.training and not any(p.requires_grad for p in tokenizer.parameters())
    for key, value in tokenizer.state_dict().items():
        assert torch.equal(value, state[key]), key
    # a reduced schedule over the same 16x16 latent (scale distillation) at 64 px -> 4x4 latent
    small = load_tokenizer(path, patch_nums=(1, 2, 4))
    assert small.image_size == 64 and small.quantize.ema_vocab_hit_SV.shape == (3, 4096)
    codes = small.encode(torch.zeros(1, 3, 64, 64))
    assert [c.shape[-1] for c in codes] == [1, 2, 4]


def test_mismatched_var_checkpoint_names_keys(tmp_path):
    state = random_state(var_vqvae_shapes(ch=32))
    del state["decoder.up.2.block.1.conv1.weight"]
    state["quantize.extra.weight"] = torch.zeros(1)
    state["post_quant_conv.weight"] = torch.zeros(32, 32, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_tokenizer(tmp_path / "bad.pth")
    message = str(err.value)
    assert "missing keys (1): decoder.up.2.block.1.conv1.weight" in message
    assert "unexpected keys (1): quantize.extra.weight" in message
    assert "post_quant_conv.weight: checkpoint (32, 32, 1, 1) vs model (32, 32, 3, 3)" in message
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match=r"not a VAR VQ-VAE state dict.*found \['model'\]"):
        load_tokenizer(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "missing.pth")


def test_save_load_round_trip(tiny_tokenizer, images, tmp_path):
    folder = save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    meta = json.loads((folder / "tokenizer_config.json").read_text())
    assert meta["tokenizer"]["patch_nums"] == [1, 2, 4, 8] and meta["identity"] == tiny_tokenizer.identity()
    loaded = load_tokenizer(folder)
    assert loaded.identity() == tiny_tokenizer.identity()
    for a, b in zip(loaded.encode(images), tiny_tokenizer.encode(images)):
        assert torch.equal(a, b)
    reduced = load_tokenizer(folder, patch_nums=(1, 3, 8))
    assert reduced.patch_nums == (1, 3, 8) and reduced.identity() != loaded.identity()
    with torch.no_grad():
        loaded.quantize.embedding.weight[0, 0] += 1e-3
    assert loaded.identity() != tiny_tokenizer.identity()


def test_build_from_checkpoint_checks_architecture(tiny_cfg, tiny_tokenizer, tmp_path):
    folder = save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    built = build_tokenizer(dataclasses.replace(tiny_cfg, checkpoint=str(folder)))
    assert built.identity() == tiny_tokenizer.identity()
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=64 but the checkpoint has 32"):
        build_tokenizer(dataclasses.replace(tiny_cfg, checkpoint=str(folder), vocab_size=64))
    (folder / "tokenizer.safetensors").unlink()
    save_tokenizer(build_tokenizer(dataclasses.replace(tiny_cfg, latent_dim=8)), tmp_path / "other")
    (tmp_path / "other" / "tokenizer_config.json").write_text((folder / "tokenizer_config.json").read_text())
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches .*quantize.embedding.weight: "
                                                      r"checkpoint \(32, 8\) vs model \(32, 4\)"):
        load_tokenizer(tmp_path / "other")


def test_norm_none_round_trips_without_groupnorm(tiny_cfg, images, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, norm="none", norm_groups=3)  # groups are unused without GroupNorm
    tokenizer = build_tokenizer(cfg).eval()
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in tokenizer.modules())
    assert not any(".norm" in key for key in tokenizer.state_dict())
    loaded = load_tokenizer(save_tokenizer(tokenizer, tmp_path / "tok"))
    assert loaded.config.norm == "none" and loaded.identity() == tokenizer.identity()
    assert torch.equal(loaded.decode(loaded.encode(images)), tokenizer.decode(tokenizer.encode(images)))
    with pytest.raises(ConfigError, match=r"tokenizer.norm='batch': expected 'group' \(VAR\) or 'none'"):
        dataclasses.replace(tiny_cfg, norm="batch").validate()
