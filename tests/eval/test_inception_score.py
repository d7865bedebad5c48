"""Inception Score against a hand computation, and the class head that supplies p(y|x)."""
import math

import numpy as np
import pytest

from srdd_scale.eval.inception_score import fit_class_head, inception_score, softmax


def test_is_matches_a_hand_computation_on_fixed_logits():
    logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]]))
    # marginal = (0.5, 0.5); KL rows: 0, 0.9 ln 1.8 + 0.1 ln 0.2 (twice), 0
    kl = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    assert inception_score(softmax(logits)) == (pytest.approx(math.exp(kl / 2)), 0.0)
    # two splits: each half has its own marginal
    # split 1: rows (0.5,0.5),(0.9,0.1): marginal (0.7,0.3)
    kl1 = [0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3), 0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)]
    kl2 = [0.1 * math.log(0.1 / 0.3) + 0.9 * math.log(0.9 / 0.7), 0.5 * math.log(0.5 / 0.3) + 0.5 * math.log(0.5 / 0.7)]
    scores = [math.exp(np.mean(kl1)), math.exp(np.mean(kl2))]
    mean, std = inception_score(softmax(logits), splits=2)
    assert mean == pytest.approx(np.mean(scores)) and std == pytest.approx(np.std(scores))


def test_is_bounds():
    confident_and_diverse = np.eye(4)
    assert inception_score(confident_and_diverse)[0] == pytest.approx(4.0)  # the number of classes
    assert inception_score(np.full((5, 4), 0.25))[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="splits=3"):
        inception_score(np.eye(2), splits=3)


def test_class_head_separates_separable_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres = rng.normal(0, 3, (3, 16))
    features = centres[labels] + rng.normal(0, 0.5, (120, 16))
    head = fit_class_head(features, labels, 3)
    assert (head.probs(features).argmax(1) == labels).mean() == 1.0
    again = fit_class_head(features, labels, 3)
    np.testing.assert_array_equal(head.weight, again.weight)  # deterministic
