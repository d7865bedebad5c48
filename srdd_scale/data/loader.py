"""Streaming reader for pretokenized MDS shards: seeded shuffle, exact resume, tensors out."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from streaming import StreamingDataset

from srdd_scale.config import ConfigError
from srdd_scale.data.classes import check_class_labels
from srdd_scale.data.config import DataConfig
from srdd_scale.data.mds import META_FILE, CorruptShardError, check_meta, verify_shards
from srdd_scale.text.tokenizer import pad_text_ids
from srdd_scale.utils.dist import dist_env_from_environ

_SHM_DIR = Path("/dev/shm")
_SHM_NAME = re.compile(r"^(\d{6})_")
_SHM_LOCK_NAME = "srdd_scale_shm_registry.lock"
log = logging.getLogger(__name__)


class CollateCodes:
    """Stack samples into tensors; captions are right-padded to a fixed length so shapes never change.

    Codes and caption ids are range-checked here, where the sample's key is still known: an id outside
    the vocabulary would otherwise fail steps later inside an embedding, naming nothing.
    """

    def __init__(self, pad_id: int, text_length: int, vocab_size: int | None = None,
                 text_vocab_size: int | None = None, source: str = ""):
        self.pad_id = pad_id
        self.text_length = text_length
        self.vocab_size, self.text_vocab_size, self.source = vocab_size, text_vocab_size, source

    def _check_range(self, samples: list[dict], column: str, values: np.ndarray, limit: int | None) -> None:
        """``values`` is the batch's ``column``, all samples together (one min/max for the batch)."""
        if limit is None or values.size == 0 or (values.min() >= 0 and values.max() < limit):
            return
        sample = next(s for s in samples if np.asarray(s[column]).size
                      and (np.min(s[column]) < 0 or np.max(s[column]) >= limit))
        bad = int(np.max(sample[column]) if np.max(sample[column]) >= limit else np.min(sample[column]))
        raise CorruptShardError(
            f"{self.source}: sample {sample.get('key', '?')!r} holds {column} id {bad}, outside [0, {limit}) of "
            "meta.json's vocabulary: the shard was edited or is corrupt; re-run tools/pretokenize.py"
        )

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        stacked = np.stack([s["codes"] for s in samples])
        self._check_range(samples, "codes", stacked, self.vocab_size)
        self._check_range(samples, "text_ids", np.concatenate([s["text_ids"] for s in samples]), self.text_vocab_size)
        codes = torch.from_numpy(stacked.astype(np.int64))
        text_ids, text_mask = pad_text_ids([s["text_ids"] for s in samples], self.pad_id, self.text_length)
        class_ids = torch.tensor([int(s["class_id"]) for s in samples], dtype=torch.long)
        return {"codes": codes, "text_ids": text_ids, "text_mask": text_mask, "class_ids": class_ids}


class CheckedStreamingDataset(StreamingDataset):
    """A StreamingDataset whose download failures reach the reader.

    streaming ends an epoch early and silently when a shard's download or checksum fails in its
    background thread (the exception only goes to a log); here that epoch raises CorruptShardError instead.
    """

    def on_exception(self, future) -> None:
        if future.exception() is not None:
            self._thread_error = future.exception()
        super().on_exception(future)

    def __iter__(self):
        yield from super().__iter__()
        error = getattr(self, "_thread_error", None)
        if error is not None or (hasattr(self, "_event") and self._event.is_set()):
            source = self.streams[0].remote or self.streams[0].local
            raise CorruptShardError(f"{source}: reading a shard failed ({type(error).__name__}: {error})")


def _mapped_shm_prefixes() -> set[str]:
    """Prefixes of /dev/shm segments that some live process still maps (read from /proc/*/maps)."""
    live = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process exited, or is not ours to read
            continue
        live.update(re.findall(r"/dev/shm/(\d{6})_", text))
    return live


def _open_lock_file(path: Path) -> int | None:
    """A read-only descriptor of the node's lock file (created world-readable if missing), None if it cannot be
    opened. Opened without O_CREAT when it exists: another user's file in sticky /dev/shm refuses O_CREAT where
    fs.protected_regular is set, and a read-only descriptor is all flock needs."""
    for _ in range(2):
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("%s: cannot open the node's shared-memory lock (%s); registering without it", path, err)
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
            os.fchmod(fd, 0o444)  # the umask may have taken read access from other users
            return fd
        except FileExistsError:  # another process created it just now: open theirs
            continue
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            log.warning("%s: cannot create the node's shared-memory lock (%s); registering without it", path, err)
            return None
    return None


