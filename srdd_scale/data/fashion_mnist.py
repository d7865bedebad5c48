"""Fashion-MNIST's idx files -> image folders with captions and class labels, so every tool can read real images.

The Debian package `dataset-fashion-mnist` installs the four original idx `.gz` files; the folder
format (ImageFolder class sub-folders + classes.txt + `captions.jsonl`) is the one `data.source=folder` reads,
with or without ``data.class_labels``.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

from srdd_scale.data.sources import CAPTIONS_FILE

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot")
SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one Fashion-MNIST uses


def read_idx(path: str | Path) -> np.ndarray:
    """A gzipped idx file (magic 0x0000 type ndim, big-endian dims, then the data) -> uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (Debian: apt-get install dataset-fashion-mnist)")
    raw = gzip.decompress(path.read_bytes())
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE:
        raise ValueError(f"{path}: not an unsigned-byte idx file (header {raw[:4].hex()!r}, expected 000008nn)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_split_folder(root: str | Path, split: str, output: str | Path, limit: int | None = None) -> int:
    """Write the first `limit` images of `split` as an ImageFolder (OUTPUT/<class name>/<split>_NNNNN.png)
    with classes.txt in Fashion-MNIST's own id order and captions.jsonl ("a photo of a sneaker"); returns
    the count. Read it with captions, or with ``data.class_labels=true`` for class-conditional training."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r}: expected one of {sorted(SPLIT_FILES)}")
    image_file, label_file = (Path(root) / name for name in SPLIT_FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{image_file} / {label_file}: expected N x H x W images and N labels, "
                         f"got shapes {images.shape} and {labels.shape}")
    if labels.max(initial=0) >= len(CLASS_NAMES):
        raise ValueError(f"{label_file}: label {int(labels.max())} is outside 0..{len(CLASS_NAMES) - 1}")
    count = len(images) if limit is None else min(limit, len(images))
    output = Path(output)
    for name in CLASS_NAMES:
        (output / name).mkdir(parents=True, exist_ok=True)
    (output / "classes.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES))
    records = []
    for i in range(count):
        name = f"{CLASS_NAMES[int(labels[i])]}/{split}_{i:05d}.png"
        Image.fromarray(images[i], mode="L").save(output / name)
        records.append({"image": name, "caption": f"a photo of a {CLASS_NAMES[int(labels[i])]}"})
    # the caption file is what makes the folder a data set, so it is written last and whole
    staging = output / f".{CAPTIONS_FILE}.tmp"
    staging.write_text("".join(json.dumps(r) + "\n" for r in records))
    staging.replace(output / CAPTIONS_FILE)
    return count
