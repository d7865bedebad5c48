"""Images + captions -> multi-scale codes + caption ids -> MDS shards, in resumable, mergeable parts.

Each part (one SLURM array task or one torchrun rank) writes its own sub-folder and a COMPLETE
marker last; a re-run skips complete parts and redoes unfinished ones. ``merge_parts`` joins the
parts' index.json files into one dataset index at the output root.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from srdd_scale.config import ConfigError
from srdd_scale.data.classes import class_meta
from srdd_scale.data.config import DataConfig
from srdd_scale.data.mds import (
    COMPLETE_FILE, META_FILE, STATS_FILE, ShardMismatchError, open_writer, read_meta, sample_record,
    tokenizer_meta, write_json,
)
from srdd_scale.data.preprocess import SkipSample, image_to_uint8, uint8_to_tensor
from srdd_scale.data.sources import (
    CAPTION_TRUNCATED, class_names, iter_refs, list_inputs, part_slice, resolve_source,
)
from srdd_scale.data import shapes, storage
from srdd_scale.text.config import TextConfig
from srdd_scale.tokenizer import TokenizerConfig, flatten_codes
from srdd_scale.utils.os_errors import describe_os_error
from srdd_scale.utils.logging import get_logger, progress

log = get_logger(__name__)
# text_ids of a corpus without captions (data.captions=false): one 0, since MDS cannot store an empty array.
NO_TEXT_IDS = np.zeros(1, dtype=np.int32)


@dataclass(frozen=True)
class PretokenizeConfig:
    """What tools/pretokenize.py resolves from YAML + overrides: the corpus, the text and image tokenizers."""

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # Only tokenizer.checkpoint is read: the architecture comes with the checkpoint's weights.
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def validate(self) -> None:
        self.data.validate()
        self.text.validate()


def part_name(shard_index: int, num_shards: int) -> str:
    return f"part-{shard_index:05d}-of-{num_shards:05d}"


def part_dir(output: str | Path, shard_index: int, num_shards: int) -> Path:
    """The local folder of one part: under ``output``, or under its staging mirror for a remote ``output``."""
    return local_root(output) / part_name(shard_index, num_shards)


def local_root(output: str | Path) -> Path:
    """``output`` itself, or for an object-store URI the local folder mirroring its small files."""
    return storage.staging_dir(str(output)) if storage.is_remote(output) else Path(output)


_MARKERS = (COMPLETE_FILE, META_FILE, STATS_FILE)


def _mirror(output: str, names: tuple[str, ...], *subdirs: str) -> None:
    """Refresh the local mirror of remote ``output/subdirs.../names`` (absent objects leave no file)."""
    for name in names:
        storage.fetch(storage.join(output, *subdirs, name), local_root(output).joinpath(*subdirs, name))


def _publish(output: str | Path, folder: Path, names: tuple[str, ...]) -> None:
    """Upload ``folder``'s ``names`` (in order: the marker last) when ``output`` is remote."""
    if storage.is_remote(output):
        remote_dir = storage.join(str(output), *folder.relative_to(local_root(output)).parts)
        for name in names:
            storage.upload(folder / name, remote_dir)


def part_complete(output: str | Path, shard_index: int, num_shards: int) -> bool:
    folder = part_dir(output, shard_index, num_shards)
    if storage.is_remote(output):
        _mirror(str(output), (COMPLETE_FILE,), folder.name)
    return (folder / COMPLETE_FILE).is_file()


class OutputError(RuntimeError):
    """The output folder cannot be written, or holds data this run must not replace (one line for the user)."""


_PART_NAME = re.compile(r"^part-\d{5}-of-\d{5}$")
_ROOT_FILES = ("index.json", META_FILE, STATS_FILE, COMPLETE_FILE)
# Failures of the output, not of a record: a file where a folder should be, no permission, no space.
def _settings(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "num_samples"}


def _made_with(folder: Path, expected_meta: dict) -> bool | None:
    """Whether ``folder``'s meta.json has ``expected_meta``'s settings (None: no meta.json)."""
    if not (folder / META_FILE).is_file():
        return None
    try:
        return _settings(json.loads((folder / META_FILE).read_text())) == expected_meta
    except (OSError, ValueError, AttributeError):
        return False


