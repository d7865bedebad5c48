"""Forward-pass behaviour: mask semantics, KV-cache equivalence, conditioning, config errors."""
import pytest
import torch

from srdd_scale.config import ConfigError
from srdd_scale.model import ModelConfig, build_model
from srdd_scale.model.masks import attention_allowed, attention_pairs, first_key_scales

from .conftest import LATENT, PATCH_NUMS, SEQ_LEN, TEXT_DIM, VOCAB, tiny_model

MODES = ("markovian", "markovian_prev", "block_causal")
BOUNDS = [0] + torch.tensor([p * p for p in PATCH_NUMS]).cumsum(0).tolist()


def scale_slice(k):
    return slice(BOUNDS[k], BOUNDS[k + 1])


def test_attention_pairs_match_srdd_method_table():
    var = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    distilled = (1, 3, 5, 8, 13, 16)
    # docs/method.md §3.4
    assert attention_pairs(var, "block_causal") == 286_434
    assert attention_pairs(var, "markovian") == 110_468
    assert attention_pairs(distilled, "block_causal") == 186_738
    assert attention_pairs(distilled, "markovian") == 98_900
    for mode in MODES:
        assert attention_pairs(var, mode) == int(attention_allowed(var, mode).sum())


@pytest.mark.parametrize("mode", ["markovian", "markovian_prev", "block_causal"])
def test_first_key_scales_cover_exactly_the_allowed_pairs(mode):
    """The SDPA path's per-scale key ranges, laid back into an L x L grid, are the mask itself."""
    var = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    begins = [sum(p * p for p in var[:k]) for k in range(len(var) + 1)]
    allowed = attention_allowed(var, mode)
    covered = torch.zeros_like(allowed)
    for scale, first in enumerate(first_key_scales(var, mode)):
        covered[begins[scale] : begins[scale + 1], begins[first] : begins[scale + 1]] = True
    assert torch.equal(covered, allowed)


def test_same_weights_work_under_every_mask():
    reference = tiny_model("markovian").state_dict()
    for mode in MODES[1:]:
        other = tiny_model(mode, seed=5)
        other.load_state_dict(reference, strict=True)


@pytest.mark.parametrize("scale", [2, 3])  # scale 1 sees only the start token under every mask
def test_markovian_scale_logits_ignore_other_scales(batch, scale):
    logits = {}
    for mode in ("markovian", "block_causal"):
        model = tiny_model(mode)
        base = model(batch["teacher_inputs"], batch["text_states"], batch["text_mask"])
        perturbed_inputs = batch["teacher_inputs"].clone()
        own = slice(BOUNDS[scale] - 1, BOUNDS[scale + 1] - 1)  # teacher inputs exclude the start token
        keep = perturbed_inputs[:, own].clone()
        perturbed_inputs += torch.randn_like(perturbed_inputs)
        perturbed_inputs[:, own] = keep
        perturbed = model(perturbed_inputs, batch["text_states"], batch["text_mask"])
        logits[mode] = (base[:, scale_slice(scale)], perturbed[:, scale_slice(scale)])
    torch.testing.assert_close(*logits["markovian"], rtol=0, atol=1e-7)
    assert (logits["block_causal"][0] - logits["block_causal"][1]).abs().max() > 1e-5  # logits ~1e-2 at init


@pytest.mark.parametrize("mode", MODES)
def test_full_forward_equals_incremental_cached_forward(batch, mode):
    """Tolerance 1e-5 (fp32): the cached path only reorders the same float ops."""
    model = tiny_model(mode, depth=3)
    with torch.no_grad():
        full = model(batch["teacher_inputs"], batch["text_states"], batch["text_mask"])
        cond = model.condition(batch["text_states"], batch["text_mask"], None, None, batch_size=3)
        cache = model.new_cache()
        for k in range(len(PATCH_NUMS)):
            scale_input = None if k == 0 else batch["teacher_inputs"][:, BOUNDS[k] - 1 : BOUNDS[k + 1] - 1]
            step = model.forward_scale(k, scale_input, cond, cache)
            torch.testing.assert_close(step, full[:, scale_slice(k)], rtol=1e-5, atol=1e-5)
    if mode == "markovian":
        assert all(not layer.chunks for layer in cache)  # no self-attention KV cache under markovian


