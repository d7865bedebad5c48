"""Where pretokenize's images and captions come from: synthetic shapes, an image folder, webdataset tars.

Every input becomes a ``RawSample``; an input that cannot be used comes out with ``skip_reason``
set (counted in stats.json) instead of raising, so one bad file never stops a million-image run.
Inputs are split deterministically into ``num_shards`` contiguous parts (SLURM array tasks), and
each part again across decoding workers, without any coordination between processes.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image, UnidentifiedImageError

from srdd_scale.config import ConfigError
from srdd_scale.data import shapes
from srdd_scale.data.classes import folder_class_table, parse_label, webdataset_class_table
from srdd_scale.data.config import DataConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTIONS_FILE = "captions.jsonl"
CAPTION_TRUNCATED = "caption_truncated"  # counted in stats.json; the sample is still written

log = logging.getLogger(__name__)


@dataclass
class RawSample:
    """One input before preprocessing; ``image`` is opened lazily (pixels decode in preprocess)."""

    key: str
    image: Image.Image | None
    caption: str | None
    attrs: dict = field(default_factory=dict)
    class_id: int = -1
    skip_reason: str | None = None
    caption_truncated: bool = False  # the caption was longer than data.max_caption_bytes and was cut


@dataclass(frozen=True)
class FolderItem:
    """An image of a folder source and where its caption is (inline from captions.jsonl, or a sidecar)."""

    key: str
    image_path: str
    caption: str | None = None  # from captions.jsonl
    problem: str | None = None  # a skip reason found while listing (bad jsonl line, duplicate key)
    root: str = ""  # the input folder the image must resolve under (captions.jsonl paths are untrusted)
    class_name: str = ""  # ImageFolder: the image's first folder under the root ("" when it sits in the root)


def resolve_source(cfg: DataConfig) -> str:
    """``auto``: synthetic without an input, webdataset for .tar inputs, else an image folder."""
    if cfg.source != "auto":
        return cfg.source
    if not cfg.input:
        return "synthetic"
    paths = _expand(cfg.input)
    if all(p.is_file() and p.suffix == ".tar" for p in paths):
        return "webdataset"
    if all(p.is_dir() and not (p / CAPTIONS_FILE).is_file() and next(p.glob("*.tar"), None) for p in paths):
        return "webdataset"
    return "folder"


def _expand(spec: str) -> list[Path]:
    """Comma-separated paths/globs -> sorted existing paths; fails at once when nothing matches."""
    found: list[Path] = []
    for part in (s.strip() for s in spec.split(",")):
        if not part:
            continue
        matches = sorted(glob.glob(part)) if glob.has_magic(part) else ([part] if Path(part).exists() else [])
        if not matches:
            raise ConfigError(f"data.input={spec!r}: {part!r} does not exist or matches nothing")
        found.extend(Path(m) for m in matches)
    if not found:
        raise ConfigError(f"data.input={spec!r}: no input path given")
    return found


def _list_folder(root: Path, prefix: str) -> list[FolderItem]:
    captions = root / CAPTIONS_FILE
    if captions.is_file():
        items = []
        with captions.open("rb") as fh:
            for line_no, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                key = f"{prefix}{CAPTIONS_FILE}:{line_no}"
                try:
                    record = json.loads(raw.decode("utf-8"))
                    image = record["image"]
                except UnicodeDecodeError:
                    items.append(FolderItem(key, "", problem="caption_not_utf8"))
                    continue
                except (json.JSONDecodeError, KeyError, TypeError, RecursionError):
                    items.append(FolderItem(key, "", problem="bad_caption_record"))
                    continue
                if not isinstance(image, str) or not image.strip() or "\0" in image:
                    items.append(FolderItem(key, "", problem="bad_caption_record"))
                    continue
                relative = os.path.normpath(image)
                if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
                    items.append(FolderItem(key, "", problem="path_outside_input"))
                    continue
                caption = record.get("caption")
                items.append(FolderItem(f"{prefix}{Path(relative).with_suffix('').as_posix()}", str(root / relative),
                                        caption if isinstance(caption, str) else "", root=str(root),
                                        class_name=_class_dir(relative)))
        return items
    # Not only regular files: a dangling link, a link loop or a FIFO named like an image is listed, so that
    # it is counted under its reason when read instead of vanishing (a link into a folder is not followed).
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
    return [FolderItem(f"{prefix}{p.relative_to(root).with_suffix('').as_posix()}", str(p),
                       class_name=_class_dir(p.relative_to(root))) for p in images]


def _class_dir(relative: str | Path) -> str:
    parts = Path(relative).parts
    return parts[0] if len(parts) > 1 else ""


def class_names(cfg: DataConfig) -> tuple[str, ...] | None:
    """The corpus' class table (id -> name) when ``data.class_labels`` is on, else None (see data/classes.py)."""
    source = resolve_source(cfg)
    if not cfg.class_labels or source == "synthetic":
        return None
    paths = _expand(cfg.input)
    if source == "folder":
        return folder_class_table(paths)
    tars = [t for p in paths for t in (sorted(p.glob("*.tar")) if p.is_dir() else [p])]
    return webdataset_class_table(tars or paths, cfg.num_classes)


