"""Parameter counts match VAR's published sizes and the instantiated module; FLOPs follow the mask."""
import pytest

from srdd_scale.model import ModelConfig
from srdd_scale.model.config import VAR_PATCH_NUMS_256
from srdd_scale.model.flops import flops_per_image, parameter_counts
from srdd_scale.model.masks import attention_pairs

from .conftest import LATENT, PATCH_NUMS, TEXT_DIM, VOCAB, tiny_model



@pytest.mark.parametrize("depth,published", [(16, 310e6), (20, 600e6), (24, 1.0e9), (30, 2.0e9)])
def test_var_sizes_from_config(depth, published):
    """VAR's class-conditional model (no text, no scale embedding) = core + embeddings + head."""
    cfg = ModelConfig(depth=depth, cross_attn=False, scale_cond=False, num_classes=1000)
    counts = parameter_counts(cfg, VAR_PATCH_NUMS_256, 4096, 32, None)
    assert counts["core"] == pytest.approx(73728 * depth**3, rel=0.01)  # 18 d w^2 (docs/method.md §8.1)
    assert counts["total"] == pytest.approx(published, rel=0.035)
    assert counts["text"] == 0


@pytest.mark.parametrize("overrides", [{}, {"num_classes": 7, "scale_cond": False}, {"cross_attn": False}])
def test_analytic_counts_equal_instantiated(overrides):
    model = tiny_model(depth=3, **overrides)
    text_dim = TEXT_DIM if model.cfg.cross_attn else None
    assert parameter_counts(model.cfg, PATCH_NUMS, VOCAB, LATENT, text_dim) == model.parameter_groups()


def test_flops_follow_attention_pairs():
    cfg = ModelConfig(depth=16)
    dim = cfg.embed_dim
    markovian = flops_per_image(cfg, VAR_PATCH_NUMS_256, "markovian", text_len=32)
    causal = flops_per_image(cfg, VAR_PATCH_NUMS_256, "block_causal", text_len=32)
    pair_gap = attention_pairs(VAR_PATCH_NUMS_256, "block_causal") - attention_pairs(VAR_PATCH_NUMS_256, "markovian")
    assert causal - markovian == 3 * 2 * cfg.depth * 2 * pair_gap * dim  # fwd+bwd, 2 FLOPs/MAC, QK and AV
    assert flops_per_image(cfg, VAR_PATCH_NUMS_256, "markovian", 32, training=False) == markovian / 3
    # Linear layers dominate: about 6 * N * tokens for the training step.
    core = parameter_counts(cfg, VAR_PATCH_NUMS_256)["core"]
    assert markovian == pytest.approx(6 * core * 680, rel=0.35)
