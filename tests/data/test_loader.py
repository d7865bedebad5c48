import dataclasses
from multiprocessing import shared_memory

import pytest
import torch
from streaming import StreamingDataset

from srdd_scale.data.config import DataConfig
from srdd_scale.data.loader import build_dataloader, release_stale_shared_memory
from srdd_scale.data.mds import ShardMismatchError, check_meta, tokenizer_meta


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
