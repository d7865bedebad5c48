"""Scale distillation: the loss vanishes when student equals teacher, and the re-laid teacher run on a reduced
schedule gives, under the markovian mask, exactly the full teacher's distribution at every kept scale."""
import copy

import pytest
import torch

from srdd_scale.model import ModelConfig, build_model
from srdd_scale.model.transformer import state_dict_for_schedule
from srdd_scale.train.distill import distillation_loss

FULL, REDUCED = (1, 2, 3, 4), (1, 2, 4)
VOCAB, LATENT, CLASSES = 32, 8, 5


def _model(patch_nums, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(depth=2, width=64, num_heads=2, cross_attn=False, num_classes=CLASSES, alng=0.3)
    return build_model(cfg, patch_nums, VOCAB, LATENT, None).eval()


def _inputs(patch_nums, batch=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    length = sum(p * p for p in patch_nums) - 1  # the start token has no latent input
    return {"teacher_inputs": torch.randn(batch, length, LATENT, generator=gen),
            "class_ids": torch.randint(0, CLASSES, (batch,), generator=gen)}


def test_distillation_loss_is_zero_when_student_equals_teacher():
    teacher = _model(REDUCED)
    student = copy.deepcopy(teacher)
    inputs = _inputs(REDUCED)
    assert distillation_loss(student(**inputs), teacher(**inputs)).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        student.head.out.weight.add_(0.05 * torch.randn_like(student.head.out.weight))
    moved = distillation_loss(student(**inputs), teacher(**inputs), temperature=2.0).item()
    assert moved > 1e-4


def test_relaid_markovian_teacher_gives_the_full_teachers_distribution_at_kept_scales():
    full = _model(FULL)
    relaid = _model(REDUCED, seed=5)
    relaid.load_state_dict(state_dict_for_schedule(full.state_dict(), FULL, REDUCED))
    inputs = _inputs(REDUCED)
    reduced_logits = relaid(**inputs)
    cond = full.condition(None, None, inputs["class_ids"], torch.zeros(3, dtype=torch.bool), 3)
    begin = 1
    for k_reduced, p in enumerate(REDUCED):
        k_full = FULL.index(p)
        scale_input = None if k_full == 0 else inputs["teacher_inputs"][:, begin - 1: begin - 1 + p * p]
        expected = full.forward_scale(k_full, scale_input, cond, full.new_cache())
        start = sum(q * q for q in REDUCED[:k_reduced])
        torch.testing.assert_close(reduced_logits[:, start: start + p * p], expected, atol=1e-5, rtol=1e-4)
        if k_full:
            begin += p * p
