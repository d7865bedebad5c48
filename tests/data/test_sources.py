"""Dirty corpora: every good sample is written exactly once, every bad one is counted under its reason."""

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from streaming import StreamingDataset

from srdd_scale.config import ConfigError
from srdd_scale.data.config import DataConfig
from srdd_scale.data.preprocess import image_to_tensor
from srdd_scale.data.pretokenize import merge_parts, pretokenize_part
from srdd_scale.data.shapes import generate_shape_sample
from srdd_scale.data.sources import iter_samples, list_inputs, part_slice, resolve_source
from srdd_scale.tokenizer import flatten_codes


def _image_bytes(index: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    generate_shape_sample(index, "train", 0, 40).image.save(buffer, format=fmt)
    return buffer.getvalue()


def _good(index: int) -> tuple[bytes, str, str]:
    fmt, ext = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")][index % 3]
    return _image_bytes(index, fmt), ext, generate_shape_sample(index, "train", 0, 40).caption


BAD_FILES = {  # name -> (image bytes, caption sidecar name, caption bytes), reason
    "corrupt": ((b"\xff\xd8\xff" + bytes(range(256)) * 4, "jpg", "txt", b"a corrupt jpeg"), "not_an_image"),
    "truncated": ((_image_bytes(50, "JPEG")[:400], "jpg", "txt", b"a truncated jpeg"), "truncated_image"),
    "notimage": ((b"just some text, not a picture\n", "png", "txt", b"a text file"), "not_an_image"),
    "empty": ((_image_bytes(51, "PNG"), "png", "txt", b"  \n"), "empty_caption"),
    "latin1": ((_image_bytes(52, "PNG"), "png", "txt", "caf\u00e9 au lait".encode("latin-1")), "caption_not_utf8"),
    "badjson": ((_image_bytes(53, "PNG"), "png", "json", b"{not json"), "bad_caption_record"),
    "nocaption": ((_image_bytes(54, "PNG"), "png", None, None), "missing_caption"),
}
NUM_GOOD = 8


@pytest.fixture
def sidecar_folder(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    expected = {}
    for i in range(NUM_GOOD):
        data, ext, caption = _good(i)
        stem = root / ("sub" if i % 2 else "") / f"good{i}"
        stem.with_suffix(f".{ext}").write_bytes(data)
        if i == 3:  # img2dataset's .json sidecar alone
            stem.with_suffix(".json").write_text(json.dumps({"caption": caption, "url": "http://x"}))
        else:
            stem.with_suffix(".txt").write_text(caption + "\n")
        expected[stem.relative_to(root).as_posix()] = (stem.with_suffix(f".{ext}"), caption)
    for name, ((data, ext, cap_ext, cap), _) in BAD_FILES.items():
        (root / f"{name}.{ext}").write_bytes(data)
        if cap_ext:
            (root / f"{name}.{cap_ext}").write_bytes(cap)
    (root / "README.md").write_text("not part of the corpus")
    return root, expected


def _expected_skips() -> Counter:
    return Counter(reason for _, reason in BAD_FILES.values())


def _check_written(folder, expected: dict, image_tokenizer, text_tokenizer):
    dataset = StreamingDataset(local=str(folder), shuffle=False)
    rows = {dataset[i]["key"]: dataset[i] for i in range(len(dataset))}
    assert sorted(rows) == sorted(expected)
    keys = sorted(expected)
    images = torch.stack([image_to_tensor(Image.open(expected[k][0]), 32) for k in keys])
    codes = flatten_codes(image_tokenizer.encode(images)).numpy()
    for key, want in zip(keys, codes):
        np.testing.assert_array_equal(rows[key]["codes"], want)
        assert rows[key]["caption"] == expected[key][1]
        assert text_tokenizer.decode(rows[key]["text_ids"]) == expected[key][1]
        assert int(rows[key]["class_id"]) == -1 and rows[key]["attrs"] == {}


def _run(tmp_path, cfg, image_tokenizer, text_tokenizer, num_shards=1):
    out = tmp_path / "out"
    for index in range(num_shards):
        pretokenize_part(cfg, out, image_tokenizer, text_tokenizer, "train", index, num_shards)
    return out, merge_parts(out, num_shards)


def test_folder_with_sidecars(tmp_path, sidecar_folder, shapes_config, image_tokenizer, text_tokenizer):
    root, expected = sidecar_folder
    cfg = shapes_config(input=str(root), decode_workers=2, encode_batch_size=4)
    assert resolve_source(cfg.data) == "folder"
    out, stats = _run(tmp_path, cfg, image_tokenizer, text_tokenizer)
    assert stats["written"] == NUM_GOOD
    assert Counter(stats["skipped"]) == _expected_skips()
    _check_written(out, expected, image_tokenizer, text_tokenizer)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == f"folder:{root}" and meta["num_samples"] == NUM_GOOD


def test_folder_with_captions_jsonl(tmp_path, shapes_config, image_tokenizer, text_tokenizer):
    root = tmp_path / "jsonl"
    (root / "img").mkdir(parents=True)
    lines, expected = [], {}
    for i in range(4):
        data, ext, caption = _good(i)
        (root / "img" / f"{i}.{ext}").write_bytes(data)
        lines.append(json.dumps({"image": f"img/{i}.{ext}", "caption": caption}))
        expected[f"img/{i}"] = (root / "img" / f"{i}.{ext}", caption)
    (root / "img" / "notes.txt").write_text("hello")
    (root / "img" / "blank.png").write_bytes(_image_bytes(9, "PNG"))
    lines += [
        json.dumps({"image": "img/missing.png", "caption": "gone"}),
        "{broken json",
        json.dumps({"caption": "no image key"}),
        json.dumps({"image": "img/blank.png", "caption": ""}),
        json.dumps({"image": "img/notes.txt", "caption": "a text file"}),
        "",
    ]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    cfg = shapes_config(input=str(root))
    out, stats = _run(tmp_path, cfg, image_tokenizer, text_tokenizer, num_shards=2)
    assert stats["written"] == 4
    assert stats["skipped"] == {"bad_caption_record": 2, "empty_caption": 1, "missing_image": 1, "not_an_image": 1}
    _check_written(out, expected, image_tokenizer, text_tokenizer)


def _write_tar(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars_with_bad_members_and_a_cut_off_shard(tmp_path, shapes_config, image_tokenizer,
                                                               text_tokenizer):
    shards = tmp_path / "wds"
    shards.mkdir()
    expected = {}
    first = []
    for i in range(5):
        data, ext, caption = _good(i)
        key = f"{i:09d}"
        first += [(f"{key}.{ext}", data), (f"{key}.txt", caption.encode()),
                  (f"{key}.json", json.dumps({"caption": caption, "key": key}).encode())]
        expected[f"00000/{key}"] = (ext, data, caption)
    for key, ((data, ext, cap_ext, cap), _) in BAD_FILES.items():
        first.append((f"{key}.{ext}", data))
        if cap_ext:
            first.append((f"{key}.{cap_ext}", cap))
    first.append(("orphan.txt", b"a caption without an image"))
    _write_tar(shards / "00000.tar", first)
    second = []
    for i in range(5, 9):
        data, ext, caption = _good(i)
        second += [(f"{i:09d}.{ext}", data), (f"{i:09d}.txt", caption.encode())]
    _write_tar(shards / "00001.tar", second)
    with tarfile.open(shards / "00001.tar") as tar:
        cut = tar.getmember(f"{7:09d}.{_good(7)[1]}").offset_data + 10
    (shards / "00001.tar").write_bytes((shards / "00001.tar").read_bytes()[:cut])
    for i in (5, 6):  # complete before the cut
        data, ext, caption = _good(i)
        expected[f"00001/{i:09d}"] = (ext, data, caption)
    files = {}
    for key, (ext, data, caption) in expected.items():
        path = tmp_path / "expected" / f"{key}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[key] = (path, caption)

    cfg = shapes_config(input=str(shards / "*.tar"), decode_workers=2, encode_batch_size=4)
    assert resolve_source(cfg.data) == "webdataset"
    out, stats = _run(tmp_path, cfg, image_tokenizer, text_tokenizer)
    skips = _expected_skips() + Counter({"missing_image": 1, "unreadable_tar": 1})
    assert Counter(stats["skipped"]) == skips
    assert stats["written"] == 7
    _check_written(out, files, image_tokenizer, text_tokenizer)
    # Same corpus, one part per tar and no decoding workers: the same samples.
    single = shapes_config(input=str(shards), decode_workers=0)
    assert resolve_source(single.data) == "webdataset"
    out2, stats2 = _run(tmp_path / "again", single, image_tokenizer, text_tokenizer, num_shards=2)
    assert stats2["written"] == 7 and stats2["skipped"] == stats["skipped"]


def test_worker_split_covers_every_sample_once(sidecar_folder):
    root, _ = sidecar_folder
    cfg = DataConfig(input=str(root))
    every = [s.key for s in iter_samples(cfg)]
    assert len(every) == len(set(every)) == NUM_GOOD + len(BAD_FILES)
    split = [s.key for w in range(3) for s in iter_samples(cfg, worker=w, num_workers=3)]
    assert sorted(split) == sorted(every)
    parts = [s.key for p in range(4) for s in iter_samples(cfg, shard_index=p, num_shards=4)]
    assert parts == every  # contiguous parts, in order
    assert [len(part_slice(range(10), p, 3)) for p in range(3)] == [3, 3, 4]


def test_bad_paths_and_empty_inputs_fail_at_once(tmp_path):
    with pytest.raises(ConfigError, match="data.input=.*does not exist"):
        list_inputs(DataConfig(input=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="matches nothing"):
        list_inputs(DataConfig(input=str(tmp_path / "*.tar")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        list_inputs(DataConfig(input=str(tmp_path / "empty"), source="folder"))
    with pytest.raises(ConfigError, match="shard_index=3, num_shards=3"):
        list(iter_samples(DataConfig(), shard_index=3, num_shards=3))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_skipped(tmp_path, shapes_config, image_tokenizer, text_tokenizer):
    root = tmp_path / "bombs"
    root.mkdir()
    for side in (40, 60, 20):  # 1600 px: over the limit; 3600 px: Pillow itself refuses (> 2x); 400 px: fine
        Image.new("RGB", (side, side), (200, 10, 10)).save(root / f"{side}.png")
        (root / f"{side}.txt").write_text(f"a red square of side {side}")
    cfg = shapes_config(input=str(root), max_image_pixels=1000)
    try:
        out, stats = _run(tmp_path, cfg, image_tokenizer, text_tokenizer)
    finally:
        Image.MAX_IMAGE_PIXELS = DataConfig().max_image_pixels
    assert stats["written"] == 1 and stats["skipped"] == {"decompression_bomb": 2}
