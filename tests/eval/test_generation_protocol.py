"""The generation protocol's scoring and cost accounting (the Inception forward itself is tested in test_fid)."""
import numpy as np
import pytest

from srdd_scale.eval.generation import (Reference, pooled_score, sampling_flops_per_image, save_features,
                                        save_sample_grid, score)
from srdd_scale.eval.inception_score import fit_class_head
from srdd_scale.model import ModelConfig, SamplingConfig
from srdd_scale.model.flops import flops_per_image


def _features(rng, labels, centres, noise=0.5):
    return centres[labels] + rng.normal(0, noise, (len(labels), centres.shape[1]))


def _reference(seed: int, per_class: int) -> tuple[np.random.Generator, np.ndarray, Reference]:
    """Four Gaussian classes in 8-d feature space, their reference set and its fitted class head."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (4, 8))
    labels = np.repeat(np.arange(4), per_class)
    features = _features(rng, labels, centres)
    return rng, centres, Reference(features, labels, ("a", "b", "c", "d"), fit_class_head(features, labels, 4), "x")


def test_score_fid_is_accuracy_and_basic_bootstrap_intervals():
    rng, centres, ref = _reference(seed=0, per_class=50)
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


def test_pooled_score_equals_score_of_the_union(tmp_path):
    rng, centres, ref = _reference(seed=4, per_class=30)
    labels = np.repeat(np.arange(4), 10)
    parts = [_features(rng, labels, centres).astype(np.float32) for _ in range(3)]  # saved as float32
    for i, part in enumerate(parts):
        save_features(tmp_path / f"s{i}.npz", part, labels)
    pooled = pooled_score([tmp_path / f"s{i}.npz" for i in range(3)], ref, bootstrap=5, seed=0)
    union = score(np.concatenate(parts).astype(np.float64), np.tile(labels, 3), ref, bootstrap=5, seed=0)
    assert pooled["num_samples"] == 120
    save_features(tmp_path / "narrow.npz", parts[0][:, :5], labels)
    with pytest.raises(ValueError, match=r"narrow.npz: features \(40, 5\)"):
        pooled_score([tmp_path / "s0.npz", tmp_path / "narrow.npz"], ref, bootstrap=0, seed=0)
    for key in ("fid", "is", "class_accuracy", "fid_ci95", "is_ci95"):
        assert pooled[key] == pytest.approx(union[key])


def test_sample_grid_has_one_row_per_class(tmp_path):
    from PIL import Image

    labels = np.repeat(np.arange(3), 5)
    images = np.stack([np.full((32, 32, 3), 15 * i, np.uint8) for i in range(len(labels))])
    save_sample_grid(tmp_path / "grid.png", images, labels, ("a", "b", "c"), per_class=4)
    small = Image.open(tmp_path / "grid.png")
    save_sample_grid(tmp_path / "grid.png", images, labels, ("a", "b", "c", "d"), per_class=4)  # "d" drew nothing
    assert Image.open(tmp_path / "grid.png").size == small.size
    save_sample_grid(tmp_path / "grid.png", images, labels, ("a", "b"), per_class=4)
    two_rows = Image.open(tmp_path / "grid.png").size
    assert two_rows[0] == small.size[0] and 3 * two_rows[1] == 2 * small.size[1]
    with pytest.raises(ValueError, match="no samples"):
        save_sample_grid(tmp_path / "none.png", images, labels, (), per_class=4)


def test_sampling_flops_count_guidance_and_simple_resampling():
    model = ModelConfig(depth=2, cross_attn=False, num_classes=10)
    patch_nums = (1, 2, 3, 4)
    forward = flops_per_image(model, patch_nums, model.mask, 1, training=False, vocab_size=64, latent_dim=8)
    plain = SamplingConfig(cfg_scale=0.0)
    assert sampling_flops_per_image(model, patch_nums, 64, 8, plain) == pytest.approx(forward)
    guided = SamplingConfig(cfg_scale=1.5)
    assert sampling_flops_per_image(model, patch_nums, 64, 8, guided) == pytest.approx(2 * forward)
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


