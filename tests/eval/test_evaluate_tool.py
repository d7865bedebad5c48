"""The evaluate CLI end to end: prompts/reference writing, prompt accuracy with grid, FID, errors."""

import json
from pathlib import Path

import pytest
from PIL import Image

from srdd_scale.cli.evaluate import main as evaluate


def _samples_folder(folder: Path, prompts: Path) -> None:
    """A tools/sample.py-style folder whose 'generated' images are the dataset's own images, the
    first one replaced by a blank, plus a grid.png that must not count as a sample."""
    from srdd_scale.data.shapes import generate_shape_sample

    folder.mkdir()
    lines = []
    for number, line in enumerate(prompts.read_text().splitlines()):
        record = json.loads(line)
        attrs = record["attrs"]
        sample = generate_shape_sample(attrs["index"], attrs["split"], seed=0)
        assert sample.caption == record["prompt"]
        image = Image.new("RGB", (64, 64), (128, 128, 128)) if number == 0 else sample.image
        image.save(folder / f"{number:05d}.png")
        lines.append(json.dumps({**record, "file": f"{number:05d}.png"}))
    (folder / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    Image.new("RGB", (300, 100)).save(folder / "grid.png")


@pytest.mark.slow
def test_prompt_accuracy_and_fid_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluate(["write-prompts", "prompts.jsonl", "--count", "6", "--split", "heldout"]) == 0
    assert evaluate(["write-reference", "ref", "--count", "6", "--split", "heldout"]) == 0
    assert len(list((tmp_path / "ref").glob("*.png"))) == 6
    _samples_folder(tmp_path / "samples", tmp_path / "prompts.jsonl")

    assert evaluate(["prompt-accuracy", "samples", "--out", "accuracy.json"]) == 0
    assert evaluate(["fid", "samples", "ref", "--batch-size", "4", "--out", "fid.json"]) == 0
    accuracy = json.loads((tmp_path / "accuracy.json").read_text())
    fid = json.loads((tmp_path / "fid.json").read_text())
    assert accuracy["num_images"] == 6
    assert accuracy["count"] == accuracy["joint_colour_shape"] == accuracy["all"] == 5 / 6
    grid = Image.open(accuracy["grid"] if Path(accuracy["grid"]).is_absolute() else tmp_path / accuracy["grid"])
    assert grid.size[0] > 6 * 64 and not (tmp_path / "samples" / "samples_prompt_accuracy_grid.png").exists()
    # grid.png is not listed in prompts.jsonl, so it is not a sample.
    assert fid["num_generated"] == fid["num_reference"] == 6
    assert fid["fid"] > 1.0  # one blank image among six


def test_errors_name_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert evaluate(["prompt-accuracy", "nowhere"]) == 2
    assert "nowhere/prompts.jsonl" in capsys.readouterr().err
    assert evaluate(["fid", "a", "b", "--inception", str(tmp_path / "missing.pt")]) == 2
    assert "Image folder not found: a" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    assert evaluate(["fid", "a", "a", "--inception", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert evaluate(("generation", "--checkpoint", "nowhere", "--reference", "ref")) == 2
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        evaluate(["generation", "--checkpoint", "c", "--reference", "r", "--cfg-sweep", "1,2", "--features-out", "f"])
    assert exit_info.value.code == 2 and "--cfg-sweep scores several" in capsys.readouterr().err
    for argv, message in (([], "required: COMMAND"), (["val-loss", "data"], "required: --model")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err



@pytest.mark.slow
def test_tokenizer_ceiling_scores_reconstructions(tmp_path):
    import torch

    from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, save_tokenizer

    torch.manual_seed(0)
    untrained = build_tokenizer(TokenizerConfig(image_size=64, ch=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1,
                                                latent_dim=4, vocab_size=16, patch_nums=(1, 2, 4, 8),
                                                share_quant_resi=2, norm="none"))
    save_tokenizer(untrained, tmp_path / "tok")
    out = tmp_path / "ceiling.json"
    assert evaluate(["tokenizer-ceiling", str(tmp_path / "tok"), "--count", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["train"]["num_images"] == result["heldout"]["num_images"] == 4
    # an untrained tokenizer returns no recognisable shapes (the analyser itself reads dataset images at 100%)
    assert result["heldout"]["joint_colour_shape"] == 0.0 and not result["passed"]
