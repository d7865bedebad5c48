"""Typed config for data: where images come from, how they are preprocessed and pretokenized, and where
the MDS shards that training streams live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from srdd_scale.config import ConfigError, require

SOURCES = ("auto", "synthetic", "folder", "webdataset")


@dataclass(frozen=True)
class DataConfig:
    """Input corpus, preprocessing, pretokenize throughput knobs and the streaming reader's settings."""

    # --- input corpus (tools/pretokenize.py)
    source: Literal["auto", "synthetic", "folder", "webdataset"] = "auto"  # auto: synthetic if no input, else detect
    input: str = ""  # image folder, .tar file, folder of .tar files, or glob(s) (comma-separated)
    image_size: int = 64  # square side fed to the image tokenizer (must equal tokenizer.image_size)
    seed: int = 0  # synthetic shapes seed (the data set is a pure function of it)
    synthetic_train_samples: int = 2048  # size of the synthetic `train` split that pretokenize writes
    synthetic_heldout_samples: int = 256  # size of the synthetic `heldout` split (0: do not write it)
    # --- preprocessing (VAR resizes the short side to 1.125x then crops; docs/method.md §8.3)
    resize_ratio: float = 1.125  # short side is resized to round(resize_ratio * image_size), then centre-cropped
    min_size: int = 0  # images whose short side is below this are skipped as `too_small` (0: keep all)
    max_image_pixels: int = 89_478_485  # larger images are skipped as `decompression_bomb` (Pillow's default)
    # --- class labels and captions (class-conditional and unconditional corpora; docs/reproduction.md)
    class_labels: bool = False  # folder: ImageFolder root/<class>/*; webdataset: KEY.cls or KEY.json "label"
    num_classes: int = 0  # webdataset labels without a classes.txt/.json: ids 0..num_classes-1 (names = ids)
    captions: bool = True  # false: no caption is read or tokenized (class-only or unconditional corpora)
    class_caption: str = ""  # e.g. "a photo of a {name}": caption of a labelled image that has none of its own
    # --- caps on hostile inputs (checked before anything is decoded or read whole)
    max_aspect_ratio: float = 20.0  # long side / short side above this is skipped as `extreme_aspect_ratio`
    max_file_bytes: int = 1 << 26  # image/caption files and tar members above this are skipped as `file_too_large`
    max_caption_bytes: int = 2048  # longer captions (UTF-8) are cut to this and counted as `caption_truncated`
    # --- pretokenize throughput
    decode_workers: int = 2  # processes decoding/resizing images in parallel
    encode_batch_size: int = 64  # images per tokenizer.encode call
    shard_size_limit: int = 1 << 26  # bytes of uncompressed samples per MDS shard (64 MiB)
    # --- reading shards (srdd_scale.data.loader)
    train_path: str = "data/shapes/train"  # MDS folder (or remote URI such as s3://...) streamed for training
    heldout_path: str = "data/shapes/heldout"  # MDS folder for evaluation ("" when there is none)
    cache_dir: str = ""  # local cache for remote shards; set it to also copy local/shared-filesystem shards there
    shuffle: bool = True  # shuffle training samples (seeded by the train seed)
    shuffle_block_size: int = 0  # streaming's shuffle block size (0: streaming's default)
    num_workers: int = 2  # DataLoader workers reading shards
    predownload: int = 0  # samples to fetch ahead per worker for remote data (0: streaming's default)
    # size: every shard exists with its index.json size (one stat each); hash: also its xxh64, read in full
    # (local shards at open by each node's first rank; remote shards as they are downloaded). docs/storage.md
    verify_shards: Literal["size", "hash"] = "size"

    def validate(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"data.image_size={self.image_size}: expected >= 16 pixels")
        if self.resize_ratio < 1.0:
            raise ConfigError(f"data.resize_ratio={self.resize_ratio}: expected >= 1.0 (resize, then crop)")
        require(self.seed >= 0, "data.seed", self.seed, "an int >= 0")
        for key in ("min_size", "synthetic_train_samples", "synthetic_heldout_samples", "decode_workers",
                    "shuffle_block_size", "num_workers", "predownload"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key}={getattr(self, key)}: expected >= 0")
        if self.num_classes < 0:
            raise ConfigError(f"data.num_classes={self.num_classes}: expected >= 0 (0: from classes.txt/.json)")
        if self.class_caption and not (self.class_labels and self.captions):
            raise ConfigError(f"data.class_caption={self.class_caption!r} needs data.class_labels=true and "
                              "data.captions=true (it is made from each image's class name)")
        if self.class_caption and "{name}" not in self.class_caption:
            raise ConfigError(f"data.class_caption={self.class_caption!r}: expected a template with {{name}}, "
                              "e.g. 'a photo of a {name}'")
        require(self.max_aspect_ratio >= 1, "data.max_aspect_ratio", self.max_aspect_ratio, "a ratio >= 1")
        for key in ("max_image_pixels", "max_file_bytes", "max_caption_bytes", "encode_batch_size",
                    "shard_size_limit"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}={getattr(self, key)}: expected a positive integer")
