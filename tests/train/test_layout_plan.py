"""The layout planner against a real 2-process FSDP2 run: the planned per-rank peak of one step is within 15%."""

import json

import pytest

from srdd_scale.cli import plan_layout
from srdd_scale.run_config import RunConfig

from tests.helpers.training import ROOT, Ranks

PLAN_SCRIPT = ROOT / "tools" / "plan_layout.py"
MICRO_BATCH = 4
# A d4 model (width 256) on a 6-scale schedule, bf16 with activation checkpointing, as the large configs run.
OVERRIDES = ["model.depth=4", "tokenizer.image_size=128", "tokenizer.patch_nums=[1,2,3,4,6,8]",
             "tokenizer.vocab_size=512", "tokenizer.latent_dim=16", "text.encoder=tiny_t5", "text.max_length=16",
             "text.d_model=32", "text.num_heads=2", "text.d_ff=64", "text.num_layers=1", "parallel.backend=fsdp",
             "train.precision=bf16", "train.activation_checkpointing=true", "train.global_batch_size=8"]


@pytest.mark.world_size(2)
def test_planned_peak_matches_a_real_two_rank_step(tmp_path):
    # Both sides count with torch's FSDPMemTracker on the CPU math attention path that CPU training runs.
    ranks = Ranks(OVERRIDES, tmp_path, world=2, script=PLAN_SCRIPT,
                  args=("--measure", "--micro-batch", str(MICRO_BATCH), "--kernel", "math",
                        "--out", str(tmp_path / "measured.json")))
    assert ranks.wait() == [0, 0], ranks.output()
    measured = [json.loads((tmp_path / f"measured.rank{r}.json").read_text())["measured_gib"] for r in (0, 1)]

    cfg = RunConfig.load([], OVERRIDES)
    (cell,) = [plan_layout.plan_cell(cfg, 2, 1.0, MICRO_BATCH, "math")]
    planned = cell["planned_gib"]
    for rank_memory in measured:
        assert planned["peak"] == pytest.approx(rank_memory["peak"], rel=0.15)
        assert planned["optimizer_state"] == pytest.approx(rank_memory["optimizer_state"], rel=0.15)
    assert planned["activations"] > 0 and cell["per_image_gib"] > 0
    # the largest micro-batch is where the linear model of peak vs images reaches the budget
    fits = cell["max_micro_batch"]
    slope = cell["per_image_gib"]
    assert planned["peak"] + (fits - MICRO_BATCH) * slope <= 1.0 < planned["peak"] + (fits + 1 - MICRO_BATCH) * slope