def test_dropped_condition_equals_no_text_and_null_class(batch):
    model = tiny_model(num_classes=4)
    classes = torch.tensor([0, 3, 1])
    drop = torch.tensor([True, False, True])
    with torch.no_grad():
        dropped = model(batch["teacher_inputs"], batch["text_states"], batch["text_mask"], classes, drop)
        unconditional = model(batch["teacher_inputs"], None, None, torch.full((3,), -1))
        conditional = model(batch["teacher_inputs"], batch["text_states"], batch["text_mask"], classes)
    torch.testing.assert_close(dropped[drop], unconditional[drop], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dropped[~drop], conditional[~drop], rtol=1e-5, atol=1e-5)
    assert (dropped[drop] - conditional[drop]).abs().max() > 1e-4


def test_condition_dropout_only_in_training(batch):
    model = tiny_model(cond_drop_prob=0.5, drop_path_rate=0.0)
    args = (batch["teacher_inputs"], batch["text_states"], batch["text_mask"])
    with torch.no_grad():
        torch.testing.assert_close(model(*args), model(*args))
        model.train()
        torch.manual_seed(0)
        runs = [model(*args) for _ in range(6)]
    assert any((runs[0] - r).abs().max() > 1e-4 for r in runs[1:])


def test_padding_text_tokens_are_ignored(batch):
    model = tiny_model()
    states = batch["text_states"].clone()
    states[~batch["text_mask"]] = 100.0
    with torch.no_grad():
        a = model(batch["teacher_inputs"], batch["text_states"], batch["text_mask"])
        b = model(batch["teacher_inputs"], states, batch["text_mask"])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bad_configs_fail_with_clear_messages(batch):
    with pytest.raises(ConfigError, match="model.depth=0"):
        ModelConfig(depth=0).validate()
    with pytest.raises(ConfigError, match="num_heads=5 does not divide model.width=256"):
        ModelConfig(depth=4, num_heads=5).validate()
    with pytest.raises(ConfigError, match="model.mask='causal'"):
        ModelConfig(mask="causal").validate()
    with pytest.raises(ConfigError, match="text_dim"):
        build_model(ModelConfig(depth=2), PATCH_NUMS, VOCAB, LATENT, None)
    model = tiny_model()
    wrong_schedule = torch.randn(3, 1 + 4 + 9 + 16 + 25 - 1, LATENT)  # built for (1,2,3,4), given (1,..,5)
    with pytest.raises(ValueError, match=r"patch_nums=\[1, 2, 3, 4\] this model was built for"):
        model(wrong_schedule, batch["text_states"], batch["text_mask"])
    with pytest.raises(ValueError, match="needs class_ids"):
        tiny_model(num_classes=3)(batch["teacher_inputs"], batch["text_states"], batch["text_mask"])


def test_class_only_model_without_text():
    model = tiny_model(cross_attn=False, num_classes=10, scale_cond=False)
    logits = model(torch.randn(2, SEQ_LEN - 1, LATENT), class_ids=torch.tensor([1, 2]))
    assert logits.shape == (2, SEQ_LEN, VOCAB)
    assert model.parameter_groups()["text"] == 0


def test_text_dim_mismatch_is_reported():
    model = tiny_model()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, SEQ_LEN - 1, LATENT), torch.randn(2, 3, TEXT_DIM + 1))


def test_reduced_schedule_from_full_model_keeps_per_scale_function():
    """Under markovian a kept scale's logits depend only on its own input, so they survive re-laying."""
    from srdd_scale.model import state_dict_for_schedule

    full = tiny_model()
    reduced_nums = (1, 3, 4)
    reduced = build_model(full.cfg, reduced_nums, VOCAB, LATENT, TEXT_DIM).eval()
    reduced.load_state_dict(state_dict_for_schedule(full.state_dict(), PATCH_NUMS, reduced_nums))
    scale3 = torch.randn(2, 16, LATENT)
    with torch.no_grad():
        full_in = torch.cat([torch.randn(2, 4 + 9, LATENT), scale3], 1)
        reduced_in = torch.cat([torch.randn(2, 9, LATENT), scale3], 1)
        text = torch.randn(2, 3, TEXT_DIM)
        torch.testing.assert_close(full(full_in, text)[:, -16:], reduced(reduced_in, text)[:, -16:])
    with pytest.raises(ValueError, match=r"not found: \[5\]"):
        state_dict_for_schedule(full.state_dict(), PATCH_NUMS, (1, 2, 5))
