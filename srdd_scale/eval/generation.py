"""The generation protocol of docs/reproduction.md: class-balanced samples from a checkpoint, FID and IS against
cached reference features of a data split, bootstrap intervals, sampling FLOPs and latency per image.

Reference features (and the class head behind IS, see inception_score.py) are computed once per
(split folder, images per class, image size, Inception weights) and cached as .npz, so every row of a table
is scored against the same numbers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from srdd_scale.data.config import DataConfig
from srdd_scale.data.preprocess import image_to_uint8
from srdd_scale.data.sources import class_names, iter_refs, list_inputs
from srdd_scale.eval.fid import FrechetToReference, default_inception_path, inception_features, load_inception
from srdd_scale.eval.grid import captioned_grid
from srdd_scale.eval.inception_score import ClassHead, fit_class_head, inception_score
from srdd_scale.model.config import SamplingConfig
from srdd_scale.model.flops import flops_per_image
from srdd_scale.model.sampler import sample


@dataclasses.dataclass
class Reference:
    """Inception features and labels of a labelled real split, plus the class head fitted on them."""

    features: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    head: ClassHead
    source: str


def balanced_real_images(folder: str, per_class: int, image_size: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The first ``per_class`` images of every class of an ImageFolder split, preprocessed as for training
    (resized, no crop margin), as uint8 [N, S, S, 3] with their labels."""
    cfg = DataConfig(source="folder", input=folder, image_size=image_size, class_labels=True, captions=False)
    names = class_names(cfg)
    taken = {c: 0 for c in range(len(names))}
    images, labels = [], []
    for sample_ in iter_refs(cfg, list_inputs(cfg)):
        if sample_.skip_reason is None and taken[sample_.class_id] < per_class:
            images.append(image_to_uint8(sample_.image, image_size, resize_ratio=1.0))
            labels.append(sample_.class_id)
            taken[sample_.class_id] += 1
            if all(v >= per_class for v in taken.values()):
                break
    short = {names[c]: n for c, n in taken.items() if n < per_class}
    if short:
        raise ValueError(f"{folder}: fewer than {per_class} images for classes {short}")
    return np.stack(images), np.asarray(labels), tuple(names)


def reference(folder: str, per_class: int, image_size: int, cache_dir: str, inception=None,
              weights: Optional[str] = None) -> Reference:
    """Reference features of ``folder`` (cached under ``cache_dir``; the key names everything they depend on)."""
    weights = str(weights or default_inception_path())
    key = json.dumps([str(Path(folder).resolve()), per_class, image_size, weights])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"ref-{Path(folder).name}-{per_class}pc-{digest}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        return Reference(data["features"], data["labels"], tuple(str(c) for c in data["classes"]),
                         ClassHead.from_arrays(data), str(folder))
    images, labels, classes = balanced_real_images(folder, per_class, image_size)
    features = inception_features(list(images), inception or load_inception(weights))
    head = fit_class_head(features, labels, len(classes))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=features, labels=labels, classes=np.asarray(classes), key=key, **head.arrays())
    return Reference(features, labels, classes, head, str(folder))