def _foreign_entries(output: Path, expected_meta: dict) -> list[Path]:
    """What in ``output`` this run did not write: another run's dataset or parts, or unrelated files."""
    foreign: list[Path] = []
    ours = _made_with(output, expected_meta)
    if ours is not None:
        if not ours:
            foreign += [output / name for name in _ROOT_FILES if (output / name).exists()]
    elif (output / "index.json").exists():  # an MDS dataset that tools/pretokenize.py did not write
        foreign += [output / name for name in _ROOT_FILES if (output / name).exists()]
    known = set(_ROOT_FILES) | {name + ".tmp" for name in _ROOT_FILES}
    for entry in sorted(output.iterdir()):
        if _PART_NAME.match(entry.name) and entry.is_dir():
            if _made_with(entry, expected_meta) is False:
                foreign.append(entry)
        elif entry.name not in known:
            foreign.append(entry)
    return foreign


def prepare_output(output: str | Path, expected_meta: dict, overwrite: bool = False) -> None:
    """Refuse an ``output`` that is a file or holds a dataset this run did not write; ``overwrite`` removes
    that dataset (its index/meta/stats, its parts, and the shard files its index.json names).

    Entries of this run (same settings) are kept, so parts of one run may start in any order.
    Files that belong to no dataset are never removed, even with ``overwrite``.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputError(f"--output {output} is a file, expected a folder (new or written by pretokenize)")
    if not output.is_dir():
        return
    foreign = _foreign_entries(output, expected_meta)
    if not foreign:
        return
    names = ", ".join(p.name for p in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
    if not overwrite:
        raise OutputError(f"--output {output} holds a dataset this run did not write ({names}); pass --overwrite "
                          "to replace it, or choose another --output")
    shard_files: set[str] = set()
    index = output / "index.json"
    if index in foreign:
        try:
            for shard in json.loads(index.read_text()).get("shards", []):
                for kind in ("raw_data", "zip_data"):
                    if isinstance(shard.get(kind), dict):
                        shard_files.add(str(shard[kind].get("basename", "")))
        except (OSError, ValueError, AttributeError):
            pass
    others = [p for p in foreign if p.name not in shard_files and p.name not in _ROOT_FILES
              and not _PART_NAME.match(p.name)]
    if others:
        listed = ", ".join(p.name for p in others[:5])
        raise OutputError(f"--output {output} holds files that belong to no dataset ({listed}); --overwrite "
                          "replaces datasets only: choose an empty or new --output")
    for path in foreign:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    log.warning("--overwrite: removed %d entries of another dataset from %s", len(foreign), output)


def source_meta(cfg: DataConfig, split: str) -> dict:
    """meta.json entries describing what was read and how it was preprocessed."""
    source = resolve_source(cfg)
    meta = {
        "source": f"synthetic:{split}:seed={cfg.seed}" if source == "synthetic" else f"{source}:{cfg.input}",
        "preprocess": {"resize_ratio": cfg.resize_ratio, "min_size": cfg.min_size},
    }
    if source == "synthetic":
        return meta | {"num_classes": shapes.NUM_CLASSES}  # class ids: shapes.class_id
    if cfg.class_caption:
        meta["class_caption"] = cfg.class_caption
    return meta | class_meta(class_names(cfg))


@dataclass
class _Decoded:
    key: str
    pixels: np.ndarray | None
    caption: str | None
    attrs: dict
    class_id: int
    skip_reason: str | None
    caption_truncated: bool = False


class _DecodeStream(IterableDataset):
    """Decodes and resizes one part's images; each DataLoader worker takes every W-th sample."""

    def __init__(self, cfg: DataConfig, refs, split: str, image_size: int):
        self.cfg, self.refs, self.split, self.image_size = cfg, refs, split, image_size

    def __iter__(self):
        # Pillow's own bomb guard (warn above the limit, refuse above twice it) follows data.max_image_pixels.
        Image.MAX_IMAGE_PIXELS = self.cfg.max_image_pixels
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        for raw in iter_refs(self.cfg, self.refs, self.split, worker, num_workers):
            pixels, reason = None, raw.skip_reason
            if reason is None:
                try:
                    pixels = image_to_uint8(raw.image, self.image_size, self.cfg.resize_ratio, self.cfg.min_size,
                                            self.cfg.max_image_pixels, self.cfg.max_aspect_ratio)
                except SkipSample as skip:
                    reason = skip.reason
                except Exception as err:  # a dirty corpus finds every corner of every Pillow plugin
                    log.warning("%s: unreadable image (%s: %s)", raw.key, type(err).__name__, err)
                    reason = "unreadable_image"
            yield _Decoded(raw.key, pixels, raw.caption, raw.attrs, raw.class_id, reason, raw.caption_truncated)


