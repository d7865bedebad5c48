"""Sweep planning: points, steps from the FLOP counter, N/D/C bookkeeping, and clear refusals."""

from __future__ import annotations

import pytest

from srdd_scale.config import ConfigError, build
from srdd_scale.model.flops import flops_per_image, parameter_counts
from srdd_scale.sweep.config import SweepConfig
from srdd_scale.sweep.grid import plan, run_config
from srdd_scale.sweep.launch import format_status, sweep_states, to_launch
from srdd_scale.sweep.results import write_result

TINY = ("tokenizer.image_size=16", "tokenizer.ch_mult=[1,2]", "tokenizer.latent_dim=4", "tokenizer.vocab_size=32",
        "tokenizer.patch_nums=[1,2,4,8]", "text.max_length=16", "text.d_model=32", "train.global_batch_size=8")
TOKENS_PER_IMAGE = 1 + 4 + 16 + 64


def _sweep(tmp_path, **fields) -> SweepConfig:
    mapping = {"name": "t", "output_dir": str(tmp_path), "train_overrides": list(TINY), "depths": [1, 2]}
    mapping.update(fields)
    return build(SweepConfig, mapping)


def test_grid_points_reach_their_token_budgets(tmp_path):
    points = plan(_sweep(tmp_path, tokens=[8 * TOKENS_PER_IMAGE * 10, 8 * TOKENS_PER_IMAGE * 25]))
    assert [p.name for p in points] == ["d1-D6.8e03", "d1-D1.7e04", "d2-D6.8e03", "d2-D1.7e04"]
    assert [p.steps for p in points] == [10, 25, 10, 25]
    for p in points:
        cfg = run_config(p.train_configs, p.overrides)
        assert cfg.model.depth == p.depth and cfg.train.total_steps == p.steps and cfg.train.schedule == "wsd"
        assert cfg.logging.run_name == p.name and cfg.logging.output_dir == str(tmp_path / "t" / "runs")
        assert p.tokens == p.steps * 8 * TOKENS_PER_IMAGE
        assert p.params == parameter_counts(cfg.model, (1, 2, 4, 8), 32, 4, 32)["core"]
        assert p.flops == pytest.approx(p.steps * 8 * flops_per_image(cfg.model, (1, 2, 4, 8), cfg.model.mask, 16,
                                                                      True, 32, 4, 32))


def test_isoflop_points_spend_their_budget(tmp_path):
    budget = 1e11
    points = plan(_sweep(tmp_path, mode="isoflop", flops=[budget], depths=[1, 2, 3]))
    assert [p.name for p in points] == ["C1e11-d1", "C1e11-d2", "C1e11-d3"]
    assert points[0].steps > points[1].steps > points[2].steps  # bigger models get fewer steps
    for p in points:
        assert abs(p.flops - budget) <= 0.5 * p.flops / p.steps  # within half a step of the budget


def test_mask_seed_ablation_repeats_each_point_at_equal_flops(tmp_path):
    budget = 1e11
    points = plan(_sweep(tmp_path, mode="isoflop", flops=[budget], depths=[1], masks=["markovian", "block_causal"],
                         seeds=[0, 1]))
    assert [p.name for p in points] == ["C1e11-d1-markovian-s0", "C1e11-d1-block_causal-s0",
                                        "C1e11-d1-markovian-s1", "C1e11-d1-block_causal-s1"]
    assert [(p.mask, p.seed) for p in points] == [("markovian", 0), ("block_causal", 0), ("markovian", 1),
                                                  ("block_causal", 1)]
    for p in points:
        cfg = run_config(p.train_configs, p.overrides)
        assert (cfg.model.mask, cfg.train.seed) == (p.mask, p.seed)
        assert abs(p.flops - budget) <= 0.5 * p.flops / p.steps
    # the Markovian mask attends to fewer keys: at equal FLOPs it gets at least as many steps
    assert points[0].steps >= points[1].steps


def test_budget_too_small_is_refused_with_the_numbers(tmp_path):
    with pytest.raises(ConfigError, match=r"budget 100 gives 0 steps for point d1-D1e02 .* min_steps=4"):
        plan(_sweep(tmp_path, tokens=[100]))


@pytest.mark.parametrize("fields, message", [
    ({"tokens": []}, "tokens: got"),
    ({"mode": "isoflop", "flops": []}, "flops: got"),
    ({"tokens": [1e6], "depths": [0]}, "depths: got"),
    ({"tokens": [1e6], "executor": {"array_parallelism": 0}}, "executor.array_parallelism: got 0"),
    ({"tokens": [1e6], "fit": {"loss": "val:loss"}}, "fit.loss: got 'val:loss'"),
    ({"tokens": [1e6], "masks": ["causal"]}, "masks: got"),
])
def test_invalid_sweep_configs_name_the_key(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        _sweep(tmp_path, **fields).validate()


def test_status_skips_done_and_resubmits_failed_only_on_request(tmp_path):
    sweep = _sweep(tmp_path, tokens=[8 * TOKENS_PER_IMAGE * 10])
    done, failed = plan(sweep)
    write_result(tmp_path / "t" / "points" / done.name, {"point": done.name, "final_train_loss": {"loss/mean": 3.1}})
    (tmp_path / "t" / "points" / failed.name).mkdir(parents=True)
    (tmp_path / "t" / "points" / failed.name / "error.txt").write_text("Traceback ...\nValueError: boom\n")
    states = sweep_states(sweep, [done, failed])
    assert [s.state for s in states] == ["done", "failed"]
    assert to_launch(states, resubmit_failed=False) == []
    assert to_launch(states, resubmit_failed=True) == [failed]
    table = format_status(states)
    assert "3.1000" in table and "ValueError: boom" in table and "1 done, 1 failed" in table