@torch.no_grad()
def generate_balanced(model, tokenizer, num_classes: int, per_class: int, cfg: SamplingConfig, seed: int,
                      batch_size: int = 50) -> tuple[np.ndarray, np.ndarray, float]:
    """``per_class`` samples of every class (class-major order), uint8 [N, H, W, 3], labels, seconds per image.
    One generator seeded once: the same call gives the same images."""
    labels = np.repeat(np.arange(num_classes), per_class)
    generator = torch.Generator().manual_seed(seed)
    images = []
    start = time.perf_counter()
    for chunk in np.array_split(labels, max(1, len(labels) // batch_size)):
        codes = sample(model, tokenizer, class_ids=torch.from_numpy(chunk).long(), cfg=cfg, generator=generator)
        pixels = tokenizer.decode(codes).float().clamp(-1, 1)
        images.append(((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(images), labels, seconds / len(labels)


def sampling_flops_per_image(model_cfg, patch_nums: tuple[int, ...], vocab_size: int, latent_dim: int,
                             cfg: SamplingConfig) -> float:
    """Transformer FLOPs to sample one image: one forward of every scale (KV caches make block_causal's equal to
    its training forward), doubled by guidance, plus SR's extra forwards of scales >= 1 (counted by token share)."""
    forward = flops_per_image(model_cfg, patch_nums, model_cfg.mask, 1, training=False, vocab_size=vocab_size,
                              latent_dim=latent_dim, text_dim=None)
    tokens = sum(p * p for p in patch_nums)
    extra = cfg.sr_steps * (tokens - patch_nums[0] ** 2) / tokens if cfg.resample == "simple" else 0.0
    return forward * (2 if cfg.cfg_scale > 0 else 1) * (1 + extra)


def score(features: np.ndarray, labels: np.ndarray, ref: Reference, bootstrap: int, seed: int) -> dict:
    """FID against the reference, IS and class accuracy from the reference's head, with 95% bootstrap intervals
    (generated samples resampled with replacement, the reference held fixed). The intervals are normal ones,
    x +- 1.96 sd(resamples), centred on the estimate: a resample repeats images, which alone raises FID by more
    than its spread at small N, so percentile (and even basic) intervals can miss the estimate itself."""
    probs = ref.head.probs(features)
    fid = FrechetToReference(ref.features)
    result = {"fid": fid(features), "is": inception_score(probs)[0],
              "class_accuracy": float((probs.argmax(1) == labels).mean()), "num_samples": int(len(features)),
              "num_reference": int(len(ref.features)), "bootstrap": bootstrap}
    rng = np.random.default_rng(seed)
    draws = {"fid": [], "is": [], "class_accuracy": []}
    for _ in range(bootstrap):
        idx = rng.integers(0, len(features), len(features))
        draws["fid"].append(fid(features[idx]))
        draws["is"].append(inception_score(probs[idx])[0])
        draws["class_accuracy"].append(float((probs[idx].argmax(1) == labels[idx]).mean()))
    for name, values in draws.items():
        if values:
            half = 1.96 * float(np.std(values, ddof=1))
            result[f"{name}_ci95"] = [result[name] - half, result[name] + half]
    return result


def save_features(path: str | Path, features: np.ndarray, labels: np.ndarray) -> None:
    """Write one row's Inception features and class labels (float32 .npz, no pickle) for pooling across seeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:  # a file object: numpy would append .npz to any other suffix
        np.savez(file, features=features.astype(np.float32), labels=labels)


def pooled_score(paths: list[str | Path], ref: Reference, bootstrap: int, seed: int) -> dict:
    """``score`` of the union of several rows' saved features (one row per training seed): the metric of the
    method marginalised over seeds, on as many samples as all seeds together."""
    if not paths:
        raise ValueError("pooled_score needs at least one features file")
    features, labels = [], []
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            if "features" not in data or "labels" not in data:
                raise ValueError(f"{path}: expected arrays 'features' and 'labels' (save_features), got {data.files}")
            part, part_labels = data["features"], data["labels"]
        if part.ndim != 2 or part.shape[1] != ref.features.shape[1] or len(part_labels) != len(part):
            raise ValueError(f"{path}: features {part.shape} with {len(part_labels)} labels; expected (N, "
                             f"{ref.features.shape[1]}) and N labels, like the reference")
        features.append(part.astype(np.float64))
        labels.append(part_labels)
    return score(np.concatenate(features), np.concatenate(labels), ref, bootstrap, seed)


def save_sample_grid(path: str | Path, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                     per_class: int = 8) -> None:
    """PNG of the first ``per_class`` samples of every class, one class per row, captioned with its name (as many
    columns as the class with the fewest samples has, so that rows stay classes)."""
    counts = [int((labels == c).sum()) for c in range(len(classes))]
    per_class = min([per_class, *(n for n in counts if n)])
    chosen = [i for c in range(len(classes)) for i in np.flatnonzero(labels == c)[:per_class]]
    if not chosen:
        raise ValueError("save_sample_grid got no samples")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    captioned_grid([Image.fromarray(images[i]) for i in chosen], [classes[labels[i]] for i in chosen],
                   columns=per_class, cell=64, lines=1).save(path)

