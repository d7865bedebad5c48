import dataclasses
import os
import time
from multiprocessing import shared_memory

import pytest
import torch
from streaming import StreamingDataset

from srdd_scale.data.config import DataConfig
from srdd_scale.data.loader import build_dataloader, release_stale_shared_memory
from srdd_scale.data.mds import CorruptShardError, ShardMismatchError, check_meta, tokenizer_meta


def _cfg(root) -> DataConfig:
    return DataConfig(train_path=str(root / "train"), heldout_path=str(root / "heldout"), num_workers=0)


def _all(loader) -> list[dict]:
    return [batch for batch in loader]


def test_batches_are_tensors_matching_the_shards(shapes_shards, image_tokenizer, text_tokenizer):
    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    loader = build_dataloader(_cfg(shapes_shards), "heldout", batch_size=4, seed=0, expected_meta=expected)
    batches = _all(loader)
    assert len(batches) == 2
    reference = StreamingDataset(local=str(shapes_shards / "heldout"), shuffle=False)
    rows = {tuple(reference[i]["codes"].tolist()): reference[i] for i in range(len(reference))}
    for batch in batches:
        assert set(batch) == {"codes", "text_ids", "text_mask", "class_ids"}
        assert batch["codes"].dtype == torch.long and batch["codes"].shape == (4, image_tokenizer.tokens_per_image)
        assert batch["text_ids"].shape == (4, text_tokenizer.max_length)
        assert batch["text_mask"].dtype == torch.bool
        for codes, ids, mask, class_id in zip(batch["codes"], batch["text_ids"], batch["text_mask"],
                                              batch["class_ids"]):
            row = rows[tuple(codes.tolist())]
            assert ids[mask].tolist() == row["text_ids"].tolist()
            assert (ids[~mask] == text_tokenizer.pad_id).all()
            assert mask.tolist() == sorted(mask.tolist(), reverse=True)  # right padding
            assert int(class_id) == int(row["class_id"])


def test_shuffle_is_seeded(shapes_shards, image_tokenizer, text_tokenizer):
    expected = tokenizer_meta(image_tokenizer, text_tokenizer)

    def order(seed, workers=0):
        loader = build_dataloader(_cfg(shapes_shards), "train", batch_size=4, seed=seed, expected_meta=expected,
                                  num_workers=workers)
        return [tuple(row.tolist()) for batch in loader for row in batch["codes"]]

    first, again, other = order(1), order(1, workers=2), order(2)
    assert first == again  # also with worker processes
    assert first != other and sorted(first) == sorted(other)


def test_state_dict_resumes_exactly(shapes_shards, image_tokenizer, text_tokenizer):
    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    cfg = _cfg(shapes_shards)
    full = _all(build_dataloader(cfg, "train", batch_size=4, seed=5, expected_meta=expected))
    loader = build_dataloader(cfg, "train", batch_size=4, seed=5, expected_meta=expected)
    seen = []
    for batch in loader:
        seen.append(batch)
        if len(seen) == 2:
            state = loader.state_dict()
            break
    del loader
    resumed = build_dataloader(cfg, "train", batch_size=4, seed=5, expected_meta=expected)
    resumed.load_state_dict(state)
    rest = _all(resumed)
    assert len(seen) + len(rest) == len(full) == 6
    for got, want in zip(seen + rest, full):
        assert torch.equal(got["codes"], want["codes"]) and torch.equal(got["text_ids"], want["text_ids"])


def test_cache_dir_copies_shards_and_reads_the_same_batches(tmp_path, shapes_shards, image_tokenizer,
                                                           text_tokenizer):
    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    direct = _all(build_dataloader(_cfg(shapes_shards), "train", 4, seed=3, expected_meta=expected))
    cached_cfg = dataclasses.replace(_cfg(shapes_shards), cache_dir=str(tmp_path / "cache"))
    cached = _all(build_dataloader(cached_cfg, "train", 4, seed=3, expected_meta=expected))
    assert [b["codes"].tolist() for b in cached] == [b["codes"].tolist() for b in direct]
    (copy,) = list((tmp_path / "cache").iterdir())
    assert (copy / "meta.json").is_file() and list(copy.rglob("shard.*.mds"))


def test_foreign_tokenizer_shards_are_refused(shapes_shards, image_tokenizer, other_image_tokenizer,
                                              text_tokenizer):
    other = other_image_tokenizer
    expected = tokenizer_meta(other, text_tokenizer)
    with pytest.raises(ShardMismatchError) as err:
        build_dataloader(_cfg(shapes_shards), "train", batch_size=4, seed=0, expected_meta=expected)
    message = str(err.value)
    assert str(shapes_shards / "train" / "meta.json") in message
    assert f"tokenizer_identity = '{image_tokenizer.identity()}', expected '{other.identity()}'" in message
    with pytest.raises(ShardMismatchError, match=r"patch_nums = \[1, 2, 4, 8\], expected \(1, 2, 8\)"):
        check_meta(shapes_shards / "train", {"patch_nums": (1, 2, 8)})


