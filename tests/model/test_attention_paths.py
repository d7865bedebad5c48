"""Every attention path and the per-scale AdaLN give the reference path's outputs (and gradients where the
path has a CPU backward), and a block compiles without graph breaks under every mask and path."""
import pytest
import torch

from srdd_scale.model.blocks import gate, modulate
from srdd_scale.model.transformer import resolve_attention_impl

from .conftest import PATCH_NUMS, tiny_model

MODES = ("markovian", "markovian_prev", "block_causal")
IMPLS = ("math", "sdpa", "flex")
SIZES = tuple(p * p for p in PATCH_NUMS)


def _gathered(params, sizes):
    """The reference: per-scale rows [B, K, C] copied to every token of their scale ([B, L, C])."""
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return params[:, index]


def test_per_scale_modulate_and_gate_equal_the_gathered_rows_with_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, sum(SIZES), 8, generator=gen, requires_grad=True)
    scale, shift, gamma = (torch.randn(2, len(SIZES), 8, generator=gen, requires_grad=True) for _ in range(3))
    leaves = [x, scale, shift, gamma]
    ours = gate(modulate(x, scale, shift, SIZES), gamma, SIZES)
    ref = (x * (1 + _gathered(scale, SIZES)) + _gathered(shift, SIZES)) * _gathered(gamma, SIZES)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    probe = torch.randn(ours.shape, generator=gen)
    for got, want in zip(torch.autograd.grad((ours * probe).sum(), leaves),
                         torch.autograd.grad((ref * probe).sum(), leaves)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def _logits(model, batch):
    return model(batch["teacher_inputs"], batch["text_states"], batch["text_mask"])


@pytest.mark.parametrize("mode", MODES)
def test_attention_paths_forward_equal_the_math_reference(batch, mode):
    reference = tiny_model(mode, attention_impl="math")
    with torch.no_grad():
        want = _logits(reference, batch)
        for impl in IMPLS[1:]:
            other = tiny_model(mode, attention_impl=impl)
            torch.testing.assert_close(_logits(other, batch), want, rtol=1e-5, atol=1e-5, msg=f"{impl} vs math")


@pytest.mark.parametrize("mode", MODES)
def test_fused_sdpa_gradients_equal_the_math_reference(batch, mode):
    grads = {}
    for impl in ("math", "sdpa"):
        model = tiny_model(mode, attention_impl=impl).train()
        for block in model.blocks:  # drop-path is random in training: compare with it off
            block.drop_path_rate = 0.0
        torch.manual_seed(0)  # same condition dropout draws
        _logits(model, batch).square().mean().backward()
        grads[impl] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads["math"].keys() == grads["sdpa"].keys()
    for name, want in grads["math"].items():
        torch.testing.assert_close(grads["sdpa"][name], want, rtol=1e-4, atol=1e-6, msg=name)


def test_auto_picks_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_attention_impl("auto", cpu) == "sdpa"
    assert resolve_attention_impl("auto", cuda) == "flex"
    assert resolve_attention_impl("auto", cuda, compile_setting=False) == "sdpa"
    assert resolve_attention_impl("math", cuda) == "math"


def _block_inputs(model, batch, impl):
    x = torch.randn(batch["teacher_inputs"].shape[0], sum(SIZES), model.dim)
    cond = model.condition(batch["text_states"], batch["text_mask"], None, None, x.shape[0])
    return x, model._ada_cond(cond.vector, None), cond.ctx, cond.ctx_valid, model.attn_layout(x.device)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
def test_a_block_has_no_graph_breaks(batch, mode, impl):
    torch._dynamo.reset()
    model = tiny_model(mode, attention_impl=impl, compile=False)
    grad = torch.no_grad() if impl == "flex" else torch.enable_grad()  # flex has no CPU backward
    with grad:
        explanation = torch._dynamo.explain(model.blocks[0])(*_block_inputs(model, batch, impl))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_flex_blocks_equal_the_math_reference(batch):
    """One compile for the module (~20 s on CPU): markovian with compiled blocks running flex."""
    torch._dynamo.reset()
    with torch.no_grad():
        want = _logits(tiny_model("block_causal", attention_impl="math"), batch)
        model = tiny_model("block_causal", attention_impl="flex", compile=True)
        torch.testing.assert_close(_logits(model, batch), want, rtol=1e-5, atol=1e-5)
    assert model._compiled_blocks is not None
