"""The attention helper every block uses: plain softmax attention with scale 1, whatever backend runs it."""
import pytest
import torch

from srdd_scale.model.blocks import attention


def _reference(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def test_attention_is_unscaled_softmax_attention_with_and_without_mask():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=gen) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5, generator=gen) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    torch.testing.assert_close(attention(q, k, v), _reference(q, k, v))
    torch.testing.assert_close(attention(q, k, v, mask), _reference(q, k, v, mask))


def test_attention_gradients_match_reference():
    gen = torch.Generator().manual_seed(1)
    leaves = [torch.randn(1, 2, 4, 8, generator=gen, requires_grad=True) for _ in range(3)]
    grads = torch.autograd.grad(attention(*leaves).square().sum(), leaves)
    expected = torch.autograd.grad(_reference(*leaves).square().sum(), leaves)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def _feedforward_reference(ffn, x):
    return ffn.fc2(torch.nn.functional.gelu(ffn.fc1(x), approximate="tanh"))


def test_feedforward_recompute_matches_autograd_in_values_and_gradients():
    """GeluLinear (the GELU recomputed in backward) against plain autograd: output, input and every parameter
    gradient, in fp32 and under bf16 autocast (the training dtype)."""
    from srdd_scale.model.blocks import FeedForward

    torch.manual_seed(0)
    ffn = FeedForward(16, 64)
    x = torch.randn(2, 7, 16, requires_grad=True)
    for autocast, tol in ((False, {}), (True, {"rtol": 2e-2, "atol": 2e-2})):
        results = []
        for forward in (ffn, lambda t: _feedforward_reference(ffn, t)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = forward(x)
            grads = torch.autograd.grad(out.float().square().sum(), [x, *ffn.parameters()])
            results.append((out, grads))
        (out, grads), (want_out, want_grads) = results
        assert out.dtype == want_out.dtype
        torch.testing.assert_close(out, want_out, **tol)
        for got, want in zip(grads, want_grads):
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, **tol)


def test_feedforward_keeps_one_hidden_activation_for_backward():
    """The memory the recompute buys: of the [.., 4C] hidden tensors only the pre-GELU one is saved."""
    from srdd_scale.model.blocks import FeedForward

    ffn = FeedForward(8, 32)
    x = torch.randn(3, 5, 8, requires_grad=True)

    def hidden_saved(forward) -> int:
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            forward(x)
        return len({t.untyped_storage().data_ptr() for t in saved if t.numel() == 3 * 5 * 32})

    assert hidden_saved(ffn) == 1
    assert hidden_saved(lambda t: _feedforward_reference(ffn, t)) == 2


def test_norm_modulate_recompute_matches_autograd_and_keeps_no_normalised_copy():
    """norm_modulate (LayerNorm + AdaLN recomputed in backward) against the plain composition: values and the
    gradients of x, scale and shift, broadcast and per scale; and it keeps no [B, L, C] tensor beyond x."""
    from srdd_scale.model.blocks import modulate, norm_modulate

    gen = torch.Generator().manual_seed(3)
    norm = torch.nn.LayerNorm(8, elementwise_affine=False, eps=1e-6)
    sizes = (1, 4, 9)
    for rows, size_arg in ((1, None), (3, sizes)):
        x = torch.randn(2, sum(sizes), 8, generator=gen, requires_grad=True)
        scale, shift = (torch.randn(2, rows, 8, generator=gen, requires_grad=True) for _ in range(2))
        probe = torch.randn(2, sum(sizes), 8, generator=gen)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, kept=saved: kept.append(t) or t,
                                                      lambda t: t):
            ours = norm_modulate(norm, x, scale, shift, size_arg)
        assert {t.untyped_storage().data_ptr() for t in saved if t.numel() == x.numel()} == {
            x.untyped_storage().data_ptr()}
        want = modulate(norm(x), scale, shift, size_arg)
        torch.testing.assert_close(ours, want, rtol=0, atol=0)
        for got, expected in zip(torch.autograd.grad((ours * probe).sum(), [x, scale, shift]),
                                 torch.autograd.grad((want * probe).sum(), [x, scale, shift])):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_block_causal_attention_keeps_no_full_length_key_copy_for_backward():
    """The finest scale sees every key under block_causal: it reads k/v themselves rather than a joined copy, so the
    mask keeps as many full-length [B, H, L, D] tensors for backward as markovian (which joins nothing)."""
    from srdd_scale.model.blocks import AttnLayout, SelfAttention
    from srdd_scale.model.masks import first_key_scales

    patch_nums, batch, heads, dim = (1, 2, 3), 2, 2, 8
    sizes = tuple(p * p for p in patch_nums)
    full_bytes = batch * sum(sizes) * dim * 4
    torch.manual_seed(0)
    attn = SelfAttention(dim, heads)
    x = torch.randn(batch, sum(sizes), dim, requires_grad=True)

    def full_length_saved(mode: str) -> int:
        layout = AttnLayout(sizes=sizes, first_key_scales=first_key_scales(patch_nums, mode))
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            attn(x, layout, None)
        return len({t.untyped_storage().data_ptr() for t in saved if t.untyped_storage().nbytes() == full_bytes})

    assert full_length_saved("block_causal") == full_length_saved("markovian")