def test_missing_folder_and_meta_are_clear_errors(tmp_path, shapes_shards):
    with pytest.raises(FileNotFoundError, match="no index.json.*tools/pretokenize.py"):
        build_dataloader(DataConfig(train_path=str(tmp_path / "nothing")), "train", 2, 0, {})
    with pytest.raises(ShardMismatchError, match="no meta.json"):
        check_meta(tmp_path, {"patch_nums": [1]})


def test_stale_shared_memory_is_released_live_is_kept():
    stale = shared_memory.SharedMemory(name="999998_srdd_test", create=True, size=16)
    stale.close()  # unmapped and not unlinked: what a SIGKILLed job leaves behind
    live = shared_memory.SharedMemory(name="999997_srdd_test", create=True, size=16)
    try:
        released = release_stale_shared_memory()
        assert "999998" in released and "999997" not in released
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name="999998_srdd_test")
        live.buf[0] = 7
    finally:
        live.close()
        live.unlink()


def _copy(shards, tmp_path):
    import shutil

    target = tmp_path / "copy"
    # Without the raw files that earlier reads decompressed next to the zstd shards: as pretokenize left them.
    shutil.copytree(shards / "train", target / "train", ignore=shutil.ignore_patterns("shard.*.mds"))
    return target, sorted((target / "train").rglob("shard.*.mds.zstd"))


