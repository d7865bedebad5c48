"""slurm/pretokenize_array.sh on a real SLURM: an array of parts, then the dependent merge job."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streaming import StreamingDataset

from srdd_scale.sweep.launch import slurm_reachable
from srdd_scale.tokenizer import save_tokenizer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.skipif(not slurm_reachable(), reason="no SLURM controller answers")]


def test_array_parts_then_merge(tmp_path, image_tokenizer, text_cfg):
    checkpoint = save_tokenizer(image_tokenizer, tmp_path / "tok")
    env = dict(os.environ, PYTHON=sys.executable, PRETOKENIZE_LOGS=str(tmp_path / "logs"), TMPDIR=str(tmp_path))
    submitted = subprocess.run(
        [str(ROOT / "slurm" / "pretokenize_array.sh"), "2", "--output", str(tmp_path / "train"),
         "--heldout-output", str(tmp_path / "heldout"), f"tokenizer.checkpoint={checkpoint}",
         f"text.tokenizer={text_cfg.tokenizer}", "data.synthetic_train_samples=12",
         "data.synthetic_heldout_samples=6", "data.decode_workers=0"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    assert "submitted array job" in submitted
    deadline = time.monotonic() + 420
    while not all((tmp_path / split / "COMPLETE").is_file() for split in ("train", "heldout")):
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "logs").glob("*")))
            pytest.fail(f"the merge did not finish; logs:\n{logs}")
        time.sleep(2)
    for split, count in (("train", 12), ("heldout", 6)):
        dataset = StreamingDataset(local=str(tmp_path / split), shuffle=False)
        assert sorted(dataset[i]["key"] for i in range(len(dataset))) == [f"{split}/{i:08d}" for i in range(count)]
        assert len(list((tmp_path / split).glob("part-*-of-00002"))) == 2