def _cached_storages(cache) -> dict[int, int]:
    """Storage pointer -> bytes of every tensor a cache holds for later scales."""
    from srdd_scale.model.blocks import PrefixKV

    held = [cache.k_buf, cache.v_buf] if isinstance(cache, PrefixKV) else [t for kv in cache.chunks for t in kv]
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}


@pytest.mark.parametrize("mode", ["block_causal", "markovian_prev"])
def test_caches_hold_only_the_keys_and_values_later_scales_see(mode):
    """block_causal keeps k and v of every scale in one buffer of all tokens; markovian_prev keeps the last scale's,
    in storage of their own: v arrives as a view of the fused qkv projection, and a cached view would keep q, k
    and v of the whole scale alive (2x VAR's cache memory, measured)."""
    from srdd_scale.model.blocks import AttnLayout, PrefixKV, SelfAttention, WindowKV

    batch, heads, dim, sizes = 2, 2, 8, (1, 4, 9)
    torch.manual_seed(0)
    attn = SelfAttention(dim, heads)
    cache = PrefixKV(sum(sizes)) if mode == "block_causal" else WindowKV(1)
    with torch.no_grad():
        for n in sizes:
            attn(torch.randn(batch, n, dim), AttnLayout(), cache)
    held = _cached_storages(cache)
    assert len(held) == 2
    assert sum(held.values()) == 2 * batch * (sum(sizes) if mode == "block_causal" else sizes[-1]) * dim * 4


@pytest.mark.parametrize("mode", ["block_causal", "markovian_prev"])
def test_cache_restore_puts_back_what_the_first_forward_stored(mode):
    """Simple resampling re-runs a scale from the history before it, then restores the cache its first forward left:
    later scales then see exactly the keys of the uninterrupted run."""
    from srdd_scale.model.blocks import PrefixKV, WindowKV

    def new():
        return PrefixKV(1 + 4 + 9 + 16) if mode == "block_causal" else WindowKV(1)

    torch.manual_seed(0)
    kv = [(torch.randn(2, 2, n, 4), torch.randn(2, 2, n, 4)) for n in (1, 4, 9)]
    redraw = (torch.randn(2, 2, 9, 4), torch.randn(2, 2, 9, 4))
    finest = (torch.randn(2, 2, 16, 4), torch.randn(2, 2, 16, 4))
    plain, resampled = new(), new()
    for cache in (plain, resampled):
        for k, v in kv[:2]:
            cache.extend(k, v)
    history = resampled.snapshot(newest=False)
    plain.extend(*kv[2])
    resampled.extend(*kv[2])
    after_first = resampled.snapshot(newest=True)
    for _ in range(2):
        resampled.restore(history)
        resampled.extend(*redraw)
    resampled.restore(after_first)
    for got, want in zip(resampled.extend(*finest), plain.extend(*finest)):
        assert torch.equal(got, want)


def test_prefix_cache_rejects_a_scale_beyond_its_capacity():
    from srdd_scale.model.blocks import PrefixKV

    cache = PrefixKV(5)
    cache.extend(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))
    with pytest.raises(ValueError, match="holds 5 tokens; 4 stored, a scale of 4 does not fit"):
        cache.extend(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))


def test_prefix_cache_refuses_a_second_batch():
    """One cache serves one batch: a smaller one would broadcast into the buffer."""
    from srdd_scale.model.blocks import PrefixKV

    cache = PrefixKV(5)
    cache.extend(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    with pytest.raises(ValueError, match=r"started with \[batch, heads\] = \[2, 1\], this scale has \[1, 1\]"):
        cache.extend(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))