def _with_class_caption(caption: str | None, reason: str | None, cfg: DataConfig, names, class_id: int
                        ) -> tuple[str | None, str | None]:
    """The image's own caption, or ``data.class_caption`` made from its class when it has none."""
    if reason in ("missing_caption", "empty_caption") and cfg.class_caption and class_id >= 0:
        return cfg.class_caption.format(name=names[class_id]), None
    return caption, reason


def _mark_duplicates(items: list[FolderItem]) -> list[FolderItem]:
    """Items whose key was seen before become ``duplicate_key`` skips; the first one is kept."""
    seen: set[str] = set()
    marked = []
    for item in items:
        if item.problem is None and item.key in seen:
            item = FolderItem(item.key, "", problem="duplicate_key")
        seen.add(item.key)
        marked.append(item)
    return marked


def list_inputs(cfg: DataConfig, split: str = "train") -> Sequence:
    """Everything the source will read, in a fixed order: indices, folder items, or tar paths."""
    source = resolve_source(cfg)
    if source == "synthetic":
        if split not in shapes.SPLITS:
            raise ConfigError(f"split={split!r}: expected one of {shapes.SPLITS}")
        count = cfg.synthetic_train_samples if split == "train" else cfg.synthetic_heldout_samples
        return range(count)
    if not cfg.input:
        raise ConfigError(f"data.source={source!r} needs data.input (a folder, .tar file, folder of .tar or glob)")
    paths = _expand(cfg.input)
    if source == "webdataset":
        tars: list[Path] = []
        for path in paths:
            tars.extend(sorted(path.glob("*.tar")) if path.is_dir() else [path])
        if not tars:
            raise ConfigError(f"data.input={cfg.input!r}: no .tar shards found")
        return [str(t) for t in tars]
    not_dirs = [str(p) for p in paths if not p.is_dir()]
    if not_dirs:
        raise ConfigError(f"data.input={cfg.input!r}: {not_dirs[0]!r} is not a folder (data.source=folder)")
    items: list[FolderItem] = []
    for root in paths:
        items.extend(_list_folder(root, f"{root.name}/" if len(paths) > 1 else ""))
    items = _mark_duplicates(items)
    if not items:
        raise ConfigError(
            f"data.input={cfg.input!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) and no {CAPTIONS_FILE} found"
        )
    return items


def part_slice(items: Sequence, shard_index: int, num_shards: int) -> Sequence:
    """Contiguous, balanced part ``shard_index`` of ``num_shards`` (part sizes differ by at most one)."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"shard_index={shard_index}, num_shards={num_shards}: expected 0 <= shard_index < num_shards")
    start = len(items) * shard_index // num_shards
    stop = len(items) * (shard_index + 1) // num_shards
    return items[start:stop]


def decode_caption(raw: bytes, suffix: str) -> tuple[str | None, str | None]:
    """Caption text from a sidecar's bytes -> (caption, skip_reason)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "caption_not_utf8"
    if suffix == "json":
        try:
            text = json.loads(text).get("caption")
        except (json.JSONDecodeError, AttributeError, RecursionError):
            return None, "bad_caption_record"
        if not isinstance(text, str):
            return None, "missing_caption"
    text = text.strip()
    return (text, None) if text else (None, "empty_caption")


