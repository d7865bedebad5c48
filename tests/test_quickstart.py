"""The quickstart end to end at toy size: every stage runs, its gates stop a starved run, the same seed gives the
same files whatever the environment's thread count, outputs load, re-runs reuse."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from srdd_scale.quickstart import gates
from srdd_scale.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--tokenizer-steps", "8", "--steps", "4", "--train-images", "64", "--num-prompts", "4"]


def quickstart(out: Path, *extra: str, threads_env: str = "1") -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=threads_env, TMPDIR=str(out.parent))
    return subprocess.run([sys.executable, "-m", "srdd_scale.cli.quickstart", "--out", str(out), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500, env=env)


def artefact_hashes(out: Path) -> dict[str, str]:
    """sha256 of the tokenizer weights, every shard file and the exported model weights."""
    files = [out / "tokenizer" / "tokenizer" / "tokenizer.safetensors", out / "export" / "model.safetensors"]
    files += sorted(p for p in (out / "shards").rglob("*") if p.is_file() and ".mds" in p.name)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "qs"
    first = quickstart(out, *TOY, "--no-gates")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return out, first


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_quickstart_runs_end_to_end_and_resumes(toy_run, tmp_path):
    out, first = toy_run
    summary = json.loads((out / "summary.json").read_text())
    for name, path in summary["paths"].items():
        assert Path(path).exists(), f"summary path {name}={path} does not exist"
    assert 0.0 <= summary["prompt_accuracy"]["joint_colour_shape"] <= 1.0
    # 8 tokenizer steps miss the floors: --no-gates reports them and goes on
    assert [g["stage"] for g in summary["gates"]] == ["image tokenizer", "caption tokenizer", "pretokenize to MDS",
                                                       "train (fsdp, 2 processes)"]
    assert not summary["gates"][0]["passed"] and "missed (--no-gates: going on)" in first.stdout
    assert summary["gates"][1]["passed"] and summary["gates"][2]["checks"][0]["value"] == 100.0
    page = (out / "summary.md").read_text()
    assert "colour+shape" in page and "--steps 2400" in page and "import_fashion_mnist" in page
    assert page in first.stdout
    assert load_tokenizer(summary["paths"]["tokenizer"]).patch_nums == (1, 2, 3, 4, 6, 8)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(summary["paths"]["export"], trust_remote_code=True)
    assert sum(p.numel() for p in model.parameters()) > 0 and not any(torch.isnan(p).any() for p in model.parameters())

    again = quickstart(out, *TOY, "--no-gates")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done already, reusing its outputs") == 8

    # a train_tokenizer run folder is accepted as well as the tokenizer folder inside it
    reused = quickstart(tmp_path / "reuse", *TOY, "--no-gates", "--tokenizer", str(out / "tokenizer"))
    assert reused.returncode == 0, reused.stderr[-3000:]
    assert "[quickstart] image tokenizer: done already" in reused.stdout
    assert not (tmp_path / "reuse" / "tokenizer").exists()

    missing = quickstart(tmp_path / "bad", *TOY, "--tokenizer", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no tokenizer.safetensors there" in missing.stderr


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_same_seed_gives_identical_files_whatever_the_environment_threads(toy_run, tmp_path):
    """Step budgets and a fixed compute layout: a run under OMP_NUM_THREADS=2 writes the first run's bytes."""
    out, _ = toy_run
    second = quickstart(tmp_path / "qs2", *TOY, "--no-gates", threads_env="2")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    first_hashes, second_hashes = artefact_hashes(out), artefact_hashes(tmp_path / "qs2")
    assert len(first_hashes) >= 4 and first_hashes == second_hashes


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gate_stops_a_starved_tokenizer_with_figure_floor_cause_and_resume(tmp_path):
    out = tmp_path / "starved"
    result = quickstart(out, "--tokenizer-steps", "4", "--steps", "4", "--train-images", "64")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    message = result.stderr
    assert "gate after 'image tokenizer' stopped the pipeline" in message
    assert "tokenizer held-out PSNR" in message and "(floor >= 18 dB): MISSED" in message
    assert "likely cause: too few steps (4)" in message
    assert f"to resume: delete {out / 'tokenizer'} and re-run with more --tokenizer-steps" in message
    assert "--no-gates" in message
    assert not (out / "text").exists() and not (out / "shards").exists()  # nothing after the gate ran


def test_unigram_baseline_gate_fails_collapsed_codes_and_passes_informative_ones():
    rng = np.random.default_rng(0)
    patch_nums, vocab = (1, 2, 4), 64
    length = sum(p * p for p in patch_nums)
    informative = [rng.integers(0, vocab, length) for _ in range(200)]
    collapsed = [np.where(rng.random(length) < 0.97, 3, rng.integers(0, vocab, length)) for _ in range(200)]
    for codes, entropy_ok in ((informative, True), (collapsed, False)):
        counts = gates.per_scale_counts(codes, patch_nums, vocab)
        assert counts.sum() == 200 * length and counts[0].sum() == 200
        baseline = gates.unigram_baseline(counts, counts)
        assert (baseline["code_entropy"] >= gates.CODE_ENTROPY_FLOOR_NATS) == entropy_ok
        # a model no better than the code frequencies misses the loss ceiling
        result = gates.training_gate(np.log(vocab), [(4, baseline["unigram_heldout_loss"])], baseline, "re-run")
        assert not result.passed
        assert "held-out loss / unigram baseline" in result.message()
    assert gates.unigram_baseline(gates.per_scale_counts(informative, patch_nums, vocab),
                                  gates.per_scale_counts(informative, patch_nums, vocab))["code_entropy"] == \
        pytest.approx(np.log(vocab), abs=0.5)
