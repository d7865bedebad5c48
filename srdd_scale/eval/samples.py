"""Reading image folders to evaluate, including the output folders of tools/sample.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Union

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SAMPLES_INDEX = "prompts.jsonl"  # tools/sample.py: {"prompt": ..., "attrs": {...}, "file": ...} a line


def read_samples_index(folder: Union[str, Path]) -> list[dict]:
    """Records of ``folder/prompts.jsonl``, each with ``path`` added; errors name the file and line."""
    index = Path(folder) / SAMPLES_INDEX
    if not index.is_file():
        raise FileNotFoundError(f"Expected {index} (written by tools/sample.py) listing each image file")
    records = []
    for number, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            path = index.parent / record["file"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{index}, line {number}: expected a JSON object with a 'file' key, "
                             f"got {line[:80]!r}") from None
        if not path.is_file():
            raise FileNotFoundError(f"{index}, line {number}: image {path} does not exist")
        records.append({**record, "path": path})
    return records


def list_images(folder: Union[str, Path]) -> list[Path]:
    """Image files of ``folder``: those its prompts.jsonl lists if it has one (a tools/sample.py
    folder, whose grid.png must not pass for a sample), else every image in it, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {root}")
    if (root / SAMPLES_INDEX).is_file():
        paths = [record["path"] for record in read_samples_index(root)]
    else:
        paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in folder {root}")
    return paths


def iter_images(paths: Iterable[Path]) -> Iterator[Image.Image]:
    """RGB images read one at a time; an unreadable file raises ValueError naming it."""
    for path in paths:
        try:
            with Image.open(path) as image:
                yield image.convert("RGB")
        except OSError as error:
            raise ValueError(f"Could not read image {path}: {error}") from error
