"""tools/quickstart.py end to end at toy size: every step runs as the user's command, outputs load, re-runs reuse."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from srdd_scale.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--tokenizer-minutes", "0.05", "--steps", "4", "--train-images", "64", "--num-prompts", "4"]


def quickstart(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/quickstart.py", "--out", str(out), *TOY, *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quickstart_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "qs"
    first = quickstart(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for name, path in summary["paths"].items():
        assert Path(path).exists(), f"summary path {name}={path} does not exist"
    assert 0.0 <= summary["prompt_accuracy"]["joint_colour_shape"] <= 1.0
    assert load_tokenizer(summary["paths"]["tokenizer"]).patch_nums == (1, 2, 3, 4, 6, 8)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(summary["paths"]["export"], trust_remote_code=True)
    assert sum(p.numel() for p in model.parameters()) > 0 and not any(torch.isnan(p).any() for p in model.parameters())

    again = quickstart(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done already, reusing its outputs") == 8

    # a train_tokenizer run folder is accepted as well as the tokenizer folder inside it
    reused = quickstart(tmp_path / "reuse", "--tokenizer", str(Path(summary["paths"]["tokenizer"]).parent))
    assert reused.returncode == 0, reused.stderr[-3000:]
    assert "[quickstart] image tokenizer: done already" in reused.stdout
    assert not (tmp_path / "reuse" / "tokenizer").exists()

    missing = quickstart(tmp_path / "bad", "--tokenizer", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "no tokenizer.safetensors there" in missing.stderr
