"""A hostile corpus, as a folder and as tar shards: every good sample is written once, every bad one counted.

Each case is one sample of a scraped corpus gone wrong (issue 15): FIFOs, link loops, dangling links, path
escapes, a strip bomb, a tar member bomb, deeply nested JSON, wrong types, duplicates, a 1 MB caption, and
every PIL mode, mixed with good images. Pretokenize runs in its own process so that its peak memory is its own.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streaming import StreamingDataset

from srdd_scale.data.shapes import generate_shape_sample
from srdd_scale.tokenizer import save_tokenizer

ROOT = Path(__file__).resolve().parents[2]
MEMORY_CAP_MB = 1536  # peak RSS of the pretokenize process and of each decode worker (the bombs alone: +0.5-90 GB)
LONG_CAPTION = "a red circle " * 80_000  # ~1 MB
NESTED_JSON = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads
# Caps of the run: small enough that the bombs below are cheap to build, large enough for the 1 MB caption.
CAPS = ["data.max_file_bytes=4000000", "data.max_image_pixels=150000", "data.max_caption_bytes=2048"]


def _encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _palette() -> Image.Image:
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) % 2, "P")
    image.putpalette([10, 200, 30, 0, 0, 0])
    return image


def good_images() -> dict[str, tuple[str, bytes, str]]:
    """key -> (extension, encoded image, caption): shapes plus one image per PIL mode."""
    good = {}
    for i in range(6):
        sample = generate_shape_sample(i, "train", 0, 40)
        good[f"shape{i}"] = ("png", _encode(sample.image, "PNG"), sample.caption)
    modes = {
        "I;16": ("png", Image.new("I;16", (40, 40), 4 * 257)), "I;16B": ("tiff", Image.new("I;16B", (40, 40), 9000)),
        "I": ("tiff", Image.new("I", (40, 40), 180 * 257)), "F": ("tiff", Image.new("F", (40, 40), 0.25)),
        "LA": ("png", Image.new("LA", (40, 40), (100, 128))), "P": ("png", _palette()),
        "CMYK": ("tiff", Image.new("CMYK", (40, 40), (0, 255, 255, 0))),
        "CMYKjpeg": ("jpg", Image.new("CMYK", (40, 40), (0, 255, 255, 0))),
        "LAB": ("tiff", Image.new("LAB", (40, 40), (128, 128, 128))),
        "YCbCr": ("tiff", Image.new("YCbCr", (40, 40), (94, 126, 204))),
        "1": ("png", Image.new("1", (40, 40), 1)), "RGBA": ("png", Image.new("RGBA", (40, 40), (9, 9, 9, 9))),
        "L": ("jpg", Image.new("L", (40, 40), 77)),
    }
    formats = {"png": "PNG", "tiff": "TIFF", "jpg": "JPEG"}
    for name, (ext, image) in modes.items():
        save = {"transparency": 1} if name == "P" else {}
        good[f"mode_{name.replace(';', '_')}"] = (ext, _encode(image, formats[ext], **save), f"a {name} square")
    good["long_caption"] = ("png", good["shape0"][1], LONG_CAPTION)
    return good


def bad_images() -> dict[str, tuple[str, bytes, str]]:
    """Samples whose image must be refused (same in both layouts): key -> (extension, bytes, caption)."""
    jpeg = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    return {
        "strip_bomb": ("png", _encode(Image.new("L", (100_000, 1), 128), "PNG"), "a strip"),  # ~300 bytes
        "pixel_bomb": ("png", _encode(Image.new("L", (400, 400), 128), "PNG"), "too many pixels"),
        "truncated": ("jpg", jpeg[: len(jpeg) // 2], "cut off"),
        "not_image": ("png", b"<html>404</html>", "not an image"),
    }


BAD_IMAGE_REASONS = {"extreme_aspect_ratio": 1, "decompression_bomb": 1, "truncated_image": 1, "not_an_image": 1}


def build_folder(root: Path, outside: Path) -> dict[str, int]:
    """A captions.jsonl folder; returns the skip reasons it must produce."""
    images = root / "img"
    images.mkdir(parents=True)
    lines = []
    for key, (ext, data, caption) in {**good_images(), **bad_images()}.items():
        (images / f"{key}.{ext}").write_bytes(data)
        lines.append({"image": f"img/{key}.{ext}", "caption": caption})
    os.mkfifo(images / "fifo.png")
    os.symlink("loop.png", images / "loop.png")
    os.symlink("nowhere.png", images / "dangling.png")
    (outside / "secret.png").write_bytes(good_images()["shape1"][1])
    os.symlink(outside / "secret.png", images / "escape.png")
    with open(images / "sparse.png", "wb") as fh:  # 100 MB on paper, nothing on disk
        fh.truncate(100_000_000)
    for name in ("fifo", "loop", "dangling", "escape", "sparse", "absent"):
        lines.append({"image": f"img/{name}.png", "caption": name})
    lines += [{"image": "../outside/secret.png", "caption": "escape"}, {"image": 123, "caption": "int"},
              {"image": "", "caption": "empty"}, {"image": "img/shape2.png", "caption": "again"},
              {"image": "img/int_caption.png", "caption": 123}]
    (images / "int_caption.png").write_bytes(good_images()["shape3"][1])
    text = "\n".join(json.dumps(line) for line in lines) + "\n" + '{"image": ' + NESTED_JSON + "}\n"
    (root / "captions.jsonl").write_text(text)
    return BAD_IMAGE_REASONS | {"not_a_regular_file": 1, "broken_link": 2, "path_outside_input": 2,
                                "file_too_large": 1, "missing_image": 1, "bad_caption_record": 3,
                                "duplicate_key": 1, "empty_caption": 1}


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def build_tars(root: Path) -> dict[str, int]:
    """Two webdataset shards (one gzip-compressed, holding a member bomb); returns the reasons they must produce."""
    root.mkdir(parents=True)
    good, bad = good_images(), bad_images()
    with tarfile.open(root / "00000.tar", "w") as tar:
        for key, (ext, data, caption) in {**good, **bad}.items():
            _add(tar, f"{key}.{ext}", data)
            _add(tar, f"{key}.txt", caption.encode())
        _add(tar, "fifo.png", kind=tarfile.FIFOTYPE)
        _add(tar, "fifo.txt", b"fifo")
        _add(tar, "loop.png", kind=tarfile.SYMTYPE, link="loop.png")
        _add(tar, "loop.txt", b"loop")
        _add(tar, "dangling.png", kind=tarfile.SYMTYPE, link="nowhere.png")
        _add(tar, "dangling.txt", b"dangling")
        _add(tar, "nested.png", good["shape4"][1])
        _add(tar, "nested.json", ('{"caption": ' + NESTED_JSON + "}").encode())
        _add(tar, "int_caption.png", good["shape4"][1])
        _add(tar, "int_caption.json", b'{"caption": 123}')
        _add(tar, "blank.png", good["shape4"][1])
        _add(tar, "blank.txt", b"   ")
        _add(tar, "shape2.png", good["shape2"][1])  # shape2 again, not adjacent to the first: a duplicate
        _add(tar, "shape2.txt", b"again")
    with open(root / "00001.tar", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as zipped:
        with tarfile.open(fileobj=zipped, mode="w|") as tar:
            _add(tar, "bomb.png", bytes(64_000_000))  # ~60 KB compressed
            _add(tar, "bomb.txt", b"a member bomb")
            _add(tar, "after_bomb.png", good["shape5"][1])
            _add(tar, "after_bomb.txt", b"still read")
    return BAD_IMAGE_REASONS | {"not_a_regular_file": 3, "bad_caption_record": 1, "missing_caption": 1,
                                "empty_caption": 1, "duplicate_key": 1, "file_too_large": 1}


RUN = """
import json, resource, sys
from srdd_scale.config import load_config
from srdd_scale.data.pretokenize import PretokenizeConfig, merge_parts, pretokenize_part
from srdd_scale.text import load_text_tokenizer
from srdd_scale.tokenizer import load_tokenizer
cfg = load_config([], sys.argv[3:], PretokenizeConfig)
stats = pretokenize_part(cfg, sys.argv[2], load_tokenizer(sys.argv[1]), load_text_tokenizer(cfg.text))
merge_parts(sys.argv[2], 1)
peak = [resource.getrusage(who).ru_maxrss // 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({"stats": stats, "peak_rss_mb": peak}))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, image_tokenizer):
    return save_tokenizer(image_tokenizer, tmp_path_factory.mktemp("tok") / "tok")


@pytest.mark.parametrize("layout", ["folder", "tar"])
def test_hostile_corpus_writes_every_good_sample_once_and_counts_every_bad_one(tmp_path, layout, checkpoint,
                                                                               text_cfg):
    (tmp_path / "outside").mkdir()
    corpus = tmp_path / "corpus"
    if layout == "folder":
        expected_skips = build_folder(corpus, tmp_path / "outside")
        expected_keys = {f"img/{key}" for key in good_images()}
    else:
        expected_skips = build_tars(corpus)
        expected_keys = {f"00000/{key}" for key in good_images()} | {"00001/after_bomb"}
    args = [f"data.input={corpus}", "data.image_size=32", "data.decode_workers=2", "data.encode_batch_size=8",
            f"text.tokenizer={text_cfg.tokenizer}", f"text.max_length={text_cfg.max_length}", *CAPS]
    proc = subprocess.run([sys.executable, "-c", RUN, str(checkpoint), str(tmp_path / "out"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(layout, "stats", report["stats"], "peak RSS MB (self, largest worker)", report["peak_rss_mb"])
    assert report["stats"]["skipped"] == dict(sorted(expected_skips.items()))
    assert report["stats"]["caption_truncated"] == 1
    dataset = StreamingDataset(local=str(tmp_path / "out"), shuffle=False)
    rows = [dataset[i] for i in range(len(dataset))]
    keys = Counter(row["key"] for row in rows)
    assert set(keys) == expected_keys and set(keys.values()) == {1}
    long = next(row for row in rows if row["key"].endswith("long_caption"))
    assert long["caption"] == LONG_CAPTION[:2048].rstrip()
    assert max(report["peak_rss_mb"]) < MEMORY_CAP_MB
