"""Sampler and zero-shot editing against a real (tiny, random) tokenizer."""
import pytest
import torch

from srdd_scale.model import ModelConfig, SamplingConfig, build_model
from srdd_scale.model.editing import inpaint, known_token_masks, superres, superres_forced_scales
from srdd_scale.model.sampler import draw_tokens, filter_logits, guided_scale_logits, sample
from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, flatten_codes

from .conftest import PATCH_NUMS, TEXT_DIM, VOCAB, tiny_model

GREEDY = SamplingConfig(cfg_scale=0.0, top_k=1)


def make_tokenizer(patch_nums=PATCH_NUMS):
    torch.manual_seed(0)
    return build_tokenizer(TokenizerConfig(image_size=16, ch=8, ch_mult=(1, 1, 2), num_res_blocks=1, latent_dim=8,
                                           vocab_size=VOCAB, patch_nums=patch_nums, norm_groups=4)).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def text():
    gen = torch.Generator().manual_seed(3)
    return {"text_states": torch.randn(2, 4, TEXT_DIM, generator=gen),
            "text_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)}


DRAW_CFG = SamplingConfig(top_k=20, top_p=0.9)


def draw(model, tokenizer, text, cfg=DRAW_CFG, seed=0):
    return sample(model, tokenizer, **text, cfg=cfg, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["markovian", "block_causal"])
def test_seeded_sampling_is_reproducible(tokenizer, text, mode):
    model = tiny_model(mode)
    first, again = draw(model, tokenizer, text), draw(model, tokenizer, text)
    other = draw(model, tokenizer, text, seed=1)
    assert [c.shape for c in first] == [(2, p, p) for p in PATCH_NUMS]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert tokenizer.decode(first).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("mode", ["markovian", "markovian_prev", "block_causal"])
def test_greedy_samples_match_teacher_forced_forward(tokenizer, text, mode):
    """The sampler's incremental inputs/caches reproduce the training forward on its own samples."""
    model = tiny_model(mode)
    codes = draw(model, tokenizer, text, GREEDY)
    with torch.no_grad():
        logits = model(tokenizer.teacher_forcing_inputs(codes), **text)
    assert torch.equal(logits.argmax(-1), flatten_codes(codes))


def test_guidance_zero_equals_conditional_logits(tokenizer, text):
    model = tiny_model("block_causal", num_classes=3)
    classes = torch.tensor([0, 2])
    codes = draw(model, tokenizer, {**text, "class_ids": classes}, GREEDY)
    doubled = {k: torch.cat([v, v]) for k, v in {**text, "class_ids": classes}.items()}
    with torch.no_grad():
        guided_cond = model.condition(doubled["text_states"], doubled["text_mask"], doubled["class_ids"],
                                      torch.tensor([False, False, True, True]), 4)
        plain_cond = model.condition(text["text_states"], text["text_mask"], classes, None, 2)
        guided_cache, plain_cache = model.new_cache(), model.new_cache()
        f_hat, scale_input = None, None
        for k in range(len(PATCH_NUMS)):
            guided = guided_scale_logits(model, k, None if k == 0 else torch.cat([scale_input] * 2),
                                         guided_cond, guided_cache, 0.0)
            plain = guided_scale_logits(model, k, scale_input, plain_cond, plain_cache, None)
            torch.testing.assert_close(guided, plain, rtol=1e-5, atol=1e-6)
            f_hat, scale_input = tokenizer.next_scale_input(k, f_hat, codes[k])
        strong = guided_scale_logits(model, 0, None, guided_cond, model.new_cache(), 4.0)
    assert (strong - guided_scale_logits(model, 0, None, plain_cond, model.new_cache(), None)).abs().max() > 1e-5


def test_top_k_top_p_temperature_filtering():
    logits = torch.tensor([[[2.0, 1.0, 0.5, -1.0]]])

    def dropped(cfg):
        return torch.isinf(filter_logits(logits, cfg)).tolist()

    assert dropped(SamplingConfig(top_k=2, top_p=1.0)) == [[[False, False, True, True]]]
    # probabilities 0.61, 0.22, 0.14, 0.03: the nucleus is the smallest set reaching top_p
    assert dropped(SamplingConfig(top_k=0, top_p=0.6)) == [[[False, True, True, True]]]
    assert dropped(SamplingConfig(top_k=0, top_p=0.62)) == [[[False, False, True, True]]]
    torch.testing.assert_close(filter_logits(logits, SamplingConfig(top_k=0, top_p=1.0, temperature=2.0)), logits / 2)


def test_mask_resampling_redraws_low_probability_tokens():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.06, 0.04]))[None, None].expand(1, 4000, 4)
    plain = SamplingConfig(top_k=0, top_p=1.0)
    refined = SamplingConfig(top_k=0, top_p=1.0, resample="mask", mr_steps=3, p_resample=0.1)
    low_plain = (draw_tokens(logits, plain, torch.Generator().manual_seed(0)) >= 2).float().mean()
    low_refined = (draw_tokens(logits, refined, torch.Generator().manual_seed(0)) >= 2).float().mean()
    assert low_plain == pytest.approx(0.10, abs=0.02)
    assert low_refined == pytest.approx(0.10**4, abs=0.002)  # still low after the first draw and 3 redraws


