"""compare_masks: the pure helpers, and the whole tool end to end on a tiny random tokenizer (2 steps)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from srdd_scale.analysis.compare_masks import (CompareSettings, eval_curve, plot_curves, summary_table,
                                               tokenizer_overrides, train_overrides)
from srdd_scale.config import ConfigError
from srdd_scale.run_config import RunConfig
from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, save_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TINY = TokenizerConfig(image_size=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, latent_dim=4, vocab_size=32,
                       patch_nums=(1, 2, 4, 8), share_quant_resi=2, norm_groups=4)


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY).eval()
    with torch.no_grad():  # spread the codebook so that codes vary
        tokenizer.quantize.embedding.weight.normal_(0, 0.3)
    return save_tokenizer(tokenizer, tmp_path_factory.mktemp("tok") / "tokenizer")


def test_settings_validate():
    CompareSettings().validate()
    with pytest.raises(ConfigError, match="masks="):
        CompareSettings(masks=("causal",)).validate()
    with pytest.raises(ConfigError, match="train_samples=4"):
        CompareSettings(train_samples=4, global_batch_size=8).validate()


def test_overrides_build_a_valid_run_config_that_differs_only_in_the_mask(tiny_tokenizer, tmp_path):
    s = CompareSettings(steps=7)
    configs = {}
    for mask in ("markovian", "block_causal"):
        overrides = tokenizer_overrides(tiny_tokenizer) + train_overrides(s, mask, tmp_path / "data",
                                                                          tmp_path / "spm.model", tmp_path / "runs")
        configs[mask] = RunConfig.load([str(ROOT / "configs" / "model" / "base.yaml")], overrides)
        configs[mask].validate()
    a, b = configs["markovian"], configs["block_causal"]
    assert a.tokenizer.patch_nums == (1, 2, 4, 8) and a.tokenizer.checkpoint == str(tiny_tokenizer.resolve())
    assert a.train.total_steps == 7 and not a.train.scale_lr_with_batch
    assert (a.model.mask, b.model.mask) == ("markovian", "block_causal")
    assert a.train == b.train and a.data == b.data and a.tokenizer == b.tokenizer and a.text == b.text
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        tokenizer_overrides(tmp_path)


def test_eval_curve_and_outputs(tmp_path):
    records = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0, "eval/loss": 4.5, "eval/acc": 0.1},
               {"step": 4, "loss": 3.0, "eval/loss": 3.5, "eval/acc": 0.2}]
    curve = eval_curve(records, flops_per_image=10.0, global_batch_size=3)
    assert curve["step"] == [2, 4] and curve["flops"] == [60.0, 120.0] and curve["eval_loss"] == [4.5, 3.5]
    results = {"markovian": {"curve": curve, "flops_per_image": 10.0, "train_seconds": 1.0, "sampling": None}}
    path = plot_curves(results, tmp_path / "p.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| markovian | 3.5000 | 0.2000 |" in summary_table(results)


@pytest.mark.slow
def test_tool_end_to_end_two_steps(tiny_tokenizer, tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "tools" / "compare_masks.py"), "--work", str(work), "--tokenizer",
           str(tiny_tokenizer), "--masks", "markovian,block_causal", "--depth", "1", "--steps", "2",
           "--global-batch-size", "4", "--eval-every", "1", "--eval-batches", "1", "--train-samples", "16",
           "--heldout-samples", "8", "--prompts", "2", "--sample-batch", "2", "--warmup-steps", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads((work / "compare_masks.json").read_text())
    assert (work / "compare_masks.png").is_file()
    for mask in ("markovian", "block_causal"):
        result = report["results"][mask]
        assert result["curve"]["step"] == [1, 2]
        assert all(loss > 0 for loss in result["curve"]["eval_loss"])
        assert result["sampling"]["images"] == 2 and result["sampling"]["peak_mib"] > 0
        assert result["sampling"]["prompt_accuracy"]["num_images"] == 2
    markov, causal = (report["results"][m]["flops_per_image"] for m in ("markovian", "block_causal"))
    assert markov < causal  # the Markovian mask allows fewer attention pairs