def cap_caption(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (never inside a character) -> (text, was_cut).

    Captions are cut, not skipped: the text tokenizer keeps only its first tokens anyway, and the
    image is still worth its codes. Cut captions are counted as ``caption_truncated``.
    """
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text, False
    return raw[:max_bytes].decode("utf-8", errors="ignore").rstrip(), True


def regular_file_problem(path: str, root: str = "", max_bytes: int | None = None) -> str | None:
    """Why ``path`` must not be opened (a skip reason), or None for a regular file of acceptable size.

    Opening a FIFO or a device blocks forever, so nothing is opened before ``stat`` says it is a file;
    with ``root``, the file (links resolved) must also lie under it.
    """
    try:
        info = os.stat(path)  # follows links: a dangling link or a loop raises here
    except FileNotFoundError:
        return "broken_link" if os.path.islink(path) else "missing_image"
    except OSError:
        return "broken_link" if os.path.islink(path) else "unreadable_image"
    if not stat.S_ISREG(info.st_mode):
        return "not_a_regular_file"
    if root:
        real_root = os.path.realpath(root)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            return "path_outside_input"
    if max_bytes is not None and info.st_size > max_bytes:
        return "file_too_large"
    return None


def open_image(source: str | bytes) -> tuple[Image.Image | None, str | None]:
    """Open (header only) a path or in-memory bytes -> (image, skip_reason)."""
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source), None
    except FileNotFoundError:
        return None, "missing_image"
    except UnidentifiedImageError:
        return None, "not_an_image"
    except Image.DecompressionBombError:
        return None, "decompression_bomb"
    except OSError as err:  # a file cut off inside its header fails here, before any pixel is decoded
        return None, "truncated_image" if "truncat" in str(err).lower() else "unreadable_image"
    except (ValueError, SyntaxError):
        return None, "unreadable_image"


def _folder_sample(cfg: DataConfig, item: FolderItem, names: tuple[str, ...] | None = None) -> RawSample:
    if item.problem:
        return RawSample(item.key, None, None, skip_reason=item.problem)
    class_id = -1
    if names is not None:
        if not item.class_name:
            return RawSample(item.key, None, None, skip_reason="missing_label")
        if item.class_name not in names:
            return RawSample(item.key, None, None, skip_reason="unknown_class")
        class_id = names.index(item.class_name)
    caption, reason = item.caption, None
    if not cfg.captions:
        caption = ""
    elif caption is None:  # sidecar mode: KEY.txt preferred, else KEY.json (img2dataset writes both)
        stem = Path(item.image_path).with_suffix("")
        sidecars = [s for s in ("txt", "json") if stem.with_suffix(f".{s}").is_file()]
        if sidecars:
            sidecar = stem.with_suffix(f".{sidecars[0]}")
            if regular_file_problem(str(sidecar), max_bytes=cfg.max_file_bytes) == "file_too_large":
                return RawSample(item.key, None, None, skip_reason="file_too_large")
            caption, reason = decode_caption(sidecar.read_bytes(), sidecars[0])
        else:
            reason = "missing_caption"
    else:
        caption = caption.strip()
        reason = None if caption else "empty_caption"
    caption, reason = _with_class_caption(caption, reason, cfg, names, class_id)
    reason = reason or regular_file_problem(item.image_path, item.root, cfg.max_file_bytes)
    if reason:
        return RawSample(item.key, None, None, skip_reason=reason)
    caption, cut = cap_caption(caption, cfg.max_caption_bytes)
    image, reason = open_image(item.image_path)
    return RawSample(item.key, image, caption, class_id=class_id, skip_reason=reason, caption_truncated=cut)


def _tar_label(files: dict[str, bytes], names: tuple[str, ...]) -> tuple[int, str | None]:
    """Class id from KEY.cls (an id or a name) or KEY.json's "label" -> (id, skip_reason)."""
    if "cls" in files:
        try:
            return parse_label(files["cls"].decode("utf-8"), names)
        except UnicodeDecodeError:
            return -1, "bad_label"
    if "json" in files:
        try:
            record = json.loads(files["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return -1, "bad_label"
        if isinstance(record, dict) and "label" in record:
            return parse_label(record["label"], names)
    return -1, "missing_label"


def _isolated(key: str, make) -> RawSample:
    """``make()``, or a skip counted as ``unreadable_record`` if it raises: no record may stop a part."""
    try:
        return make()
    except Exception as err:  # noqa: BLE001  (a hostile corpus finds the cases nobody listed)
        log.warning("%s: unreadable record (%s: %s)", key, type(err).__name__, str(err)[:200])
        return RawSample(key, None, None, skip_reason="unreadable_record")


def _tar_members(path: str) -> Iterator[tuple[str, str, tarfile.TarFile, tarfile.TarInfo]]:
    """(key, extension, tar, member) in archive order, streaming (``r|*``: no random access needed).

    Folders are passed over; links, FIFOs and devices come out, so that their sample is counted.
    """
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if member.isdir():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if dot:
                yield (f"{directory}/{stem}" if directory else stem), ext.lower(), tar, member


def _tar_samples(cfg: DataConfig, path: str, first_index: int, worker: int, num_workers: int,
                 names: tuple[str, ...] | None = None) -> Iterator[tuple[int, RawSample | None]]:
    """(running sample index, sample) for one tar; samples of other workers come out as None (not read).

    A key seen before in the same tar (its members not adjacent) is a ``duplicate_key`` skip; a member
    larger than ``data.max_file_bytes`` (its header says how large) is never read.
    """
    tar_name = Path(path).name.removesuffix(".tar")
    index = first_index - 1
    key, files, problem = None, {}, None
    seen: set[str] = set()

    def finish():
        if key is None or index % num_workers != worker:
            return None
        full_key = f"{tar_name}/{key}"
        if problem:
            return RawSample(full_key, None, None, skip_reason=problem)
        caption_ext = next((e for e in ("txt", "json") if e in files), None)
        image_ext = next((e for e in files if f".{e}" in IMAGE_EXTENSIONS), None)
        if image_ext is None:
            return RawSample(full_key, None, None, skip_reason="missing_image")
        class_id = -1
        if names is not None:
            class_id, reason = _tar_label(files, names)
            if reason:
                return RawSample(full_key, None, None, skip_reason=reason)
        if not cfg.captions:
            caption, reason = "", None
        elif caption_ext is None:
            caption, reason = None, "missing_caption"
        else:
            caption, reason = decode_caption(files[caption_ext], caption_ext)
        caption, reason = _with_class_caption(caption, reason, cfg, names, class_id)
        if reason:
            return RawSample(full_key, None, None, skip_reason=reason)
        caption, cut = cap_caption(caption, cfg.max_caption_bytes)
        image, reason = open_image(files[image_ext])
        return RawSample(full_key, image, caption, class_id=class_id, skip_reason=reason, caption_truncated=cut)

    try:
        for member_key, ext, tar, member in _tar_members(path):
            if member_key != key:
                if key is not None:
                    yield index, _isolated(f"{tar_name}/{key}", finish)
                key, files = member_key, {}
                problem = "duplicate_key" if key in seen else None
                seen.add(key)
                index += 1
            if index % num_workers == worker and problem is None:
                if not member.isfile():
                    problem, files = "not_a_regular_file", {}
                elif member.size > cfg.max_file_bytes:
                    problem, files = "file_too_large", {}
                else:
                    files[ext] = tar.extractfile(member).read()
        if key is not None:
            yield index, _isolated(f"{tar_name}/{key}", finish)
    except (tarfile.TarError, OSError, EOFError) as err:
        # A cut-off or corrupt shard: what was read so far stands, the rest is counted once.
        if worker == 0:
            yield index + 1, RawSample(f"{tar_name}/<{type(err).__name__}>", None, None, skip_reason="unreadable_tar")


def iter_refs(cfg: DataConfig, refs: Sequence, split: str = "train", worker: int = 0, num_workers: int = 1
              ) -> Iterator[RawSample]:
    """Samples of ``refs`` (from :func:`list_inputs`) that belong to ``worker`` of ``num_workers``."""
    source = resolve_source(cfg)
    if source == "synthetic":
        for index in refs[worker::num_workers]:
            sample = shapes.generate_shape_sample(index, split, cfg.seed, cfg.image_size)
            yield RawSample(f"{split}/{index:08d}", sample.image, sample.caption, sample.attrs,
                            shapes.class_id(sample.attrs))
    elif source == "folder":
        names = class_names(cfg)
        for item in refs[worker::num_workers]:
            yield _isolated(item.key, lambda item=item: _folder_sample(cfg, item, names))
    else:
        # Every worker streams every tar of the part (tar has no index) but decodes only its own samples.
        index, names = 0, class_names(cfg)
        for path in refs:
            # the running index carries over from one tar to the next
            for index, sample in _tar_samples(cfg, path, index, worker, num_workers, names):  # noqa: B007, B020
                if sample is not None:
                    yield sample
            index += 1


def iter_samples(cfg: DataConfig, shard_index: int = 0, num_shards: int = 1, split: str = "train",
                 worker: int = 0, num_workers: int = 1) -> Iterator[RawSample]:
    """Samples of part ``shard_index`` of ``num_shards`` (and of one decoding worker within it)."""
    refs = part_slice(list_inputs(cfg, split), shard_index, num_shards)
    return iter_refs(cfg, refs, split, worker, num_workers)


def iter_captions(cfg: DataConfig, split: str = "train", limit: int | None = None) -> Iterator[str]:
    """Usable captions of the whole corpus in order (for training a caption tokenizer), at most ``limit``."""
    count = 0
    for sample in iter_samples(cfg, split=split):
        if limit is not None and count >= limit:
            return
        if sample.caption:
            count += 1
            yield sample.caption
