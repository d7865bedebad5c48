"""Pretokenize into and stream out of a real S3 API (moto's standalone server, started by ``s3_server``)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from srdd_scale.data.config import DataConfig
from srdd_scale.data.loader import build_dataloader
from srdd_scale.data.mds import tokenizer_meta
from srdd_scale.data.pretokenize import merge_parts, pretokenize_part


def _codes_by_caption(loader) -> dict[tuple, list]:
    rows = {}
    for batch in loader:
        for codes, ids in zip(batch["codes"].tolist(), batch["text_ids"].tolist()):
            rows[tuple(ids)] = codes
    return rows


def test_pretokenize_to_s3_in_parts_then_stream_it_back(s3_server, tmp_path, shapes_shards, shapes_config,
                                                         image_tokenizer, text_tokenizer):
    uri = f"s3://{s3_server.bucket()}/shapes/train"
    cfg = shapes_config()
    stats = [pretokenize_part(cfg, uri, image_tokenizer, text_tokenizer, "train", i, 2) for i in range(2)]
    merged = merge_parts(uri, 2)
    assert merged["written"] == sum(s["written"] for s in stats) == 24
    keys = s3_server.keys(uri)
    for name in ("index.json", "meta.json", "stats.json", "COMPLETE", "part-00000-of-00002/COMPLETE",
                 "part-00001-of-00002/index.json"):
        assert name in keys, keys
    assert any(k.startswith("part-00001-of-00002/shard.") and k.endswith(".mds.zstd") for k in keys)
    # A second run finds the remote parts complete and writes nothing.
    before = s3_server.client.head_object(Bucket=uri.split("/")[2], Key="shapes/train/part-00000-of-00002/COMPLETE")
    assert pretokenize_part(cfg, uri, image_tokenizer, text_tokenizer, "train", 0, 2) == stats[0]
    after = s3_server.client.head_object(Bucket=uri.split("/")[2], Key="shapes/train/part-00000-of-00002/COMPLETE")
    assert before["LastModified"] == after["LastModified"]

    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    remote_cfg = DataConfig(train_path=uri, num_workers=0, cache_dir=str(tmp_path / "cache"), verify_shards="hash")
    local_cfg = DataConfig(train_path=str(shapes_shards / "train"), num_workers=0)
    remote = _codes_by_caption(build_dataloader(remote_cfg, "train", 4, 0, expected))
    local = _codes_by_caption(build_dataloader(local_cfg, "train", 4, 0, expected))
    assert remote == local and len(remote) > 1


def test_edited_remote_shard_fails_its_hash_on_download(s3_server, tmp_path, shapes_shards, image_tokenizer,
                                                        text_tokenizer):
    uri = f"s3://{s3_server.bucket()}/edited"
    s3_server.upload_folder(shapes_shards / "train", uri)
    index = json.loads((shapes_shards / "train" / "index.json").read_text())
    shard = index["shards"][0]["zip_data"]["basename"]
    data = bytearray((shapes_shards / "train" / shard).read_bytes())
    data[len(data) // 2] ^= 0xFF
    s3_server.client.put_object(Bucket=uri.split("/")[2], Key=f"edited/{shard}", Body=bytes(data))
    expected = tokenizer_meta(image_tokenizer, text_tokenizer)
    cfg = DataConfig(train_path=uri, num_workers=0, cache_dir=str(tmp_path / "cache"), verify_shards="hash")
    with pytest.raises(Exception, match=r"(?i)checksum|hash") as err:
        list(build_dataloader(cfg, "train", 4, 0, expected))
    assert shard.split("/")[-1] in str(err.value)
    ok = dataclasses.replace(cfg, train_path=uri.replace("edited", "clean"), cache_dir=str(tmp_path / "cache2"))
    s3_server.upload_folder(shapes_shards / "train", ok.train_path)
    assert sum(len(b["codes"]) for b in build_dataloader(ok, "train", 4, 0, expected)) == 24
