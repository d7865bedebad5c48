"""tools/train_tokenizer.py end to end on tiny configs: outputs, exact resume, 2-process DDP, perceptual loss."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from srdd_scale.cli.train_tokenizer import main as train_tokenizer_cli
from srdd_scale.config import ConfigError, load_config
from srdd_scale.tokenizer import load_tokenizer
from srdd_scale.tokenizer.config import TokenizerRunConfig
from srdd_scale.tokenizer.train import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "train_tokenizer.py"
TINY_OVERRIDES = [
    "data.source=synthetic", "data.image_size=16", "data.synthetic_train_samples=40",
    "data.synthetic_heldout_samples=8",
    "tokenizer.image_size=16", "tokenizer.ch=8", "tokenizer.ch_mult=[1,2]", "tokenizer.num_res_blocks=1",
    "tokenizer.latent_dim=4", "tokenizer.vocab_size=32", "tokenizer.patch_nums=[1,2,4,8]", "tokenizer.norm_groups=4",
    "tokenizer.share_quant_resi=2", "tokenizer_train.batch_size=4", "tokenizer_train.lr=3e-3",
    "tokenizer_train.warmup_steps=2", "tokenizer_train.eval_images=6", "tokenizer_train.grid_images=3",
    "tokenizer_train.log_every=1", "tokenizer_train.dead_code_every=2", "tokenizer_train.num_threads=1",
]


def tiny_config(*extra: str) -> TokenizerRunConfig:
    return load_config([], TINY_OVERRIDES + list(extra), TokenizerRunConfig)


@pytest.fixture(autouse=True)
def single_process_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_writes_metrics_grid_plot_and_tokenizer(tmp_path):
    run = tmp_path / "run"
    final = train_tokenizer(tiny_config("tokenizer_train.steps=6", "tokenizer_train.eval_every=3",
                                        "tokenizer_train.checkpoint_every=3"), run)
    records = read_metrics(run)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert {f"eval/psnr/scale_{k}" for k in range(4)} <= set(evals[-1]) and "eval/usage/scale_3" in evals[-1]
    assert evals[-1]["eval_source"] == "synthetic heldout split"
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 7))
    assert train[0]["reinit_codes"] > 0  # step 0 seeds the whole codebook from encoder residuals
    with Image.open(run / "samples" / "recon_step_00000006.png") as grid:
        # 3 images wide, original + 4 scales high, 16 px tiles with 1 px padding
        assert grid.size == (3 * 17 + 1, 5 * 17 + 1)
    assert (run / "plots" / "psnr.png").stat().st_size > 0
    tokenizer = load_tokenizer(run / "tokenizer")
    assert tokenizer.identity() == final["identity"] and tokenizer.patch_nums == (1, 2, 4, 8)
    assert load_tokenizer(run).identity() == final["identity"]  # the run folder resolves to its tokenizer
    assert final["eval/psnr"] == evals[-1]["eval/psnr"]
    assert (run / "checkpoints" / "step_00000006" / "COMPLETE").is_file()
    assert not (run / "checkpoints" / "step_00000003").exists()  # pruned: keep_checkpoints=1


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(tmp_path):
    extra = ("tokenizer_train.steps=6", "tokenizer_train.eval_every=0", "tokenizer_train.checkpoint_every=3",
             "tokenizer_train.keep_checkpoints=3")
    straight = tmp_path / "straight"
    train_tokenizer(tiny_config(*extra), straight)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000006")
    shutil.rmtree(resumed / "tokenizer")
    train_tokenizer(tiny_config(*extra), resumed)
    a = load_file(straight / "tokenizer" / "tokenizer.safetensors")
    b = load_file(resumed / "tokenizer" / "tokenizer.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [r["step"] for r in read_metrics(resumed) if r["kind"] == "train"]
    assert steps == list(range(1, 7)) + [4, 5, 6]  # the resumed run appended steps 4..6


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_two_process_ddp_then_resume_on_one(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # torchrun's --master_port=0 does not pick a free port for the static rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", str(TOOL),
           *TINY_OVERRIDES, "tokenizer_train.steps=3", "tokenizer_train.eval_every=0", "--output", str(run)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["world_size"] == 2
    train = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert train[-1]["step"] == 3 and train[-1]["images_per_s"] > 0
    # the 2-process checkpoint resumes in a single process
    final_1 = train_tokenizer(tiny_config("tokenizer_train.steps=4", "tokenizer_train.eval_every=0"), run)
    assert final_1["world_size"] == 1 and final_1["step"] == 4


def test_cli_print_config_and_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as shown:
        train_tokenizer_cli(["configs/tokenizer/shapes_64.yaml", "tokenizer.vocab_size=512", "--print-config"])
    out = capsys.readouterr().out
    assert shown.value.code == 0 and "vocab_size: 512" in out and "patch_nums:" in out
    with pytest.raises(SystemExit) as bad:
        train_tokenizer_cli(["configs/tokenizer/shapes_64.yaml", "tokenizer.patch_nums=[1,2,4]", "--output",
                             str(tmp_path / "x")])
    assert "must equal the latent grid size 8" in str(bad.value.code)
    with pytest.raises(ConfigError, match="data.image_size=32 but tokenizer.image_size=16"):
        tiny_config("data.image_size=32")
    with pytest.raises(ConfigError, match="perceptual_vgg_path"):
        tiny_config("tokenizer_train.perceptual_weight=0.1")


def test_var_256_config_is_vars_architecture():
    cfg = load_config([ROOT / "configs" / "tokenizer" / "var_256.yaml"], [], TokenizerRunConfig)
    assert cfg.tokenizer.patch_nums == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert (cfg.tokenizer.ch, cfg.tokenizer.vocab_size, cfg.tokenizer.latent_dim, cfg.tokenizer.downsample) == (
        160, 4096, 32, 16)
