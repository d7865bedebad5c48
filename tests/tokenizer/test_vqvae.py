"""The tokenizer's convolution path (channels-last, SiLU in place without autograd) against the plain one."""
import torch
import torch.nn.functional as F

from srdd_scale.tokenizer.backbone import norm_silu


def _plain_latent(tokenizer, images):
    return tokenizer.quant_conv(tokenizer.encoder(images.contiguous()))


def _plain_decode(tokenizer, f_hat):
    return tokenizer.decoder(tokenizer.post_quant_conv(f_hat.contiguous()))


def test_encode_and_decode_equal_the_contiguous_path(tiny_tokenizer, images):
    with torch.no_grad():
        latent = tiny_tokenizer.encode_latent(images)
        assert latent.is_contiguous()
        torch.testing.assert_close(latent, _plain_latent(tiny_tokenizer, images), rtol=1e-5, atol=1e-5)
        indices = tiny_tokenizer.encode(images)
        plain_indices = tiny_tokenizer.quantize.quantize(_plain_latent(tiny_tokenizer, images)).indices
        assert all(torch.equal(a, b) for a, b in zip(indices, plain_indices))
        decoded = tiny_tokenizer.decode(indices)
        assert decoded.is_contiguous()
        f_hat = tiny_tokenizer.quantize.f_hat_from_indices(indices)
        torch.testing.assert_close(decoded, _plain_decode(tiny_tokenizer, f_hat).clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_training_forward_gradients_equal_the_contiguous_path(tiny_tokenizer, images):
    tiny_tokenizer.train()
    params = [p for p in tiny_tokenizer.parameters() if p.requires_grad]

    def grads(forward):
        recon, quantized = forward()
        loss = F.mse_loss(recon, images) + quantized.vq_loss
        return loss, torch.autograd.grad(loss, params, allow_unused=True)

    def plain():
        quantized = tiny_tokenizer.quantize.quantize(_plain_latent(tiny_tokenizer, images))
        return _plain_decode(tiny_tokenizer, quantized.f_hat), quantized

    torch.manual_seed(0)
    loss, got = grads(lambda: tiny_tokenizer(images))
    torch.manual_seed(0)
    want_loss, want = grads(plain)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_norm_silu_is_in_place_only_without_autograd_and_never_on_its_input():
    norm = torch.nn.GroupNorm(2, 4)
    x = torch.randn(2, 4, 3, 3)
    want = F.silu(norm(x))
    with torch.no_grad():
        torch.testing.assert_close(norm_silu(norm, x), want)
        before = x.clone()
        for shares_storage in (torch.nn.Identity(), lambda t: t.view_as(t)):
            torch.testing.assert_close(norm_silu(shares_storage, x), F.silu(before))
            assert torch.equal(x, before)
    leaf = x.clone().requires_grad_()
    out = norm_silu(norm, leaf)
    (g,) = torch.autograd.grad(out.sum(), leaf)
    (w,) = torch.autograd.grad(F.silu(norm(leaf)).sum(), leaf)
    torch.testing.assert_close(g, w)