def _collate(items: list[_Decoded]) -> dict:
    good = [item for item in items if item.skip_reason is None]
    return {
        "good": [dataclasses.replace(item, pixels=None) for item in good],
        "pixels": torch.from_numpy(np.stack([item.pixels for item in good])) if good else None,
        "skipped": [(item.key, item.skip_reason) for item in items if item.skip_reason is not None],
        "captions_truncated": sum(item.caption_truncated for item in good),
    }


def _finished(folder: Path, expected_meta: dict) -> bool:
    """True when ``folder`` holds a COMPLETE part made with the same settings; refuses foreign parts."""
    if not (folder / COMPLETE_FILE).is_file():
        return False
    found = {k: v for k, v in read_meta(folder).items() if k != "num_samples"}
    if found != expected_meta:
        differ = sorted(k for k in set(found) | set(expected_meta) if found.get(k) != expected_meta.get(k))
        raise ShardMismatchError(
            f"{folder} is complete but was made with other settings ({', '.join(differ)} differ); "
            "delete it or choose another --output"
        )
    return True


def pretokenize_part(cfg: PretokenizeConfig, output: str | Path, image_tokenizer, text_tokenizer,
                     split: str = "train", shard_index: int = 0, num_shards: int = 1,
                     device: str | torch.device = "cpu", overwrite: bool = False) -> dict:
    """Write part ``shard_index`` of ``num_shards`` of ``split`` under ``output``; returns its stats.

    Raises OutputError (one line) when ``output`` cannot be written or holds another dataset (see
    :func:`prepare_output`; ``overwrite`` replaces it).
    """
    folder = part_dir(output, shard_index, num_shards)
    if storage.is_remote(output):
        shutil.rmtree(folder, ignore_errors=True)
        _mirror(str(output), (META_FILE, "index.json"))  # what prepare_output judges
        _mirror(str(output), _MARKERS, folder.name)  # a part finished by an earlier run
    if image_tokenizer.image_size != cfg.data.image_size:
        raise ConfigError(
            f"data.image_size={cfg.data.image_size} but the image tokenizer encodes "
            f"{image_tokenizer.image_size}px images: set data.image_size={image_tokenizer.image_size}"
        )
    refs = part_slice(list_inputs(cfg.data, split), shard_index, num_shards)
    expected = tokenizer_meta(image_tokenizer, text_tokenizer) | source_meta(cfg.data, split)
    try:
        return _run_part(cfg, str(output), folder, refs, expected, image_tokenizer, text_tokenizer, split,
                         shard_index, num_shards, device, overwrite)
    except OSError as err:
        message = describe_os_error(err, fallback_path=folder)
        if message is None:
            raise
        raise OutputError(f"cannot write {message}") from None


def _run_part(cfg: PretokenizeConfig, output: str, folder: Path, refs, expected: dict, image_tokenizer,
              text_tokenizer, split: str, shard_index: int, num_shards: int, device, overwrite: bool) -> dict:
    prepare_output(folder.parent, expected, overwrite)
    if _finished(folder, expected):
        log.info("%s is complete, skipping", folder)
        return read_stats(folder)
    if folder.exists():  # an interrupted run: its shards cannot be trusted
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    workers = cfg.data.decode_workers
    image_tokenizer = image_tokenizer.to(device).eval()
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        # Leave the decoding workers their cores: oversubscribed OpenMP threads spin and run ~20x slower.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, min(threads, cores - workers)))
    try:
        remote = storage.join(output, folder.name) if storage.is_remote(output) else None
        stats = _write_part(cfg, folder, remote, refs, split, image_tokenizer, text_tokenizer, device, shard_index,
                            num_shards)
    finally:
        torch.set_num_threads(threads)
    folder.mkdir(parents=True, exist_ok=True)  # a remote writer removes its local folder when done
    write_json(folder / META_FILE, expected | {"num_samples": stats["written"]})
    write_json(folder / STATS_FILE, stats)
    (folder / COMPLETE_FILE).write_text(f"{stats['written']}\n")  # last: the part is now trusted
    _publish(output, folder, _MARKERS[1:] + _MARKERS[:1])
    log.info("%s: wrote %d samples, skipped %s, %.1f images/s", folder, stats["written"], stats["skipped"],
             stats["images_per_s"])
    return stats