def test_reduced_schedule_needs_a_model_built_for_it(text):
    reduced = (1, 2, 4)
    tokenizer = make_tokenizer(reduced)
    with pytest.raises(ValueError, match=r"built for patch_nums=\[1, 2, 3, 4\].*tokenizer has patch_nums=\[1, 2, 4\]"):
        draw(tiny_model(), tokenizer, text)
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=2), reduced, VOCAB, 8, TEXT_DIM).eval()
    assert [c.shape[-1] for c in draw(model, tokenizer, text)] == [1, 2, 4]


def test_inpainting_keeps_every_known_token(tokenizer, text):
    model = tiny_model()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    known = torch.ones(2, 16, 16, dtype=torch.bool)
    known[0, 4:12, 4:12] = False  # inpainting: a hole
    known[1] = False
    known[1, 5:11, 5:11] = True  # outpainting: only the centre is kept
    codes = inpaint(model, tokenizer, images, known, **text, cfg=SamplingConfig(),
                    generator=torch.Generator().manual_seed(0))
    truth = tokenizer.encode(images)
    masks = known_token_masks(known, PATCH_NUMS)
    assert sum(int(m.sum()) for m in masks) > 0 and not all(bool(m.all()) for m in masks)
    for got, want, mask in zip(codes, truth, masks):
        assert torch.equal(got[mask], want[mask])
    assert any(not torch.equal(got[~m], want[~m]) for got, want, m in zip(codes, truth, masks) if (~m).any())


def test_superres_keeps_teacher_forced_scales(tokenizer, text):
    model = tiny_model()
    low_res = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert superres_forced_scales(8, 16, PATCH_NUMS) == 2  # latent of an 8 px image is 2x2
    codes = superres(model, tokenizer, low_res, **text, cfg=SamplingConfig(),
                     generator=torch.Generator().manual_seed(0))
    truth = tokenizer.encode(torch.nn.functional.interpolate(low_res, size=(16, 16), mode="bicubic").clamp(-1, 1))
    assert torch.equal(codes[0], truth[0]) and torch.equal(codes[1], truth[1])
    with pytest.raises(ValueError, match="forced_scales=9"):
        superres(model, tokenizer, low_res, forced_scales=9, **text, cfg=SamplingConfig(),
                 generator=torch.Generator())


@pytest.mark.parametrize("mode", ["markovian", "block_causal"])
def test_resampling_is_seeded_and_reduces_to_plain_sampling_when_off(tokenizer, text, mode):
    model = tiny_model(mode)
    base = dict(cfg_scale=1.5, top_k=20, top_p=0.9)
    plain = draw(model, tokenizer, text, SamplingConfig(**base))
    off = [SamplingConfig(**base, resample="simple", sr_steps=0), SamplingConfig(**base, resample="mask", mr_steps=0),
           SamplingConfig(**base, resample="mask", mr_steps=3, p_resample=0.0)]  # nothing is below a 0 threshold
    for cfg in off:
        assert all(torch.equal(a, b) for a, b in zip(plain, draw(model, tokenizer, text, cfg)))
    for cfg in (SamplingConfig(**base, resample="simple", sr_steps=2),
                SamplingConfig(**base, resample="mask", mr_steps=2, p_resample=0.5)):
        first, again = draw(model, tokenizer, text, cfg), draw(model, tokenizer, text, cfg)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        assert any(not torch.equal(a, b) for a, b in zip(first, plain))


def test_simple_resampling_runs_sr_steps_extra_forwards_on_its_own_draw(tokenizer, text, monkeypatch):
    model = tiny_model("block_causal")
    seen = []
    forward_scale = model.forward_scale
    monkeypatch.setattr(model, "forward_scale", lambda k, x, cond, cache: (seen.append((k, None if x is None else
                        x.clone(), cache[0].used)), forward_scale(k, x, cond, cache))[1])
    draw(model, tokenizer, text, SamplingConfig(cfg_scale=0.0, top_k=20, resample="simple", sr_steps=2))
    assert [k for k, _, _ in seen] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # scale 0 has no state: no SR there
    # every forward of scale k sees the K/V of scales < k only (the SR forwards' own K/V are dropped again)
    assert [n for _, _, n in seen] == [0, 1, 1, 1, 5, 5, 5, 14, 14, 14]
    first, second = seen[1][1], seen[2][1]
    assert not torch.allclose(first, second)  # the extra forward is conditioned on the scale's own draw


def test_resample_options_are_checked():
    with pytest.raises(Exception, match="mr_steps=2 needs sampling.resample=mask"):
        SamplingConfig(mr_steps=2).validate()
    with pytest.raises(Exception, match="sr_steps=1 needs sampling.resample=simple"):
        SamplingConfig(resample="mask", sr_steps=1).validate()


def _reference_filter(logits, cfg):
    """The whole-vocabulary version: top-k by threshold, then top-p over a full sort."""
    logits = logits / cfg.temperature
    kth = logits.topk(cfg.top_k, dim=-1).values[..., -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    remove_sorted = probs.cumsum(-1) - probs > cfg.top_p
    return logits.masked_fill(remove_sorted.scatter(-1, order, remove_sorted), float("-inf"))


@pytest.mark.parametrize("top_k,top_p,temperature", [(90, 0.9, 1.0), (900, 0.96, 0.7), (5, 0.3, 1.3)])
def test_top_p_on_the_top_k_survivors_equals_the_full_sort(top_k, top_p, temperature):
    logits = torch.randn(2, 50, 4096, generator=torch.Generator().manual_seed(3)) * 3
    cfg = SamplingConfig(top_k=top_k, top_p=top_p, temperature=temperature)
    torch.testing.assert_close(filter_logits(logits, cfg), _reference_filter(logits, cfg), rtol=0, atol=0)
