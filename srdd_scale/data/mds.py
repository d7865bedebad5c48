"""The MDS sample schema, the writer settings, and meta.json: what makes a shard folder trustworthy.

meta.json records which image and text tokenizer made the codes, so the trainer can refuse shards
that do not match its own tokenizer instead of training on meaningless tokens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from streaming import MDSWriter

SCHEMA_VERSION = 1
# docs/contracts.md "MDS shards": codes are all scales flattened coarse to fine.
COLUMNS = {
    "codes": "ndarray:uint16",
    "text_ids": "ndarray:int32",
    "caption": "str",
    "key": "str",
    "class_id": "int32",
    "attrs": "json",
}
META_FILE = "meta.json"
STATS_FILE = "stats.json"
COMPLETE_FILE = "COMPLETE"  # written last: a folder without it is unfinished and is redone, never read


class ShardMismatchError(RuntimeError):
    """A shard folder was made with another tokenizer/schema than the one that wants to read it."""


class CorruptShardError(RuntimeError):
    """A shard is missing, cut off or edited since index.json was written; the message names it."""


def _shard_files(folder: Path, index: dict) -> list[dict]:
    """The files index.json promises: each shard's compressed file if any, else its raw file, plus the raw file
    that streaming decompressed next to it on an earlier read (it is what streaming reads when present)."""
    files = []
    for shard in index.get("shards", []):
        zipped, raw = shard.get("zip_data"), shard.get("raw_data")
        if isinstance(zipped, dict):
            files.append(zipped)
        if isinstance(raw, dict) and (not isinstance(zipped, dict) or (folder / str(raw.get("basename"))).exists()):
            files.append(raw)
    return files


def verify_shards(folder: str | os.PathLike, full_hash: bool) -> int:
    """Check every shard under ``folder`` against its index.json: present, of the recorded size, and (with
    ``full_hash``) of the recorded xxh64 hash. Raises CorruptShardError naming the shard; returns bytes checked.

    A size check costs one ``stat`` per shard; hashing reads every byte (see docs/storage.md for the cost).
    """
    import xxhash

    folder = Path(folder)
    index_path = folder / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptShardError(f"{index_path}: unreadable index ({err})") from None
    checked = 0
    for info in _shard_files(folder, index):
        path = folder / str(info.get("basename", ""))
        if not path.is_file():
            raise CorruptShardError(f"{path}: listed in {index_path} but missing; re-run tools/pretokenize.py "
                                    "or restore the file")
        size = path.stat().st_size
        if size != info.get("bytes"):
            raise CorruptShardError(f"{path}: {size} bytes, {index_path} says {info.get('bytes')} (cut off or "
                                    "replaced); re-run tools/pretokenize.py or restore the file")
        if full_hash and "xxh64" in info.get("hashes", {}):
            digest = xxhash.xxh64()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
            if digest.hexdigest() != info["hashes"]["xxh64"]:
                raise CorruptShardError(f"{path}: xxh64 differs from {index_path} (the shard was edited or is "
                                        "corrupt); re-run tools/pretokenize.py or restore the file")
        checked += size
    return checked


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_meta(folder: str | os.PathLike) -> dict:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ShardMismatchError(
            f"{folder}: no {META_FILE} (not a folder written by tools/pretokenize.py, or its run did not finish)"
        )
    return json.loads(path.read_text())


def tokenizer_meta(image_tokenizer, text_tokenizer=None) -> dict:
    """The meta.json entries that pin the tokenizers; the trainer passes the same dict as ``expected``."""
    meta = {
        "schema_version": SCHEMA_VERSION,
        "patch_nums": [int(p) for p in image_tokenizer.patch_nums],
        "image_size": int(image_tokenizer.image_size),
        "vocab_size": int(image_tokenizer.vocab_size),
        "latent_dim": int(image_tokenizer.latent_dim),
        "tokenizer_identity": image_tokenizer.identity(),
    }
    if text_tokenizer is not None:
        meta.update(
            text_tokenizer_identity=text_tokenizer.identity(),
            max_text_length=int(text_tokenizer.max_length),
            text_vocab_size=int(text_tokenizer.vocab_size),
            text_pad_id=int(text_tokenizer.pad_id),
        )
    return meta


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, numpy ints refused early by json


def check_meta(folder: str | os.PathLike, expected: dict) -> dict:
    """Return the folder's meta.json, raising ShardMismatchError naming every key that differs."""
    meta = read_meta(folder)
    problems = []
    for key, want in expected.items():
        if key not in meta:
            problems.append(f"{key} is missing, expected {want!r}")
        elif _canonical(meta[key]) != _canonical(want):
            problems.append(f"{key} = {meta[key]!r}, expected {want!r}")
    if problems:
        raise ShardMismatchError(
            f"{Path(folder) / META_FILE} does not match this run: " + "; ".join(problems)
            + ". The shards were made with another tokenizer or schema: re-run tools/pretokenize.py with the "
            "run's tokenizer, or point data.train_path at matching shards."
        )
    return meta


def open_writer(folder: str | os.PathLike, size_limit: int, remote: str | None = None):
    """An MDSWriter with the contract columns, zstd compression and sha1+xxh64 hashes.

    With ``remote`` (an object-store URI), each shard is uploaded there as soon as it is full and its
    local copy deleted, so a part never needs more local disk than a few shards.
    """
    out = (str(folder), remote) if remote else str(folder)
    return MDSWriter(out=out, columns=COLUMNS, compression="zstd", hashes=["sha1", "xxh64"], size_limit=size_limit,
                     exist_ok=bool(remote))


def sample_record(codes: np.ndarray, text_ids: np.ndarray, caption: str, key: str, class_id: int,
                  attrs: dict) -> dict:
    return {
        "codes": np.ascontiguousarray(codes, dtype=np.uint16),
        "text_ids": np.ascontiguousarray(text_ids, dtype=np.int32),
        "caption": caption,
        "key": key,
        "class_id": int(class_id),
        "attrs": attrs,
    }