@contextmanager
def node_shm_lock() -> Iterator[None]:
    """Hold this node's lock on streaming's /dev/shm registry (one lock file per node, shared by every job).

    streaming registers a dataset by finding the first free prefix and then creating it; two jobs starting
    together on one node can find the same one, and the second fails with FileExistsError (seen with two SLURM
    array tasks). The lock also keeps a stale-segment sweep from unlinking a segment another job has created
    but not yet mapped. Not reentrant: take it once per process at a time. Where the lock file cannot be opened
    (another user's, a read-only /dev/shm) it warns and runs unlocked, as streaming alone would.
    """
    fd = _open_lock_file(_SHM_DIR / _SHM_LOCK_NAME) if _SHM_DIR.is_dir() else None  # no /dev/shm: not Linux
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def release_stale_shared_memory() -> list[str]:
    """Unlink streaming's /dev/shm segments and temp-dir filelocks that no live process maps.

    A SIGKILLed job leaves them behind (env.md); streaming's own ``clean_stale_shared_memory``
    would also unlink segments of jobs still running on the node, so only unmapped prefixes go.
    Returns the prefixes released.
    """
    if not _SHM_DIR.is_dir():
        return []
    with node_shm_lock():  # never between another job's creating a segment and mapping it
        groups: dict[str, list[Path]] = {}
        for entry in _SHM_DIR.iterdir():
            match = _SHM_NAME.match(entry.name)
            if match:
                groups.setdefault(match.group(1), []).append(entry)
        stale = sorted(set(groups) - _mapped_shm_prefixes())
        tmp = Path(tempfile.gettempdir())
        for prefix in stale:
            for path in groups[prefix] + list(tmp.glob(f"{prefix}_*filelock")):
                try:
                    path.unlink()
                except OSError:
                    pass
    return stale


def split_path(data_cfg: DataConfig, split: str) -> str:
    if split not in ("train", "heldout"):
        raise ConfigError(f"split={split!r}: expected 'train' or 'heldout'")
    path = data_cfg.train_path if split == "train" else data_cfg.heldout_path
    if not path:
        raise ConfigError(f"data.{split}_path is empty: no MDS folder configured for the {split!r} split")
    return path


def _local_and_remote(data_cfg: DataConfig, path: str) -> tuple[str, str | None]:
    """A local folder is read in place, unless ``cache_dir`` is set or the folder is read-only (streaming
    decompresses zstd shards next to them): then it is treated like a remote (e.g. a shared filesystem) and
    copied into a cache folder unique to that path, as remote URIs are."""
    is_uri = "://" in path
    if not is_uri and not (Path(path) / "index.json").is_file():
        raise FileNotFoundError(
            f"{path}: no index.json; write shards there first with `python tools/pretokenize.py --output {path}`"
        )
    remote = is_uri or bool(data_cfg.cache_dir) or not os.access(path, os.W_OK)
    if not remote:
        return path, None
    root = data_cfg.cache_dir or os.path.join(tempfile.gettempdir(), "srdd_scale_mds")
    source = path if "://" in path else str(Path(path).resolve())
    return os.path.join(root, hashlib.sha256(source.encode()).hexdigest()[:16]), source


def _fetch_meta(local: str, remote: str | None) -> None:
    if remote is None:
        return
    from streaming.base.storage.download import CloudDownloader

    os.makedirs(local, exist_ok=True)
    CloudDownloader.direct_download(f"{remote.rstrip('/')}/{META_FILE}", os.path.join(local, META_FILE))


def build_dataloader(data_cfg: DataConfig, split: str, batch_size: int, seed: int, expected_meta: dict,
                     num_workers: int | None = None, model_classes: int = 0):
    """A ``StreamingDataLoader`` over the split's shards, after checking their meta.json.

    ``batch_size`` is per rank; ranks read disjoint samples (streaming reads RANK/WORLD_SIZE).
    The training split is shuffled with ``seed`` and drops its last partial batch; the loader's
    ``state_dict()``/``load_state_dict()`` resume mid-epoch, also on another world size.
    ``model_classes`` > 0 (a class-conditional model) refuses shards without labels or with more classes.
    """
    from streaming import StreamingDataLoader

    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: expected a positive integer")
    path = split_path(data_cfg, split)
    local, remote = _local_and_remote(data_cfg, path)
    _fetch_meta(local, remote)
    meta = check_meta(local, expected_meta)
    check_class_labels(meta, model_classes, local)
    full_hash = data_cfg.verify_shards == "hash"
    env = dist_env_from_environ()
    first_on_node = env.local_rank == 0
    if remote is None or "://" not in remote:  # the shards are on a filesystem here: check them before reading
        verify_shards(remote or local, full_hash=full_hash and first_on_node)
    train = split == "train"
    # The node's first rank registers the dataset's shared memory (its other ranks attach to it) under the node
    # lock, so jobs starting together on one node never pick the same prefix. Only for jobs on one node: the
    # registration runs barriers, and a lock held across a barrier that waits on another node could deadlock two
    # multi-node jobs sharing nodes (each holding one node's lock, waiting on the other's).
    single_node = env.local_world_size == env.world_size
    if first_on_node:
        release_stale_shared_memory()
    with node_shm_lock() if first_on_node and single_node else nullcontext():
        dataset = CheckedStreamingDataset(
            local=local, remote=remote, batch_size=batch_size, shuffle=train and data_cfg.shuffle,
            shuffle_seed=seed, shuffle_block_size=data_cfg.shuffle_block_size or None,
            predownload=data_cfg.predownload or None,
            validate_hash="xxh64" if full_hash and remote is not None else None,  # checked as each shard arrives
        )
    collate = CollateCodes(pad_id=int(meta.get("text_pad_id", 0)), text_length=int(meta.get("max_text_length", 1)),
                           vocab_size=meta.get("vocab_size"), text_vocab_size=meta.get("text_vocab_size"), source=path)
    workers = data_cfg.num_workers if num_workers is None else num_workers
    return StreamingDataLoader(
        dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers, drop_last=train,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
    )