def test_missing_truncated_and_edited_shards_are_named(tmp_path, shapes_shards, image_tokenizer, text_tokenizer):
    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    root, shards = _copy(shapes_shards, tmp_path)
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[:-3])
    with pytest.raises(CorruptShardError, match=rf"{shards[0]}: {len(data) - 3} bytes, .*index.json says {len(data)}"):
        build_dataloader(_cfg(root), "train", 4, 0, expected)
    edited = bytearray(data)
    edited[len(data) // 2] ^= 0xFF  # same size: only the hash sees it
    shards[0].write_bytes(bytes(edited))
    hashed = dataclasses.replace(_cfg(root), verify_shards="hash")
    with pytest.raises(CorruptShardError, match=rf"{shards[0]}: xxh64 differs"):
        build_dataloader(hashed, "train", 4, 0, expected)
    shards[0].write_bytes(data)
    assert len(_all(build_dataloader(hashed, "train", 4, 0, expected))) == 6
    shards[0].unlink()
    with pytest.raises(CorruptShardError, match=rf"{shards[0]}: listed in .*index.json but missing"):
        build_dataloader(_cfg(root), "train", 4, 0, expected)


def test_out_of_vocabulary_codes_are_refused_at_collate(tmp_path, shapes_shards, image_tokenizer, text_tokenizer):
    import json
    import shutil

    import numpy as np

    from srdd_scale.data.mds import open_writer, sample_record

    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    folder = tmp_path / "train"
    with open_writer(folder, 1 << 20) as writer:
        for i in range(4):
            codes = np.zeros(image_tokenizer.tokens_per_image, np.uint16)
            codes[5] = image_tokenizer.vocab_size if i % 2 else 0  # samples 1 and 3 hold a code the codebook lacks
            writer.write(sample_record(codes, np.array([3, 1], np.int32), "c", f"sample{i}", -1, {}))
    shutil.copy(shapes_shards / "train" / "meta.json", folder / "meta.json")
    assert json.loads((folder / "meta.json").read_text())["vocab_size"] == image_tokenizer.vocab_size
    loader = build_dataloader(_cfg(tmp_path), "train", 2, 0, expected)
    vocab = image_tokenizer.vocab_size
    with pytest.raises(CorruptShardError,
                       match=rf"{folder}: sample 'sample[13]' holds codes id {vocab}, outside \[0, {vocab}\)"):
        _all(loader)


READ_ONLY_RUN = """
import json, os, sys
from srdd_scale.data.config import DataConfig
from srdd_scale.data.loader import build_dataloader
import streaming, streaming.base.storage.download, xxhash
from multiprocessing import resource_tracker
resource_tracker.ensure_running()  # its helper process execs the interpreter, which nobody may not
if os.geteuid() == 0:  # root writes anywhere: become nobody once the interpreter (under /root) has loaded
    os.setgid(65534)
    os.setuid(65534)
cfg = DataConfig(train_path=sys.argv[1], num_workers=0)
batches = list(build_dataloader(cfg, "train", 4, 0, json.loads(sys.argv[2])))
print(sum(len(b["codes"]) for b in batches))
"""


def test_read_only_dataset_trains_through_a_local_cache(tmp_path, shapes_shards, image_tokenizer, text_tokenizer):
    """As a user who may not write to the dataset folder (root may write anywhere, so run as nobody)."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    # Outside pytest's basetemp: a concurrent pytest session resets /tmp/pytest-of-root to 0700.
    work = Path(tempfile.mkdtemp(prefix="srdd-ro-", dir="/tmp"))
    os.chmod(work, 0o777)
    root, _ = _copy(shapes_shards, work / "dataset")
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    expected = json.dumps(tokenizer_meta(image_tokenizer, text_tokenizer))
    env = dict(os.environ, TMPDIR=str(work), HOME=str(work), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-c", READ_ONLY_RUN, str(root / "train"), expected], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) == 24
    assert not list((root / "train").rglob("shard.*.mds"))  # nothing was decompressed next to the shards
    shutil.rmtree(work)


CONCURRENT_START = """
import json, sys, time
from pathlib import Path
from srdd_scale.data.config import DataConfig
from srdd_scale.data.loader import build_dataloader
shards, expected, folder = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
index, count = sys.argv[4], int(sys.argv[5])
(folder / f"ready{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
loader = build_dataloader(DataConfig(heldout_path=shards, num_workers=0), "heldout", 4, 0, expected)
(folder / f"built{index}").touch()
while len(list(folder.glob("built*"))) < count:  # every reader's dataset alive at once
    time.sleep(0.005)
rows = sum(len(batch["codes"]) for batch in loader)
print(loader.dataset._shm_prefix_int, rows, flush=True)
"""


def _start_readers(count: int, shards, expected: dict, folder):
    """`count` processes that each build a loader over the heldout split once `folder / go` exists."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_START, str(shards / "heldout"), json.dumps(expected),
                               str(folder), str(i), str(count)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(count)]
    deadline = time.monotonic() + 120
    while not all((folder / f"ready{i}").exists() for i in range(count)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a reader failed to start"
        time.sleep(0.01)
    return procs


def _finish(procs) -> list[tuple[int, int]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        prefix, rows = out.split()
        results.append((int(prefix), int(rows)))
    return results


def test_jobs_starting_together_on_one_node_register_distinct_shared_memory(tmp_path, shapes_shards, image_tokenizer,
                                                                            text_tokenizer):
    """streaming picks a free /dev/shm prefix and then creates it; without the node lock two jobs released at the
    same instant could pick the same one, and one died with FileExistsError (seen with two SLURM array tasks)."""
    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    for attempt in range(3):
        folder = tmp_path / f"start{attempt}"
        folder.mkdir()
        procs = _start_readers(3, shapes_shards, expected, folder)
        (folder / "go").touch()
        results = _finish(procs)
        assert [rows for _, rows in results] == [8, 8, 8]
        assert len({prefix for prefix, _ in results}) == 3


def test_a_loader_registers_its_shared_memory_only_under_the_node_lock(tmp_path, shapes_shards, image_tokenizer,
                                                                       text_tokenizer):
    from srdd_scale.data.loader import node_shm_lock

    with node_shm_lock():
        procs = _start_readers(1, shapes_shards, tokenizer_meta(image_tokenizer, text_tokenizer), tmp_path)
        (tmp_path / "go").touch()
        time.sleep(2.0)  # long enough for an unlocked build (~0.1 s): the reader must still be waiting
        assert procs[0].poll() is None
    assert _finish(procs)[0][1] == 8


def test_node_lock_file_is_readable_by_every_user_whatever_the_umask(tmp_path, monkeypatch):
    """Another user's job on the node must be able to open (read-only) and flock the file this job created."""
    import os

    from srdd_scale.data import loader

    monkeypatch.setattr(loader, "_SHM_DIR", tmp_path)
    old = os.umask(0o077)
    try:
        with loader.node_shm_lock():
            pass
    finally:
        os.umask(old)
    assert (tmp_path / loader._SHM_LOCK_NAME).stat().st_mode & 0o777 == 0o444


UNOPENABLE_LOCK = """
import logging, os, sys
from srdd_scale.data import loader
from pathlib import Path
logging.basicConfig(level=logging.WARNING)
os.setgid(65534)
os.setuid(65534)  # nobody, who may not read root's 0600 lock file
loader._SHM_DIR = Path(sys.argv[1])
with loader.node_shm_lock():
    print("registered", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another user")
def test_a_lock_file_this_user_cannot_open_warns_and_runs_unlocked():
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from srdd_scale.data import loader

    shm = Path(tempfile.mkdtemp(prefix="srdd-shm-", dir="/tmp"))  # outside pytest's 0700 basetemp, as /dev/shm
    os.chmod(shm, 0o1777)
    (shm / loader._SHM_LOCK_NAME).touch(mode=0o600)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-c", UNOPENABLE_LOCK, str(shm)], env=env, capture_output=True,
                          text=True, timeout=120)
    shutil.rmtree(shm)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "registered"
    assert "cannot open the node's shared-memory lock" in proc.stderr and "registering without it" in proc.stderr
