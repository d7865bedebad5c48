"""Real assets for the trainer, export and SLURM tests: a tiny sentencepiece model, a tiny saved image tokenizer,
and MDS shards of synthetic shapes written with it; plus a launcher that starts 2 real ranks like ``srun`` does.

The fixtures (``train_assets``, ``run_tmp``) reach every folder through tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from srdd_scale.cli import tool_command
from srdd_scale.data.loader import release_stale_shared_memory
from srdd_scale.data.mds import META_FILE, open_writer, sample_record, tokenizer_meta, write_json
from srdd_scale.data.preprocess import image_to_tensor
from srdd_scale.data.shapes import iter_shapes
from srdd_scale.text import TextConfig, load_text_tokenizer, train_sentencepiece
from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, flatten_codes, save_tokenizer
from srdd_scale.train.checkpoint import complete_checkpoints

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 16
TRAIN_SAMPLES, HELDOUT_SAMPLES = 64, 16
TOKENIZER = TokenizerConfig(image_size=IMAGE_SIZE, ch=8, ch_mult=(1, 2), num_res_blocks=1, latent_dim=4,
                            vocab_size=32, patch_nums=(1, 2, 4, 8), share_quant_resi=2, norm_groups=4)


def write_split(folder: Path, split: str, count: int, tokenizer, text_tokenizer) -> None:
    samples = list(iter_shapes(split, seed=0, image_size=IMAGE_SIZE, count=count))
    images = torch.stack([image_to_tensor(s.image, IMAGE_SIZE) for s in samples])
    with torch.no_grad():
        codes = flatten_codes(tokenizer.encode(images)).numpy()
    text_ids = text_tokenizer.encode([s.caption for s in samples])
    with open_writer(folder, size_limit=1 << 14) as writer:  # several shards, as in real runs
        for i, s in enumerate(samples):
            writer.write(sample_record(codes[i], text_ids[i], s.caption, f"{split}-{i}", -1, {}))
    write_json(folder / META_FILE, {**tokenizer_meta(tokenizer, text_tokenizer), "num_samples": count,
                                    "source": "synthetic"})


@pytest.fixture(scope="session")
def train_assets(tmp_path_factory) -> dict[str, str]:
    """Tokenizers and shards shared by every trainer test (written once per session, ~2 s)."""
    root = tmp_path_factory.mktemp("train_assets")
    captions = (s.caption for s in iter_shapes("train", seed=0, image_size=IMAGE_SIZE, count=2000))
    spm_path = train_sentencepiece(captions, root / "spm", vocab_size=96)
    text_cfg = TextConfig(tokenizer=str(spm_path), encoder="tiny_t5", max_length=16, vocab_size=96, d_model=32,
                          num_layers=1, num_heads=2, d_ff=64)
    torch.manual_seed(0)
    tokenizer = build_tokenizer(TOKENIZER).eval()
    with torch.no_grad():  # spread the codebook so that every scale uses varied codes
        tokenizer.quantize.embedding.weight.normal_(0, 0.3)
    save_tokenizer(tokenizer, root / "tokenizer")
    text_tokenizer = load_text_tokenizer(text_cfg)
    for split, count in (("train", TRAIN_SAMPLES), ("heldout", HELDOUT_SAMPLES)):
        write_split(root / split, split, count, tokenizer, text_tokenizer)
    return {"root": str(root), "spm": str(spm_path), "tokenizer": str(root / "tokenizer"),
            "train": str(root / "train"), "heldout": str(root / "heldout")}


def base_overrides(assets: dict[str, str], output_dir: Path, backend: str, **extra) -> list[str]:
    """A d2 model on the 8x8-latent shards, fp32, 2 micro-batches of 2 per rank (global batch 8)."""
    values = {
        "tokenizer.image_size": IMAGE_SIZE, "tokenizer.ch": 8, "tokenizer.ch_mult": "[1,2]",
        "tokenizer.num_res_blocks": 1, "tokenizer.latent_dim": 4, "tokenizer.vocab_size": 32,
        "tokenizer.patch_nums": "[1,2,4,8]", "tokenizer.share_quant_resi": 2, "tokenizer.norm_groups": 4,
        "tokenizer.checkpoint": assets["tokenizer"],
        "text.tokenizer": assets["spm"], "text.encoder": "tiny_t5", "text.max_length": 16, "text.vocab_size": 96,
        "text.d_model": 32, "text.num_layers": 1, "text.num_heads": 2, "text.d_ff": 64,
        "data.image_size": IMAGE_SIZE, "data.train_path": assets["train"], "data.heldout_path": assets["heldout"],
        "data.num_workers": 0,
        "model.depth": 2, "model.width": 64, "model.num_heads": 2,
        "train.total_steps": 6, "train.global_batch_size": 8, "train.base_lr": 3e-3, "train.warmup_steps": 1,
        "train.schedule": "cosine", "train.precision": "fp32", "train.checkpoint_every": 2, "train.keep_last": 2,
        "parallel.backend": backend, "parallel.micro_batch_size": 2,
        "logging.output_dir": str(output_dir), "logging.log_every": 1, "logging.wandb_mode": "disabled",
        "logging.progress_bar": False,
    }
    values.update(extra)
    if backend == "deepspeed":
        values.setdefault("train.non_finite", "stop")
    return [f"{k}={v}" for k, v in values.items()]


class Ranks:
    """``world`` processes of the train CLI (or ``script``) with srun-style variables (no torchrun: exit codes
    stay visible)."""

    def __init__(self, overrides: list[str], tmpdir: Path, world: int = 2, args: tuple[str, ...] = (),
                 script: Path | None = None):
        port = 29500 + (os.getpid() * 7 + int(time.time() * 1000)) % 20000
        log_dir = tmpdir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"rank{r}-{time.time_ns()}.log" for r in range(world)]
        self.procs = []
        for rank in range(world):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                       TMPDIR=str(tmpdir), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", WANDB_SILENT="true",
                       PYTHONPATH=str(ROOT))
            with self.logs[rank].open("w") as log:
                self.procs.append(subprocess.Popen(
                    [*(tool_command("train") if script is None else [sys.executable, str(script)]), *overrides, *args],
                    env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmpdir,
                ))

    def wait(self, timeout: float = 240) -> list[int]:
        codes = [p.wait(timeout=timeout) for p in self.procs]
        return codes

    def wait_for_checkpoint(self, output_dir: Path, timeout: float = 240) -> None:
        """Poll until the first complete checkpoint of the run under ``output_dir`` appears."""
        deadline = time.time() + timeout
        while not any(complete_checkpoints(d) for d in output_dir.glob("run-*/checkpoints")):
            assert time.time() < deadline and all(p.poll() is None for p in self.procs), self.output()
            time.sleep(0.02)

    def output(self) -> str:
        return "\n".join(f"--- rank {r}\n{p.read_text()[-6000:]}" for r, p in enumerate(self.logs))

    def kill(self, sig) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)


@pytest.fixture
def run_tmp(tmp_path):
    """Each test its own TMPDIR (streaming's filelocks); leaked /dev/shm segments are released after it."""
    yield tmp_path
    release_stale_shared_memory()


def only_run_dir(output_dir: Path) -> Path:
    (run_dir,) = output_dir.glob("run-*")
    return run_dir


def launch_ok(overrides: list[str], tmpdir: Path, world: int = 2, args: tuple[str, ...] = ()) -> None:
    ranks = Ranks(overrides, tmpdir, world, args)
    codes = ranks.wait()
    assert codes == [0] * world, ranks.output()

