"""Import into a new schedule (scale distillation), tools/sample.py, tools/export_hf.py and validation loss."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from srdd_scale.cli import evaluate, export_hf, sample
from srdd_scale.export.importing import load_exported_weights
from srdd_scale.export.pipeline import SRDDPipeline
from srdd_scale.export.val_loss import validation_loss
from srdd_scale.model import build_model
from tests.helpers.training import base_overrides, launch_ok, write_split

pytestmark = pytest.mark.slow  # real ranks / trained runs: tens of seconds each


def test_load_exported_weights_into_reduced_schedule(trained):
    _, export_dir = trained("ddp")
    full = SRDDPipeline.from_pretrained(export_dir)
    reduced_schedule = (1, 4, 8)
    model = build_model(full.model.cfg, reduced_schedule, full.model.vocab_size, full.model.latent_dim,
                        full.model.text_dim)
    load_exported_weights(model, export_dir)
    assert torch.equal(model.pos_embed[0, 1:17], full.model.pos_embed[0, 5:21])  # the 4x4 scale
    assert torch.equal(model.lvl_embed.weight[2], full.model.lvl_embed.weight[3])
    assert torch.equal(model.blocks[0].attn.proj.weight, full.model.blocks[0].attn.proj.weight)
    wrong_end = build_model(full.model.cfg, (1, 2, 4), full.model.vocab_size, full.model.latent_dim,
                            full.model.text_dim)
    with pytest.raises(ValueError, match="final latent grid"):
        load_exported_weights(wrong_end, export_dir)
    new_side = build_model(full.model.cfg, (1, 3, 8), full.model.vocab_size, full.model.latent_dim,
                           full.model.text_dim)
    with pytest.raises(ValueError, match="only scales of the trained schedule"):
        load_exported_weights(new_side, export_dir)
    wider = build_model(type(full.model.cfg)(depth=2, width=128, num_heads=2), full.model.patch_nums,
                        full.model.vocab_size, full.model.latent_dim, full.model.text_dim)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_exported_weights(wider, export_dir)


def test_pipeline_samples_on_a_reduced_schedule(trained):
    _, export_dir = trained("ddp")
    pipe = SRDDPipeline.from_pretrained(export_dir, patch_nums=(1, 4, 8))
    codes = pipe.generate_codes(["a red circle", "a blue square"], seed=0)
    assert [tuple(c.shape) for c in codes] == [(2, 1, 1), (2, 4, 4), (2, 8, 8)]
    assert pipe.decode(codes)[0].size == (16, 16)


def test_sample_tool_writes_pngs_index_and_grid(trained, tmp_path):
    _, export_dir = trained("ddp")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "a red circle", "attrs": {"colour": "red"}}) + "\n"
                       + json.dumps({"prompt": "a blue square", "attrs": {"colour": "blue"}}) + "\n")
    out = tmp_path / "samples"
    assert sample.main(["--model", str(export_dir), "--prompts-file", str(prompts), "--num", "2",
                        "--cfg", "1.0", "--top-k", "5", "--seed", "3", "--batch-size", "3",
                        "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["a red circle"] * 2 + ["a blue square"] * 2
    assert records[2]["attrs"] == {"colour": "blue"}
    for record in records:
        assert Image.open(out / record["file"]).size == (16, 16)
    assert Image.open(out / "grid.png").size[0] > 16
    # the same seed and batch size reproduce the same images
    again = tmp_path / "again"
    sample.main(["--model", str(export_dir), "--prompts-file", str(prompts), "--num", "2", "--cfg", "1.0",
                 "--top-k", "5", "--seed", "3", "--batch-size", "3", "--out", str(again)])
    assert (out / "00003.png").read_bytes() == (again / "00003.png").read_bytes()


@pytest.mark.parametrize("mode", ["inpaint", "outpaint", "superres"])
def test_sample_tool_zero_shot_modes(trained, tmp_path, mode):
    _, export_dir = trained("ddp")
    image = tmp_path / "image.png"
    Image.new("RGB", (8 if mode == "superres" else 16,) * 2, (200, 30, 30)).save(image)
    args = ["--model", str(export_dir), "--prompt", "a red circle", "--out", str(tmp_path / "out"), f"--{mode}",
            str(image)]
    if mode == "inpaint":
        mask = Image.new("L", (16, 16), 255)
        mask.paste(0, (4, 4, 12, 12))
        mask.save(tmp_path / "mask.png")
        args += ["--mask", str(tmp_path / "mask.png")]
    assert sample.main(args) == 0
    assert Image.open(tmp_path / "out" / "00000.png").size == (16, 16)


def test_export_tool_and_validation_loss(trained, train_assets, tmp_path):
    run_dir, export_dir = trained("ddp")
    out = tmp_path / "via_cli"
    assert export_hf.main([str(run_dir), str(out), "--cfg", "3.0", "--top-k", "0"]) == 0
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["cfg_scale"] == 3.0 and generation["top_k"] == 0
    assert SRDDPipeline.from_pretrained(out).sampling.cfg_scale == 3.0
    result = validation_loss(export_dir, train_assets["heldout"], batch_size=4)
    assert result["images"] == 16
    scales = [result[f"loss/scale_{k}"] for k in range(4)]
    assert all(0 < value < 10 for value in scales)
    # token weighting: the overall mean is the token-weighted mean of the per-scale losses
    sizes = [p * p for p in result["patch_nums"]]
    weighted = sum(s * n for s, n in zip(scales, sizes)) / sum(sizes)
    assert result["loss/mean"] == pytest.approx(weighted, rel=1e-5)
    assert 0 <= result["acc/mean"] <= 1
    report = tmp_path / "val.json"
    assert evaluate.main(["val-loss", train_assets["heldout"], "--model", str(export_dir),
                                   "--batch-size", "4", "--out", str(report)]) == 0
    via_cli = json.loads(report.read_text())
    assert via_cli["patch_nums"] == result["patch_nums"]
    assert {k: v for k, v in via_cli.items() if k.startswith(("loss", "acc"))} == pytest.approx(
        {k: v for k, v in result.items() if k.startswith(("loss", "acc"))})


def test_train_init_from_export_on_a_reduced_schedule(trained, train_assets, tmp_path):
    """Scale distillation's first step: shards re-pretokenized on 1,4,8 and a run started from the 1,2,4,8 export."""
    from srdd_scale.export.checkpoints import read_model_state, resolve_checkpoint
    from srdd_scale.text import TextConfig, load_text_tokenizer
    from srdd_scale.tokenizer import load_tokenizer

    _, export_dir = trained("ddp")
    reduced = (1, 4, 8)
    tokenizer = load_tokenizer(train_assets["tokenizer"], patch_nums=reduced)
    text_tokenizer = load_text_tokenizer(TextConfig(tokenizer=train_assets["spm"], max_length=16, vocab_size=96))
    write_split(tmp_path / "train_148", "train", 16, tokenizer, text_tokenizer)
    output = tmp_path / "runs"
    # a vanishing learning rate: after one step the weights are still the remapped export's
    overrides = base_overrides(train_assets, output, "ddp", **{
        "tokenizer.patch_nums": "[1,4,8]", "data.train_path": str(tmp_path / "train_148"), "data.heldout_path": "",
        "train.init_from": str(export_dir), "train.total_steps": 1, "train.base_lr": 1e-12,
        "train.checkpoint_every": 1, "train.warmup_steps": 0})
    launch_ok(overrides, tmp_path, world=1)
    (run_dir,) = output.glob("run-*")
    full = SRDDPipeline.from_pretrained(export_dir).model
    expected = build_model(full.cfg, reduced, full.vocab_size, full.latent_dim, full.text_dim)
    load_exported_weights(expected, export_dir)
    _, folder = resolve_checkpoint(run_dir)
    state = read_model_state(folder, expected.state_dict())
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(state[key], value, atol=1e-8, rtol=0, msg=key)
