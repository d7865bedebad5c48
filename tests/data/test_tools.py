"""The pretokenize and caption-tokenizer CLIs, run in-process as a user would call them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streaming import StreamingDataset

from srdd_scale.cli import bench_pretokenize, pretokenize, train_text_tokenizer
from srdd_scale.data.shapes import generate_shape_sample
from srdd_scale.text import TextConfig, load_text_tokenizer
from srdd_scale.tokenizer import save_tokenizer

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def test_no_argument_default_writes_synthetic_train_and_heldout(tmp_path, monkeypatch, capsys, image_tokenizer):
    monkeypatch.chdir(tmp_path)
    tool = pretokenize
    # The default tokenizer exists (training it is the tokenizer package's job, tested there): it is reused.
    save_tokenizer(image_tokenizer, tool.DEFAULT_TOKENIZER_DIR)
    assert tool.main(["data.synthetic_train_samples=12", "data.synthetic_heldout_samples=4",
                      "data.decode_workers=0"]) == 0
    out = capsys.readouterr().out
    for split, count in (("train", 12), ("heldout", 4)):
        folder = tmp_path / "data" / "shapes" / split
        assert f"{split}: {count} samples, meta.json and stats.json in {folder}" in out
        assert len(StreamingDataset(local=str(folder), shuffle=False)) == count
        assert json.loads((folder / "stats.json").read_text())["written"] == count
    assert json.loads((folder / "meta.json").read_text())["tokenizer_identity"] == image_tokenizer.identity()
    assert (tmp_path / "artifacts" / "text" / "shapes_spm.model").is_file()
    # A second run finds every part complete and reuses the tokenizers it created.
    assert tool.main(["data.synthetic_train_samples=12", "data.synthetic_heldout_samples=4",
                      "data.decode_workers=0"]) == 0
    assert "train: 12 samples" in capsys.readouterr().out


def test_parts_without_a_tokenizer_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tool = pretokenize
    with pytest.raises(SystemExit, match="no tokenizer.checkpoint and no tokenizer at .*train one first"):
        tool.main(["--num-shards", "2", "--shard-index", "1"])


def test_input_folder_with_checkpoint_and_parts(tmp_path, monkeypatch, capsys, image_tokenizer, text_cfg):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        sample = generate_shape_sample(i, "train", 0, 48)
        sample.image.save(corpus / f"{i}.png")
        (corpus / f"{i}.txt").write_text(sample.caption)
    checkpoint = save_tokenizer(image_tokenizer, tmp_path / "tok")
    tool = pretokenize
    common = ["--input", str(corpus), "--output", str(tmp_path / "out"), f"tokenizer.checkpoint={checkpoint}",
              f"text.tokenizer={text_cfg.tokenizer}", "data.decode_workers=0", "--device", "cpu"]
    for index in range(2):
        assert tool.main(common + ["--num-shards", "2", "--shard-index", str(index)]) == 0
    assert "--merge" in capsys.readouterr().out
    assert tool.main(common + ["--num-shards", "2", "--merge"]) == 0
    assert "merged 2 parts of train: 6 samples" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["image_size"] == 32 and meta["num_samples"] == 6  # data.image_size followed the tokenizer
    assert not (tmp_path / "out-heldout").exists()
    # A reduced schedule for a distilled model; a run YAML with training sections is accepted as is.
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("model: {depth: 4}\nlogging: {run_name: x}\n")
    assert tool.main([str(run_yaml), "--input", str(corpus), "--output", str(tmp_path / "reduced"),
                      f"tokenizer.checkpoint={checkpoint}", f"text.tokenizer={text_cfg.tokenizer}",
                      "data.decode_workers=0", "--patch-nums", "1,4,8"]) == 0
    dataset = StreamingDataset(local=str(tmp_path / "reduced"), shuffle=False)
    assert len(dataset) == 6 and len(dataset[0]["codes"]) == 1 + 16 + 64
    assert json.loads((tmp_path / "reduced" / "meta.json").read_text())["patch_nums"] == [1, 4, 8]


def test_slurm_array_and_torchrun_pick_the_part(monkeypatch):
    tool = pretokenize
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    assert tool.default_shards() == (3, 1)
    for name in ("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert tool.default_shards() == (4, 2)


@pytest.mark.parametrize("make_input, message", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no images"),
])
def test_bad_or_empty_input_fails_at_once(tmp_path, monkeypatch, make_input, message):
    monkeypatch.chdir(tmp_path)
    tool = pretokenize
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--input", str(make_input(tmp_path)), "--output", str(tmp_path / "out")])
    assert message in str(exit_info.value.code)
    assert not (tmp_path / "out").exists() and not (tmp_path / "artifacts").exists()


def test_missing_caption_tokenizer_says_how_to_get_one(tmp_path, monkeypatch, image_tokenizer):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    generate_shape_sample(0, "train", 0, 40).image.save(corpus / "0.png")
    (corpus / "0.txt").write_text("a red circle")
    checkpoint = save_tokenizer(image_tokenizer, tmp_path / "tok")
    with pytest.raises(SystemExit) as exit_info:
        pretokenize.main(["--input", str(corpus), "--output", str(tmp_path / "out"),
                          f"tokenizer.checkpoint={checkpoint}"])
    message = str(exit_info.value.code)
    assert f"tools/train_text_tokenizer.py --input {corpus} --output" in message and "text.tokenizer=minilm" in message


def test_overwrite_flag_replaces_a_foreign_dataset(tmp_path, capsys, image_tokenizer, text_cfg):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_text('{"version": 2, "shards": []}')  # an MDS dataset of someone else
    checkpoint = save_tokenizer(image_tokenizer, tmp_path / "tok")
    common = ["--output", str(out), f"tokenizer.checkpoint={checkpoint}", f"text.tokenizer={text_cfg.tokenizer}",
              "data.synthetic_train_samples=4", "data.synthetic_heldout_samples=0", "data.decode_workers=0"]
    with pytest.raises(SystemExit, match=r"error: --output .*out holds a dataset this run did not write \(index.json\)"
                       r"; pass --overwrite"):
        pretokenize.main(common)
    assert pretokenize.main(common + ["--overwrite"]) == 0
    assert len(StreamingDataset(local=str(out), shuffle=False)) == 4


def test_train_text_tokenizer_tool(tmp_path, capsys):
    tool = train_text_tokenizer
    assert tool.main(["--output", str(tmp_path / "spm"), "--vocab-size", "96", "--max-captions", "300",
                      "data.synthetic_train_samples=300"]) == 0
    assert "wrote" in capsys.readouterr().out
    tok = load_text_tokenizer(TextConfig(tokenizer=str(tmp_path / "spm.model")))
    assert 0 < tok.vocab_size <= 96


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_torchrun_ranks_write_parts_and_rank0_merges(tmp_path, image_tokenizer, text_cfg):
    checkpoint = save_tokenizer(image_tokenizer, tmp_path / "tok")
    env = dict(os.environ, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
         str(TOOLS / "pretokenize.py"), "--output", str(tmp_path / "train"), "--heldout-output",
         str(tmp_path / "heldout"), f"tokenizer.checkpoint={checkpoint}", f"text.tokenizer={text_cfg.tokenizer}",
         "data.synthetic_train_samples=10", "data.synthetic_heldout_samples=4", "data.decode_workers=0"],
        env=env, check=True, capture_output=True, text=True, timeout=300,
    )
    for split, count in (("train", 10), ("heldout", 4)):
        assert len(list((tmp_path / split).glob("part-*-of-00002/COMPLETE"))) == 2
        assert json.loads((tmp_path / split / "stats.json").read_text())["written"] == count
        assert len(StreamingDataset(local=str(tmp_path / split), shuffle=False)) == count


@pytest.mark.slow
def test_bench_pretokenize_smoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench_pretokenize.main(["--small-images", "8", "--var-images", "1", "--batch-size", "4", "--decode-workers",
                                   "0", "--device", "cpu", "--out", str(tmp_path / "bench.json")]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    small, var = report["results"]
    assert (small["config"], small["written"], small["tokens_per_image"]) == ("small", 8, 130)
    assert (var["config"], var["written"], var["tokens_per_image"], var["image_size"]) == ("var256", 1, 680, 256)
    assert small["images_per_s"] > 0 and var["images_per_s"] > 0 and report["provenance"]["machine"]["cpu_count"]


def test_full_output_disk_gives_one_line_error(tmp_path, image_tokenizer, text_cfg):
    """A full disk, as a file-size limit (RLIMIT_FSIZE) makes it: the write fails with EFBIG, the tool says so."""
    import resource
    import signal

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get the error, not the signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    checkpoint = save_tokenizer(image_tokenizer, tmp_path / "tok")
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "pretokenize.py"), "--output", str(tmp_path / "out"),
         f"tokenizer.checkpoint={checkpoint}", f"text.tokenizer={text_cfg.tokenizer}", "data.decode_workers=0",
         "data.synthetic_train_samples=40", "data.synthetic_heldout_samples=0"],
        capture_output=True, text=True, preexec_fn=limit_file_size, cwd=tmp_path, timeout=300,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write {tmp_path / 'out'}") and ": File too large;" in last, last
