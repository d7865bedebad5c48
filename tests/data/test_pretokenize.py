import json

import numpy as np
import pytest
import torch
from streaming import StreamingDataset

import srdd_scale.data.pretokenize as pretokenize_module
from srdd_scale.data.mds import COMPLETE_FILE, read_meta
from srdd_scale.data.preprocess import image_to_tensor
from srdd_scale.data.pretokenize import OutputError, merge_parts, part_dir, pretokenize_part
from srdd_scale.data.shapes import class_id, generate_shape_sample
from srdd_scale.tokenizer import flatten_codes, split_codes


def _read(folder) -> dict[str, dict]:
    dataset = StreamingDataset(local=str(folder), shuffle=False)
    rows = [dataset[i] for i in range(len(dataset))]
    by_key = {row["key"]: row for row in rows}
    assert len(by_key) == len(rows), "duplicate keys"
    return by_key


def _signature(rows: dict[str, dict]) -> dict[str, tuple]:
    return {k: (tuple(r["codes"].tolist()), tuple(r["text_ids"].tolist()), r["caption"]) for k, r in rows.items()}


def test_every_sample_matches_its_image_and_caption(shapes_shards, image_tokenizer, text_tokenizer):
    for split, count in (("train", 24), ("heldout", 8)):
        rows = _read(shapes_shards / split)
        assert sorted(rows) == [f"{split}/{i:08d}" for i in range(count)]
        samples = [generate_shape_sample(i, split, 0, 32) for i in range(count)]
        images = torch.stack([image_to_tensor(s.image, 32) for s in samples])
        expected_codes = flatten_codes(image_tokenizer.encode(images)).numpy()
        for i, sample in enumerate(samples):
            row = rows[f"{split}/{i:08d}"]
            assert row["codes"].dtype == np.uint16
            np.testing.assert_array_equal(row["codes"], expected_codes[i])
            assert text_tokenizer.decode(row["text_ids"]) == sample.caption == row["caption"]
            assert row["attrs"] == sample.attrs and int(row["class_id"]) == class_id(sample.attrs)
        # The stored codes decode to the tokenizer's own reconstruction of each image.
        stored = torch.from_numpy(np.stack([rows[f"{split}/{i:08d}"]["codes"] for i in range(count)]).astype(np.int64))
        decoded = image_tokenizer.decode(split_codes(stored, image_tokenizer.patch_nums))
        reconstruction = image_tokenizer.decode(image_tokenizer.encode(images))
        torch.testing.assert_close(decoded, reconstruction, atol=1e-5, rtol=0)
    meta = json.loads((shapes_shards / "train" / "meta.json").read_text())
    assert meta["num_samples"] == 24 and meta["patch_nums"] == [1, 2, 4, 8]
    assert meta["tokenizer_identity"] == image_tokenizer.identity()
    assert meta["text_tokenizer_identity"] == text_tokenizer.identity()
    assert meta["source"] == "synthetic:train:seed=0"
    stats = json.loads((shapes_shards / "train" / "stats.json").read_text())
    assert stats["written"] == 24 and stats["skipped"] == {} and stats["images_per_s"] > 0


def test_three_parts_merged_equal_one_run(tmp_path, shapes_shards, shapes_config, image_tokenizer, text_tokenizer):
    cfg = shapes_config(decode_workers=2)
    for index in range(3):
        stats = pretokenize_part(cfg, tmp_path, image_tokenizer, text_tokenizer, "train", index, 3)
        assert stats["written"] == 8
    merged = merge_parts(tmp_path, 3)
    assert merged["written"] == 24 and merged["parts"] == 3
    assert _signature(_read(tmp_path)) == _signature(_read(shapes_shards / "train"))
    assert json.loads((tmp_path / "meta.json").read_text())["num_samples"] == 24


def test_merge_refuses_incomplete_parts(tmp_path, shapes_config, image_tokenizer, text_tokenizer):
    pretokenize_part(shapes_config(), tmp_path, image_tokenizer, text_tokenizer, "train", 0, 2)
    with pytest.raises(RuntimeError, match="1 of 2 parts are not complete.*part-00001-of-00002"):
        merge_parts(tmp_path, 2)


def test_interrupted_part_is_redone_and_finished_part_skipped(tmp_path, monkeypatch, shapes_shards, shapes_config,
                                                             image_tokenizer, text_tokenizer):
    cfg = shapes_config()
    real_record = pretokenize_module.sample_record
    calls = {"n": 0}

    def crash_after_ten(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt("simulated kill")
        return real_record(*args, **kwargs)

    monkeypatch.setattr(pretokenize_module, "sample_record", crash_after_ten)
    with pytest.raises(KeyboardInterrupt):
        pretokenize_part(cfg, tmp_path, image_tokenizer, text_tokenizer)
    folder = part_dir(tmp_path, 0, 1)
    assert folder.is_dir() and not (folder / COMPLETE_FILE).exists()
    monkeypatch.setattr(pretokenize_module, "sample_record", real_record)

    stats = pretokenize_part(cfg, tmp_path, image_tokenizer, text_tokenizer)
    assert stats["written"] == 24
    merge_parts(tmp_path, 1)
    assert _signature(_read(tmp_path)) == _signature(_read(shapes_shards / "train"))

    shard = next(folder.glob("shard.*.mds.zstd"))
    before = shard.stat().st_mtime_ns
    again = pretokenize_part(cfg, tmp_path, image_tokenizer, text_tokenizer)
    assert again == stats and shard.stat().st_mtime_ns == before


def test_complete_part_from_another_tokenizer_is_not_reused(tmp_path, shapes_config, image_tokenizer,
                                                           other_image_tokenizer, text_tokenizer):
    pretokenize_part(shapes_config(), tmp_path, image_tokenizer, text_tokenizer)
    merge_parts(tmp_path, 1)
    (tmp_path / "notes.txt").write_text("not ours")
    with pytest.raises(OutputError, match=r"holds a dataset this run did not write "
                                          r"\(index.json, meta.json, stats.json, COMPLETE, notes.txt"):
        pretokenize_part(shapes_config(), tmp_path, other_image_tokenizer, text_tokenizer)
    with pytest.raises(OutputError, match=r"files that belong to no dataset \(notes.txt\)"):
        pretokenize_part(shapes_config(), tmp_path, other_image_tokenizer, text_tokenizer, overwrite=True)
    (tmp_path / "notes.txt").unlink()
    stats = pretokenize_part(shapes_config(), tmp_path, other_image_tokenizer, text_tokenizer, overwrite=True)
    assert merge_parts(tmp_path, 1)["written"] == stats["written"] == 24
    assert read_meta(tmp_path)["tokenizer_identity"] == other_image_tokenizer.identity()


def test_unwritable_output_gives_one_line_error(tmp_path, shapes_config, image_tokenizer, text_tokenizer):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"--output .*file is a file, expected a folder"):
        pretokenize_part(shapes_config(), tmp_path / "file", image_tokenizer, text_tokenizer)
    with pytest.raises(OutputError, match=r"cannot write .*file/sub/part-00000-of-00001: Not a directory; a part of "
                                          r"the path is a file, not a folder"):
        pretokenize_part(shapes_config(), tmp_path / "file" / "sub", image_tokenizer, text_tokenizer)
