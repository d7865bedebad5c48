"""Invariants of the multi-scale residual quantizer and the tokenizer API around it."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from srdd_scale.config import ConfigError
from srdd_scale.tokenizer import flatten_codes, split_codes
from srdd_scale.tokenizer.quantizer import phi_index


@pytest.mark.parametrize("num_phi, num_scales, expected", [
    # pinned against VAR's PhiPartiallyShared on the same inputs (ties go to the first tick)
    (4, 10, [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]),
    (4, 6, [0, 0, 1, 2, 3, 3]),
    (2, 6, [0, 0, 0, 1, 1, 1]),
    (3, 5, [0, 0, 1, 2, 2]),
    (6, 6, [0, 1, 2, 3, 4, 5]),
])
def test_phi_tick_rule_matches_var(num_phi, num_scales, expected):
    assert [phi_index(num_phi, k, num_scales) for k in range(num_scales)] == expected


def test_contributions_sum_to_f_hat_and_indices_in_range(tiny_tokenizer, images):
    out = tiny_tokenizer.quantize.quantize(tiny_tokenizer.encode_latent(images))
    torch.testing.assert_close(torch.stack(out.contributions).sum(0), out.f_hat, atol=1e-5, rtol=1e-5)
    for idx, p in zip(out.indices, tiny_tokenizer.patch_nums):
        assert idx.dtype == torch.long and idx.shape == (3, p, p)
        assert 0 <= idx.min() and idx.max() < tiny_tokenizer.vocab_size
    # the finest scale quantizes a residual, so more than one code is in use overall
    assert len(torch.unique(torch.cat([i.flatten() for i in out.indices]))) > 1


def test_residual_shrinks_with_scales(tiny_tokenizer, images):
    f = tiny_tokenizer.encode_latent(images)
    out = tiny_tokenizer.quantize.quantize(f)
    partial = torch.stack(out.contributions).cumsum(0)
    errors = [F.mse_loss(p, f).item() for p in partial]
    assert errors[-1] < errors[0]


def test_teacher_forcing_from_indices_equals_encoder_pass(tiny_tokenizer, images):
    out = tiny_tokenizer.quantize.quantize(tiny_tokenizer.encode_latent(images))
    partial = torch.stack(out.contributions).cumsum(0)
    expected = torch.cat([F.interpolate(partial[k - 1], size=(p, p), mode="area").flatten(2).transpose(1, 2)
                          for k, p in enumerate(tiny_tokenizer.patch_nums) if k > 0], dim=1)
    inputs = tiny_tokenizer.teacher_forcing_inputs(out.indices)
    assert inputs.shape == (3, tiny_tokenizer.tokens_per_image - 1, tiny_tokenizer.latent_dim)
    torch.testing.assert_close(inputs, expected, atol=1e-5, rtol=1e-5)


def test_next_scale_input_replays_teacher_forcing(tiny_tokenizer, images):
    indices = tiny_tokenizer.encode(images)
    teacher = tiny_tokenizer.teacher_forcing_inputs(indices)
    f_hat, steps = None, []
    for k, idx in enumerate(indices):
        f_hat, nxt = tiny_tokenizer.next_scale_input(k, f_hat, idx)
        if nxt is not None:
            steps.append(nxt)
    assert nxt is None
    torch.testing.assert_close(torch.cat(steps, dim=1), teacher, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiny_tokenizer.decode_latent(f_hat), tiny_tokenizer.decode(indices))


def test_decode_encode_is_deterministic(tiny_tokenizer, images):
    first = tiny_tokenizer.decode(tiny_tokenizer.encode(images))
    second = tiny_tokenizer.decode(tiny_tokenizer.encode(images))
    assert torch.equal(first, second)
    assert first.shape == images.shape and first.min() >= -1 and first.max() <= 1


def test_flatten_split_round_trip(tiny_tokenizer, images):
    indices = tiny_tokenizer.encode(images)
    flat = flatten_codes(indices)
    assert flat.shape == (3, tiny_tokenizer.tokens_per_image) == (3, 1 + 4 + 16 + 64)
    assert torch.equal(flat[:, :1], indices[0].flatten(1))
    for a, b in zip(split_codes(flat, tiny_tokenizer.patch_nums), indices):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"expected codes of shape \(B, 85\)"):
        split_codes(flat[:, :-1], tiny_tokenizer.patch_nums)


def test_training_pass_gradients(tiny_tokenizer, images):
    tiny_tokenizer.train().requires_grad_(True)
    recon, out = tiny_tokenizer(images)
    (F.mse_loss(recon, images) + out.vq_loss).backward()
    for name in ("encoder.conv_in.weight", "quantize.embedding.weight", "quantize.quant_resi.qresi_ls.0.weight",
                 "decoder.conv_out.weight"):
        grad = tiny_tokenizer.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("patch_nums, message", [
    ((1, 2, 2, 8), "strictly increasing"),
    ((1, 2, 4), "must equal the latent grid size 8"),
    ((), "at least one scale"),
    ((0, 8), "positive integer"),
])
def test_bad_patch_nums_are_rejected(tiny_cfg, tiny_tokenizer, patch_nums, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(tiny_cfg, patch_nums=patch_nums).validate()
    with pytest.raises(ConfigError, match=message):
        tiny_tokenizer.set_patch_nums(patch_nums)


def test_config_errors_name_the_key(tiny_cfg):
    with pytest.raises(ConfigError, match=r"tokenizer.image_size=17: must be a multiple of the downsample factor 2"):
        dataclasses.replace(tiny_cfg, image_size=17).validate()
    with pytest.raises(ConfigError, match=r"tokenizer.norm_groups=3"):
        dataclasses.replace(tiny_cfg, norm_groups=3).validate()
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=70000.*uint16"):
        dataclasses.replace(tiny_cfg, vocab_size=70000).validate()


def test_wrong_image_size_and_indices_are_rejected(tiny_tokenizer, images):
    with pytest.raises(ValueError, match=r"images of shape \(B, 3, 16, 16\).*got \(3, 3, 32, 32\)"):
        tiny_tokenizer.encode(F.interpolate(images, size=(32, 32)))
    with pytest.raises(ValueError, match="float images"):
        tiny_tokenizer.encode((images > 0).long())
    indices = tiny_tokenizer.encode(images)
    with pytest.raises(ValueError, match="expected 4 scales"):
        tiny_tokenizer.decode(indices[:-1])
    with pytest.raises(ValueError, match=r"scale 1: expected indices of shape \(B, 2, 2\)"):
        tiny_tokenizer.decode([indices[0], indices[2], indices[2], indices[3]])
