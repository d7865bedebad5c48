"""The scaling guide agrees with the FLOP/parameter counters and its memory model behaves as stated."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from srdd_scale.analysis.scaling_guide import (GIB, STATE_BYTES_FP32_GRADS, GuideSettings, activation_bytes_per_image,
                                               scaling_guide, var_recipe)
from srdd_scale.model.config import ModelConfig
from srdd_scale.model.flops import flops_per_image, parameter_counts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def guide() -> dict:
    return scaling_guide(GuideSettings())


def test_rows_match_the_counters(guide):
    s = GuideSettings()
    assert [r["depth"] for r in guide["rows"]] == [12, 16, 20, 24, 30, 36]
    for row in guide["rows"]:
        cfg = ModelConfig(depth=row["depth"])
        assert row["params"] == parameter_counts(cfg, s.patch_nums, 4096, 32, s.text_dim)
        assert row["flops_per_image_train"]["markovian"] == flops_per_image(
            cfg, s.patch_nums, "markovian", s.text_len, True, 4096, 32, s.text_dim)
        # VAR's convention: core ~ 18 d w^2 (docs/method.md §8.1: d16 302M, d30 1.99B)
        assert row["params"]["core"] == pytest.approx(18 * row["depth"] * (64 * row["depth"]) ** 2, rel=0.01)
        flops = row["flops_per_image_train"]
        assert flops["markovian"] < flops["markovian_prev"] < flops["block_causal"]


def test_memory_decreases_with_gpus_and_checkpointing(guide):
    for row in guide["rows"]:
        mem = [row["memory"][str(g)] for g in (8, 32, 128)]
        assert mem[0]["state_gib"] > mem[1]["state_gib"] > mem[2]["state_gib"]
        assert mem[0]["total_no_ac_gib"] > mem[1]["total_no_ac_gib"] > mem[2]["total_no_ac_gib"]
        for m, gpus in zip(mem, (8, 32, 128)):
            assert m["state_gib"] == pytest.approx(row["params"]["total"] * STATE_BYTES_FP32_GRADS / gpus / GIB)
            assert m["total_ac_gib"] < m["total_no_ac_gib"]
            assert m["max_micro_batch_ac"] > m["max_micro_batch_no_ac"]
    # bigger models need more activation memory per image
    acts = [r["activation_gib_per_image"]["no_ac"] for r in guide["rows"]]
    assert acts == sorted(acts)


def test_activation_formula_by_hand():
    s = GuideSettings(patch_nums=(1, 2), vocab_size=10, text_len=3)
    cfg = ModelConfig(depth=2)  # width 128, 5 tokens
    block = (5 * 25 * 128 + 2 * 3 * 128) * 2
    logits = 5 * 10 * 6
    assert activation_bytes_per_image(cfg, s, False) == 2 * block + logits
    assert activation_bytes_per_image(cfg, s, True) == 2 * 5 * 128 * 2 + block + logits


def test_var_recipe():
    assert var_recipe(16) == {"global_batch": 768, "tblr": 1e-4, "peak_lr": pytest.approx(3e-4)}
    assert var_recipe(30)["peak_lr"] == pytest.approx(8e-5 * 4)
    with pytest.raises(KeyError, match="depth 7"):
        var_recipe(7)


def test_tool_writes_markdown_and_json(tmp_path):
    out = tmp_path / "guide.md"
    subprocess.run([sys.executable, str(ROOT / "tools" / "scaling_guide.py"), "--depths", "12,16", "--gpus", "8,32",
                    "--out-md", str(out), "--layout-plan", ""], check=True, capture_output=True, cwd=ROOT)
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["depth"] for r in data["rows"]] == [12, 16]
    text = out.read_text()
    assert "| d16 | 32 |" in text and "Memory model" in text


def test_memory_table_comes_from_the_layout_plan(tmp_path):
    plan = ROOT / "docs" / "layout_plan.json"
    out = tmp_path / "guide.md"
    subprocess.run([sys.executable, str(ROOT / "tools" / "scaling_guide.py"), "--depths", "16", "--out-md", str(out),
                    "--layout-plan", str(plan)], check=True, capture_output=True, cwd=ROOT)
    text = out.read_text()
    cells = json.loads(plan.read_text())["cells"]
    assert "(planned)" in text and "total, no AC" not in text
    for cell in cells:
        row = f"| d{cell['depth']} | {16 * cell['patch_nums'][-1]} | {cell['world_size']} |"
        assert row in text and f"**{cell['planned_gib']['peak']:.2f}**" in text
