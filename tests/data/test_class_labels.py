"""Class-labelled and unconditional corpora through pretokenize -> MDS -> StreamingDataset, class tables included."""
import io
import json
import tarfile

import pytest
from PIL import Image
from streaming import StreamingDataset

from srdd_scale.config import ConfigError
from srdd_scale.data.classes import check_class_labels, parse_label, read_class_file
from srdd_scale.data.config import DataConfig
from srdd_scale.data.loader import build_dataloader
from srdd_scale.data.mds import read_meta
from srdd_scale.data.pretokenize import PretokenizeConfig, merge_parts, pretokenize_part

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_folder(root, counts: dict[str, int]):
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i}.png").write_bytes(_png(COLOURS[name]))
    return root


def _pretokenize(data: DataConfig, out, image_tokenizer, text_cfg=None, text_tokenizer=None) -> dict[str, dict]:
    cfg = PretokenizeConfig(data=data, **({"text": text_cfg} if text_cfg else {}))
    stats = pretokenize_part(cfg, out, image_tokenizer, text_tokenizer)
    merge_parts(out, 1)
    dataset = StreamingDataset(local=str(out), shuffle=False)
    assert stats["written"] == len(dataset)
    return {row["key"]: row for row in (dataset[i] for i in range(len(dataset)))}


def _data(**fields) -> DataConfig:
    return DataConfig(**{"image_size": 32, "encode_batch_size": 4, "decode_workers": 0, "resize_ratio": 1.0} | fields)


def test_image_folder_ids_follow_sorted_names_and_make_captions(tmp_path, image_tokenizer, text_cfg, text_tokenizer):
    root = _image_folder(tmp_path / "corpus", {"dog": 2, "cat": 3, "eel": 1})
    rows = _pretokenize(_data(input=str(root), class_labels=True, class_caption="a photo of a {name}"),
                        tmp_path / "mds", image_tokenizer, text_cfg, text_tokenizer)
    assert {k: int(r["class_id"]) for k, r in rows.items()} == {
        "cat/0": 0, "cat/1": 0, "cat/2": 0, "dog/0": 1, "dog/1": 1, "eel/0": 2}
    assert rows["dog/1"]["caption"] == "a photo of a dog" == text_tokenizer.decode(rows["dog/1"]["text_ids"])
    meta = read_meta(tmp_path / "mds")
    assert meta["num_classes"] == 3 and meta["classes"] == ["cat", "dog", "eel"]
    assert meta["class_caption"] == "a photo of a {name}"


def test_classes_file_fixes_the_order_and_unknown_classes_are_skipped(tmp_path, image_tokenizer):
    root = _image_folder(tmp_path / "corpus", {"dog": 2, "cat": 1, "eel": 1})
    (root / "classes.txt").write_text("eel\ndog\n")  # cat is not a class of this corpus
    (root / "stray.png").write_bytes(_png((0, 0, 0)))  # no class folder
    data = _data(input=str(root), class_labels=True, captions=False)
    rows = _pretokenize(data, tmp_path / "mds", image_tokenizer)
    assert {k: int(r["class_id"]) for k, r in rows.items()} == {"dog/0": 1, "dog/1": 1, "eel/0": 0}
    assert all(r["caption"] == "" and r["text_ids"].tolist() == [0] for r in rows.values())
    stats = json.loads((tmp_path / "mds" / "stats.json").read_text())
    assert stats["skipped"] == {"missing_label": 1, "unknown_class": 1}
    assert read_meta(tmp_path / "mds")["classes"] == ["eel", "dog"]


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_webdataset_cls_and_json_labels(tmp_path, image_tokenizer):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "classes.json").write_text(json.dumps({"cat": 0, "dog": 1, "eel": 2}))
    _tar(shards / "000.tar", {
        "a.png": _png(COLOURS["eel"]), "a.cls": b"2",
        "b.png": _png(COLOURS["cat"]), "b.json": json.dumps({"label": "cat"}).encode(),
        "c.png": _png(COLOURS["dog"]), "c.cls": b"7",  # out of range
        "d.png": _png(COLOURS["dog"]),  # no label at all
    })
    rows = _pretokenize(_data(input=str(shards), class_labels=True, captions=False), tmp_path / "mds",
                        image_tokenizer)
    assert {k: int(r["class_id"]) for k, r in rows.items()} == {"000/a": 2, "000/b": 0}
    assert json.loads((tmp_path / "mds" / "stats.json").read_text())["skipped"] == {
        "bad_label": 1, "missing_label": 1}
    assert read_meta(tmp_path / "mds")["classes"] == ["cat", "dog", "eel"]


def test_unconditional_corpus_needs_no_caption_and_no_text_tokenizer(tmp_path, image_tokenizer):
    root = tmp_path / "faces"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(_png((10 * i, 0, 0)))
    rows = _pretokenize(_data(input=str(root), captions=False), tmp_path / "mds", image_tokenizer)
    assert sorted(rows) == ["0", "1", "2"] and all(int(r["class_id"]) == -1 for r in rows.values())
    meta = read_meta(tmp_path / "mds")
    assert meta["num_classes"] == 0 and "classes" not in meta and "text_tokenizer_identity" not in meta
    # an unconditional model reads them; a class-conditional one is refused before training starts
    expected = {k: meta[k] for k in ("patch_nums", "vocab_size", "tokenizer_identity")}
    data = _data(train_path=str(tmp_path / "mds"))
    batch = next(iter(build_dataloader(data, "train", 3, 0, expected)))
    assert batch["codes"].shape[0] == 3 and batch["class_ids"].tolist() == [-1, -1, -1]
    with pytest.raises(ConfigError, match="carry no class labels .* model.num_classes=10"):
        build_dataloader(data, "train", 3, 0, expected, model_classes=10)


def test_class_checks_and_label_parsing(tmp_path):
    with pytest.raises(ConfigError, match="shards have 12 classes but model.num_classes=10"):
        check_class_labels({"num_classes": 12}, 10, "x")
    check_class_labels({"num_classes": 10}, 10, "x")
    check_class_labels({"num_classes": 0}, 0, "x")
    names = ("cat", "dog")
    assert [parse_label(v, names) for v in ("dog", " 1\n", 0, 2, "cow", True)] == [
        (1, None), (1, None), (0, None), (-1, "bad_label"), (-1, "unknown_class"), (-1, "bad_label")]
    (tmp_path / "classes.json").write_text(json.dumps({"a": 0, "b": 0}))
    with pytest.raises(ConfigError, match="ids 0..1 once each"):
        read_class_file(tmp_path)
    with pytest.raises(ConfigError, match=r"class_caption='a {x}'.*needs|template with \{name\}"):
        DataConfig(class_labels=True, class_caption="a {x}").validate()
