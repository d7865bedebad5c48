"""LR schedules and VAR's batch rule, pinned at the points that define each shape."""

import dataclasses

import pytest

from srdd_scale.train.config import TrainConfig
from srdd_scale.train.schedules import lr_at, lr_factor, peak_lr

BASE = TrainConfig(total_steps=101, warmup_steps=10, warmup_start_factor=0.005, final_lr_factor=0.1,
                   global_batch_size=768, base_lr=1e-4)


def cfg(**kw) -> TrainConfig:
    return dataclasses.replace(BASE, **kw)


def test_var_linear_lr_rule():
    assert peak_lr(BASE) == pytest.approx(3e-4)  # docs/method.md §8.2: bs 768 -> 3e-4
    assert peak_lr(cfg(scale_lr_with_batch=False)) == pytest.approx(1e-4)
    assert lr_at(BASE, 10) == pytest.approx(3e-4)


@pytest.mark.parametrize("schedule", ["cosine", "lin0", "wsd", "constant"])
def test_warmup_is_linear_from_the_start_factor(schedule):
    c = cfg(schedule=schedule)
    assert lr_factor(c, 0) == pytest.approx(0.005)
    assert lr_factor(c, 5) == pytest.approx(0.005 + 0.995 * 0.5)
    assert lr_factor(c, 10) == pytest.approx(1.0)


def test_cosine_ends_at_final_factor_through_the_midpoint():
    c = cfg(schedule="cosine")
    assert lr_factor(c, 55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(c, 100) == pytest.approx(0.1)


def test_lin0_is_flat_then_linear():
    c = cfg(schedule="lin0", lin0_flat_fraction=0.1)
    assert lr_factor(c, 18) == 1.0  # 8/90 of the post-warmup steps: still flat
    assert lr_factor(c, 100) == pytest.approx(0.1)
    mid = lr_factor(c, 10 + 9 + 40)  # halfway through the decay part (81 steps)
    assert mid == pytest.approx(1 - 0.9 * 40 / 81)


def test_wsd_decays_only_in_the_last_fraction():
    c = cfg(schedule="wsd", wsd_decay_fraction=0.2, final_lr_factor=0.0)
    decay_start = 101 - 20
    assert lr_factor(c, decay_start - 1) == 1.0
    assert lr_factor(c, decay_start) == 1.0
    assert lr_factor(c, 100) == pytest.approx(0.0)
    assert 0 < lr_factor(c, 90) < 1


def test_constant_after_warmup():
    assert lr_factor(cfg(schedule="constant"), 100) == 1.0