def _write_part(cfg: PretokenizeConfig, folder: Path, remote: str | None, refs, split: str, image_tokenizer,
                text_tokenizer, device, shard_index: int, num_shards: int) -> dict:
    stream = _DecodeStream(cfg.data, refs, split, image_tokenizer.image_size)
    workers = cfg.data.decode_workers
    loader = DataLoader(stream, batch_size=cfg.data.encode_batch_size, num_workers=workers, collate_fn=_collate,
                        prefetch_factor=4 if workers else None)
    skipped: Counter = Counter()
    written = truncated = 0
    start = time.perf_counter()
    total = len(refs) if resolve_source(cfg.data) != "webdataset" else None
    bar = progress(total=total, unit="img", desc=f"{split} part {shard_index + 1}/{num_shards}")
    with open_writer(folder, cfg.data.shard_size_limit, remote) as writer:
        for batch in loader:
            for key, reason in batch["skipped"]:
                skipped[reason] += 1
                log.debug("skipped %s: %s", key, reason)
            truncated += batch["captions_truncated"]
            good = batch["good"]
            if good:
                images = uint8_to_tensor(batch["pixels"]).to(device, non_blocking=True)
                codes = flatten_codes(image_tokenizer.encode(images)).cpu().numpy().astype(np.uint16)
                text_ids = (text_tokenizer.encode([item.caption for item in good]) if text_tokenizer is not None
                            else [NO_TEXT_IDS] * len(good))
                for item, item_codes, item_text in zip(good, codes, text_ids):
                    writer.write(sample_record(item_codes, item_text, item.caption, item.key, item.class_id,
                                               item.attrs))
                written += len(good)
            bar.update(len(good) + len(batch["skipped"]))
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "written": written,
        "skipped": dict(sorted(skipped.items())),
        CAPTION_TRUNCATED: truncated,  # written, with the caption cut to data.max_caption_bytes
        "seconds": round(seconds, 3),
        "images_per_s": round(written / seconds, 2) if seconds > 0 else 0.0,
        "device": str(device),
        "decode_workers": workers,
        "encode_threads": torch.get_num_threads(),
        "encode_batch_size": cfg.data.encode_batch_size,
    }


def read_stats(folder: str | Path) -> dict:
    return json.loads((Path(folder) / STATS_FILE).read_text())


def merge_parts(output: str | Path, num_shards: int) -> dict:
    """Join the ``num_shards`` complete parts under ``output`` into one index.json + meta.json + stats.json."""
    from streaming.base.util import merge_index

    remote = str(output) if storage.is_remote(output) else None
    root = local_root(output)
    parts = [part_dir(output, i, num_shards) for i in range(num_shards)]
    if remote:
        for part in parts:
            shutil.rmtree(part, ignore_errors=True)
            _mirror(remote, _MARKERS, part.name)
    missing = [p.name for p in parts if not (p / COMPLETE_FILE).is_file()]
    if missing:
        raise RuntimeError(
            f"cannot merge {output}: {len(missing)} of {num_shards} parts are not complete ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); run them first (same command with --shard-index)"
        )
    metas = [read_meta(p) for p in parts]
    base = {k: v for k, v in metas[0].items() if k != "num_samples"}
    for part, meta in zip(parts[1:], metas[1:]):
        if {k: v for k, v in meta.items() if k != "num_samples"} != base:
            raise ShardMismatchError(f"{part} was made with other settings than {parts[0]}; cannot merge them")
    for name in (COMPLETE_FILE, "index.json"):
        (root / name).unlink(missing_ok=True)
    logging.disable(logging.WARNING)  # merge_index warns about its own temp folder on every call
    try:
        if remote:  # reads the parts' index.json from the store, uploads the merged one
            merge_index([storage.join(remote, p.name, "index.json") for p in parts], (str(root), remote))
        else:
            merge_index([str(p / "index.json") for p in parts], str(root))
    finally:
        logging.disable(logging.NOTSET)
    part_stats = [read_stats(p) for p in parts]
    skipped: Counter = Counter()
    for s in part_stats:
        skipped.update(s["skipped"])
    stats = {
        "written": sum(s["written"] for s in part_stats),
        "skipped": dict(sorted(skipped.items())),
        CAPTION_TRUNCATED: sum(s.get(CAPTION_TRUNCATED, 0) for s in part_stats),
        "parts": num_shards,
        # Parts may run in parallel: the throughput of the whole is the sum of the parts'.
        "images_per_s": round(sum(s["images_per_s"] for s in part_stats), 2),
        "part_images_per_s": [s["images_per_s"] for s in part_stats],
    }
    write_json(root / META_FILE, base | {"num_samples": stats["written"]})
    write_json(root / STATS_FILE, stats)
    (root / COMPLETE_FILE).write_text(f"{stats['written']}\n")
    _publish(output, root, (META_FILE, STATS_FILE, COMPLETE_FILE))
    return stats
