"""A class-conditional model (no text) trains with 2 real ranks on labelled shards and is scored by the paper's
generation protocol (tools/evaluate.py generation); wrong shards are refused."""
from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pytest
import torch
from PIL import Image

from srdd_scale.data.classes import class_meta
from srdd_scale.data.mds import META_FILE, open_writer, sample_record, tokenizer_meta, write_json
from srdd_scale.data.preprocess import image_to_tensor
from srdd_scale.data.shapes import iter_shapes
from srdd_scale.tokenizer import flatten_codes, load_tokenizer
from srdd_scale.cli.evaluate import main as evaluate
from srdd_scale.train.callbacks import read_metrics
from tests.helpers.training import Ranks, base_overrides, launch_ok, only_run_dir

NUM_CLASSES = 4


def _labelled_shards(folder: Path, tokenizer_dir: str, count: int, image_size: int) -> None:
    """Shapes images labelled by their colour index (4 classes), no captions, with the class table in meta.json."""
    tokenizer = load_tokenizer(tokenizer_dir)
    samples = list(iter_shapes("train", seed=0, image_size=image_size, count=count))
    with torch.no_grad():
        codes = flatten_codes(tokenizer.encode(torch.stack([image_to_tensor(s.image, image_size) for s in samples])))
    with open_writer(folder, size_limit=1 << 14) as writer:
        for i in range(len(samples)):
            writer.write(sample_record(codes[i].numpy(), torch.zeros(1, dtype=torch.int32).numpy(), "",
                                       f"{i}", i % NUM_CLASSES, {}))
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    write_json(folder / META_FILE, {**tokenizer_meta(tokenizer), "num_samples": count, **class_meta(names)})


@pytest.mark.slow
def test_two_ranks_train_a_class_conditional_model(train_assets, run_tmp):
    shards = run_tmp / "labelled"
    _labelled_shards(shards, train_assets["tokenizer"], 32, 16)
    overrides = base_overrides(
        train_assets, run_tmp / "out", "ddp", **{"model.cross_attn": "false", "model.num_classes": NUM_CLASSES,
                                                "data.train_path": str(shards), "data.heldout_path": "",
                                                "train.total_steps": 8, "train.checkpoint_every": 0})
    launch_ok(overrides, run_tmp)
    records = [r for r in read_metrics(only_run_dir(run_tmp / "out")) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert records[-1]["loss"] < records[0]["loss"]

    reference = run_tmp / "reference"  # an ImageFolder split: root/<class>/<image>
    for i, sample in enumerate(iter_shapes("heldout", seed=0, image_size=16, count=4 * NUM_CLASSES)):
        (reference / f"class{i % NUM_CLASSES}").mkdir(parents=True, exist_ok=True)
        sample.image.save(reference / f"class{i % NUM_CLASSES}" / f"{i}.png")
    common = ["--checkpoint", str(only_run_dir(run_tmp / "out")), "--reference", str(reference),
              "--reference-per-class", "4", "--per-class", "2", "--bootstrap", "2", "--cache-dir", str(run_tmp / "c")]
    assert evaluate(["generation", *common, "--out", str(run_tmp / "row.json"), "--features-out",
                     str(run_tmp / "row.npz"), "--grid-out", str(run_tmp / "row.png"), "sampling.cfg_scale=2"]) == 0
    row = json.loads((run_tmp / "row.json").read_text())
    assert row["num_samples"] == 2 * NUM_CLASSES and row["num_reference"] == 4 * NUM_CLASSES and row["step"] == 8
    assert row["sampling"]["cfg_scale"] == 2 and row["sampling_flops_per_image"] > 0 and row["seconds_per_image"] > 0
    assert 1.0 <= row["is"] <= NUM_CLASSES and row["fid"] > 0 and 0.0 <= row["class_accuracy"] <= 1.0
    with np.load(run_tmp / "row.npz", allow_pickle=False) as saved:
        assert saved["features"].shape == (2 * NUM_CLASSES, 2048)
        assert saved["labels"].tolist() == [c for c in range(NUM_CLASSES) for _ in range(2)]  # class-major
    assert Image.open(run_tmp / "row.png").size[1] > Image.open(run_tmp / "row.png").size[0]  # a class per row
    assert evaluate(["generation", *common, "--cfg-sweep", "0,1.5", "--out", str(run_tmp / "sweep.json")]) == 0
    sweep = json.loads((run_tmp / "sweep.json").read_text())
    assert [r["cfg_scale"] for r in sweep["cfg_sweep"]] == [0.0, 1.5]
    assert sweep["best_cfg"] == min(sweep["cfg_sweep"], key=lambda r: r["fid"])["cfg_scale"]

    too_few = [o for o in overrides if not o.startswith("model.num_classes=")] + ["model.num_classes=2"]
    ranks = Ranks(too_few + ["logging.output_dir=" + str(run_tmp / "out2")], run_tmp, world=1)
    assert ranks.wait() != [0]
    assert "the shards have 4 classes but model.num_classes=2" in ranks.output()
