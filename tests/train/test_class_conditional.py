"""A class-conditional model (no text) trains with 2 real ranks on labelled shards; wrong shards are refused."""
from __future__ import annotations

from pathlib import Path

import torch

from srdd_scale.data.classes import class_meta
from srdd_scale.data.mds import META_FILE, open_writer, sample_record, tokenizer_meta, write_json
from srdd_scale.data.preprocess import image_to_tensor
from srdd_scale.data.shapes import iter_shapes
from srdd_scale.tokenizer import flatten_codes, load_tokenizer
from srdd_scale.train.callbacks import read_metrics

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


def test_two_ranks_train_a_class_conditional_model(train_assets, run_tmp, trainer_launch):
    shards = run_tmp / "labelled"
    _labelled_shards(shards, train_assets["tokenizer"], 32, 16)
    overrides = trainer_launch.base_overrides(
        train_assets, run_tmp / "out", "ddp", **{"model.cross_attn": "false", "model.num_classes": NUM_CLASSES,
                                                "data.train_path": str(shards), "data.heldout_path": "",
                                                "train.total_steps": 8, "train.checkpoint_every": 0})
    trainer_launch.launch_ok(overrides, run_tmp)
    records = [r for r in read_metrics(trainer_launch.only_run_dir(run_tmp / "out")) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert records[-1]["loss"] < records[0]["loss"]

    too_few = [o for o in overrides if not o.startswith("model.num_classes=")] + ["model.num_classes=2"]
    ranks = trainer_launch.Ranks(too_few + ["logging.output_dir=" + str(run_tmp / "out2")], run_tmp, world=1)
    assert ranks.wait() != [0]
    assert "the shards have 4 classes but model.num_classes=2" in ranks.output()
