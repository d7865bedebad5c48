"""The generation protocol's scoring and cost accounting (the Inception forward itself is tested in test_fid)."""
import numpy as np
import pytest

from srdd_scale.eval.generation import Reference, sampling_flops_per_image, score
from srdd_scale.eval.inception_score import fit_class_head
from srdd_scale.model import ModelConfig, SamplingConfig
from srdd_scale.model.flops import flops_per_image


def _features(rng, labels, centres, noise=0.5):
    return centres[labels] + rng.normal(0, noise, (len(labels), centres.shape[1]))


def test_score_fid_is_accuracy_and_basic_bootstrap_intervals():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 8))
    ref_labels = np.repeat(np.arange(4), 50)
    ref_features = _features(rng, ref_labels, centres)
    ref = Reference(ref_features, ref_labels, ("a", "b", "c", "d"), fit_class_head(ref_features, ref_labels, 4), "x")
    labels = np.repeat(np.arange(4), 25)
    good = score(_features(rng, labels, centres), labels, ref, bootstrap=50, seed=0)
    collapsed = score(_features(rng, np.zeros_like(labels), centres), labels, ref, bootstrap=50, seed=0)
    assert good["class_accuracy"] == 1.0 and collapsed["class_accuracy"] == pytest.approx(0.25)
    assert 3.0 < good["is"] <= 4.0 and collapsed["is"] < 1.1  # at most the number of classes
    assert good["fid"] < 1.0 < collapsed["fid"]
    for name in ("fid", "is", "class_accuracy"):
        low, high = good[f"{name}_ci95"]
        assert low <= good[name] + 1e-9 and good[name] <= high + 1e-9
    assert score(_features(rng, labels, centres), labels, ref, bootstrap=50, seed=3)["fid_ci95"] != good["fid_ci95"]


def test_sampling_flops_count_guidance_and_simple_resampling():
    model = ModelConfig(depth=2, cross_attn=False, num_classes=10)
    patch_nums = (1, 2, 3, 4)
    forward = flops_per_image(model, patch_nums, model.mask, 1, training=False, vocab_size=64, latent_dim=8)
    plain = SamplingConfig(cfg_scale=0.0)
    assert sampling_flops_per_image(model, patch_nums, 64, 8, plain) == pytest.approx(forward)
    assert sampling_flops_per_image(model, patch_nums, 64, 8, SamplingConfig(cfg_scale=1.5)) == pytest.approx(2 * forward)
    sr = SamplingConfig(cfg_scale=0.0, resample="simple", sr_steps=2)
    assert sampling_flops_per_image(model, patch_nums, 64, 8, sr) == pytest.approx(forward * (1 + 2 * 29 / 30))


def test_sampling_overrides_are_typed_and_checked():
    from srdd_scale.cli.eval_generation import sampling_config
    from srdd_scale.config import ConfigError

    cfg = sampling_config(["sampling.resample=simple", "sampling.sr_steps=1", "sampling.cfg_scale=4"])
    assert (cfg.resample, cfg.sr_steps, cfg.cfg_scale) == ("simple", 1, 4.0)
    with pytest.raises(ConfigError, match="expected sampling.KEY=VALUE"):
        sampling_config(["cfg_scale=4"])
    with pytest.raises(ConfigError, match="mr_steps=2 needs sampling.resample=mask"):
        sampling_config(["sampling.mr_steps=2"])
