"""Loss weighting, metrics, and that every mask mode trains (loss falls on a fixed batch)."""
import math

import pytest
import torch

from srdd_scale.model import ModelConfig, build_model
from srdd_scale.model.loss import scale_losses
from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, split_codes

from .conftest import PATCH_NUMS, SEQ_LEN, VOCAB


def test_token_and_scale_weighting_and_metrics():
    torch.manual_seed(0)
    logits = torch.randn(2, SEQ_LEN, VOCAB)
    targets = torch.randint(0, VOCAB, (2, SEQ_LEN))
    targets[:, :5] = logits[:, :5].argmax(-1)  # scales 0 and 1 (1 + 4 tokens) fully correct
    per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(2, -1)
    sizes = [p * p for p in PATCH_NUMS]
    per_scale = [part.mean().item() for part in per_token.split(sizes, 1)]

    loss, metrics = scale_losses(logits, targets, PATCH_NUMS, "token")
    assert loss.item() == pytest.approx(per_token.mean().item(), rel=1e-6)
    loss_s, _ = scale_losses(logits, targets, PATCH_NUMS, "scale")
    assert loss_s.item() == pytest.approx(sum(per_scale) / len(per_scale), rel=1e-6)
    assert metrics["acc/scale_0"] == 1.0 and metrics["acc/scale_1"] == 1.0
    assert metrics["loss/last"] == pytest.approx(per_scale[-1], rel=1e-6)
    assert metrics["loss/mean"] == pytest.approx(loss.item(), rel=1e-6)
    assert set(metrics) == {f"{m}/scale_{k}" for m in ("loss", "acc") for k in range(4)} | {
        "loss/mean", "loss/last", "acc/mean", "acc/last"}

    smoothed, smoothed_metrics = scale_losses(logits, targets, PATCH_NUMS, "token", label_smoothing=0.1)
    assert smoothed.item() != pytest.approx(loss.item())
    assert smoothed_metrics["loss/mean"] == pytest.approx(metrics["loss/mean"])  # metrics are plain CE


def test_mismatched_schedule_is_reported():
    with pytest.raises(ValueError, match=r"patch_nums=\[1, 2, 3\]"):
        scale_losses(torch.randn(1, SEQ_LEN, VOCAB), torch.zeros(1, SEQ_LEN, dtype=torch.long), (1, 2, 3))


@pytest.mark.parametrize("mode", ["markovian", "markovian_prev", "block_causal"])
def test_loss_decreases_at_d4(mode):
    """30 AdamW steps on a fixed batch of real tokenizer inputs (random codes) at d4."""
    torch.manual_seed(0)
    tok_cfg = TokenizerConfig(image_size=16, ch=8, ch_mult=(1, 1, 2), num_res_blocks=1, latent_dim=8,
                              vocab_size=VOCAB, patch_nums=PATCH_NUMS, norm_groups=4)
    tokenizer = build_tokenizer(tok_cfg)
    codes = torch.randint(0, VOCAB, (4, SEQ_LEN))
    with torch.no_grad():
        teacher_inputs = tokenizer.teacher_forcing_inputs(split_codes(codes, PATCH_NUMS))
    text_states = torch.randn(4, 6, 16)
    model = build_model(ModelConfig(depth=4, mask=mode), PATCH_NUMS, VOCAB, tokenizer.latent_dim, 16).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = model(teacher_inputs, text_states, None)
        loss, _ = scale_losses(logits, codes, PATCH_NUMS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(VOCAB), rel=0.05)  # head init x0.02: near-uniform logits
    assert losses[-1] < 0.7 * losses[0], losses
