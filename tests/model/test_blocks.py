"""The attention helper every block uses: plain softmax attention with scale 1, whatever backend runs it."""
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
