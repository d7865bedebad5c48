"""tools/evaluate.py end to end: prompts/reference writing, prompt accuracy with grid, FID, errors."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "evaluate.py"


def run_tool(*args, cwd):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


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


def test_prompt_accuracy_and_fid_end_to_end(tmp_path):
    done = run_tool("--write-prompts", "prompts.jsonl", "--write-reference", "ref", "--count", 6,
                    "--split", "heldout", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "ref").glob("*.png"))) == 6
    _samples_folder(tmp_path / "samples", tmp_path / "prompts.jsonl")

    done = run_tool("--prompt-accuracy", "samples", "--fid", "samples", "ref", "--batch-size", 4,
                    "--out", "eval.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    accuracy = result["prompt_accuracy"]
    assert accuracy["num_images"] == 6
    assert accuracy["count"] == accuracy["joint_colour_shape"] == accuracy["all"] == 5 / 6
    grid = Image.open(accuracy["grid"] if Path(accuracy["grid"]).is_absolute() else tmp_path / accuracy["grid"])
    assert grid.size[0] > 6 * 64 and not (tmp_path / "samples" / "samples_prompt_accuracy_grid.png").exists()
    # grid.png is not listed in prompts.jsonl, so it is not a sample.
    assert result["fid"]["num_generated"] == result["fid"]["num_reference"] == 6
    assert result["fid"]["fid"] > 1.0  # one blank image among six


def test_errors_name_what_is_missing(tmp_path):
    done = run_tool("--prompt-accuracy", "nowhere", cwd=tmp_path)
    assert done.returncode == 2 and "nowhere/prompts.jsonl" in done.stderr
    done = run_tool("--fid", "a", "b", "--inception", tmp_path / "missing.pt", cwd=tmp_path)
    assert done.returncode == 2 and "Image folder not found: a" in done.stderr
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    done = run_tool("--fid", "a", "a", "--inception", tmp_path / "missing.pt", cwd=tmp_path)
    assert done.returncode == 2 and "missing.pt" in done.stderr
    done = run_tool(cwd=tmp_path)
    assert done.returncode == 2 and "choose at least one" in done.stderr


def test_tokenizer_ceiling_scores_reconstructions(tmp_path):
    import torch

    from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, save_tokenizer

    torch.manual_seed(0)
    untrained = build_tokenizer(TokenizerConfig(image_size=64, ch=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1,
                                                latent_dim=4, vocab_size=16, patch_nums=(1, 2, 4, 8),
                                                share_quant_resi=2, norm="none"))
    save_tokenizer(untrained, tmp_path / "tok")
    done = run_tool("--tokenizer-ceiling", tmp_path / "tok", "--count", 4, "--out", "ceiling.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "ceiling.json").read_text())["tokenizer_ceiling"]
    assert result["train"]["num_images"] == result["heldout"]["num_images"] == 4
    # an untrained tokenizer returns no recognisable shapes (the analyser itself reads dataset images at 100%)
    assert result["heldout"]["joint_colour_shape"] == 0.0 and not result["passed"]
