import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest

from srdd_scale.data.config import DataConfig
from srdd_scale.data.fashion_mnist import DEFAULT_ROOT, SPLIT_FILES, read_idx, write_split_folder
from srdd_scale.data.sources import iter_refs, list_inputs


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def idx_root(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("test", 3)):
        image_file, label_file = SPLIT_FILES[split]
        write_idx(tmp_path / image_file, rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / label_file, np.arange(count) % 10)
    return tmp_path


def test_folder_is_read_back_by_the_folder_source(idx_root, tmp_path):
    assert write_split_folder(idx_root, "train", tmp_path / "out", limit=4) == 4
    cfg = DataConfig(source="folder", input=str(tmp_path / "out"), image_size=32)
    samples = list(iter_refs(cfg, list_inputs(cfg)))
    assert [s.caption for s in samples] == ["a photo of a t-shirt", "a photo of a trouser", "a photo of a pullover",
                                            "a photo of a dress"]
    expected = read_idx(idx_root / SPLIT_FILES["train"][0])[2]
    assert np.array_equal(np.asarray(samples[2].image.convert("L")), expected)


def test_folder_is_an_image_folder_in_fashion_mnists_class_order(idx_root, tmp_path):
    write_split_folder(idx_root, "test", tmp_path / "out")
    assert (tmp_path / "out" / "classes.txt").read_text().split("\n")[:3] == ["t-shirt", "trouser", "pullover"]
    assert (tmp_path / "out" / "pullover" / "test_00002.png").is_file()
    cfg = DataConfig(source="folder", input=str(tmp_path / "out"), image_size=32, class_labels=True, captions=False)
    samples = list(iter_refs(cfg, list_inputs(cfg)))
    assert [(s.key, s.class_id) for s in samples] == [("t-shirt/test_00000", 0), ("trouser/test_00001", 1),
                                                      ("pullover/test_00002", 2)]


def test_bad_files_are_named(idx_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gz: not found"):
        read_idx(tmp_path / "missing.gz")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab"))
    with pytest.raises(ValueError, match="bad.gz: not an unsigned-byte idx file"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(ValueError, match=r"short.gz: 10 bytes, expected 13 for shape \(5,\)"):
        read_idx(tmp_path / "short.gz")


def test_tool_writes_both_splits(idx_root, tmp_path):
    done = subprocess.run([sys.executable, "tools/import_fashion_mnist.py", "--root", str(idx_root),
                           "--output", str(tmp_path / "fm"), "--train-limit", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "fm" / "train").rglob("*.png"))) == 2
    assert len(list((tmp_path / "fm" / "test").rglob("*.png"))) == 3


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_real_files_have_the_published_shapes():
    assert read_idx(DEFAULT_ROOT / SPLIT_FILES["test"][0]).shape == (10000, 28, 28)
    labels = read_idx(DEFAULT_ROOT / SPLIT_FILES["test"][1])
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10
