"""Layout of an exported folder, and its checked readers: every failure names the file and what was expected.

```
config.json                         SRDDConfig (architecture, schedule, text_config, provenance) + auto_map
model.safetensors | model-0000K-of-0000N.safetensors + model.safetensors.index.json
hf.py config.py transformer.py blocks.py masks.py   remote code copied by transformers
generation_config.json              sampling defaults (SamplingConfig fields)
image_tokenizer/                    tokenizer_config.json + tokenizer.safetensors (srdd_scale.tokenizer format)
text_tokenizer/                     the caption tokenizer's own files, byte-identical (same identity hash)
text_encoder/                       only with --bundle-text-encoder: the frozen encoder's save_pretrained
README.md                           model card
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_FILE = "generation_config.json"
IMAGE_TOKENIZER_DIR = "image_tokenizer"
TEXT_TOKENIZER_DIR = "text_tokenizer"
TEXT_ENCODER_DIR = "text_encoder"
CARD_FILE = "README.md"
WEIGHT_PREFIX = "transformer."  # SRDDModel.base_model_prefix: keys in the safetensors are the transformer's plus this


class ExportFolderError(FileNotFoundError):
    """An exported folder lacks a file or holds one that cannot be read; the message names it."""


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportFolderError(f"{path}: missing (expected in an srdd_scale export folder)")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportFolderError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ExportFolderError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def read_export_config(folder: str | Path) -> dict[str, Any]:
    """config.json as a dict, checked for the keys srdd_scale needs to rebuild the model."""
    path = Path(folder) / CONFIG_FILE
    config = read_json(path)
    missing = [k for k in ("model_type", "patch_nums", "vocab_size", "latent_dim", "depth") if k not in config]
    if missing or config.get("model_type") != "srdd":
        raise ExportFolderError(
            f"{path}: not an SRDD export (model_type={config.get('model_type')!r}, missing keys {missing}); "
            f"expected model_type 'srdd' as written by tools/export_hf.py"
        )
    return config


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors file(s) holding the transformer: one file, or the shards an index lists."""
    folder = Path(folder)
    index = folder / WEIGHTS_INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ExportFolderError(f"{index}: expected a non-empty 'weight_map' (tensor name -> shard file)")
        return [folder / name for name in sorted(set(weight_map.values()))]
    if not (folder / WEIGHTS_FILE).is_file():
        raise ExportFolderError(f"{folder / WEIGHTS_FILE}: missing (and no {WEIGHTS_INDEX_FILE} for sharded weights)")
    return [folder / WEIGHTS_FILE]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file; a missing, truncated or garbled file raises naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ExportFolderError(f"{path}: missing (listed by the export's weight index)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ExportFolderError(f"{path}: not a readable safetensors file ({err}); re-export the model") from None


def read_transformer_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The transformer's state dict (keys without the `transformer.` prefix) from one file or all shards."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        for key, value in read_safetensors(path).items():
            if not key.startswith(WEIGHT_PREFIX):
                raise ExportFolderError(f"{path}: tensor {key!r} lacks the {WEIGHT_PREFIX!r} prefix of SRDDModel")
            state[key[len(WEIGHT_PREFIX):]] = value
    return state


def read_sampling_defaults(folder: str | Path) -> dict[str, Any]:
    """The SamplingConfig fields stored in generation_config.json (other HF keys are ignored)."""
    from dataclasses import fields

    from srdd_scale.model import SamplingConfig

    stored = read_json(Path(folder) / GENERATION_FILE)
    return {f.name: stored[f.name] for f in fields(SamplingConfig) if f.name in stored}


def check_export_folder(folder: str | Path) -> dict[str, Any]:
    """Open every file the native pipeline needs (JSON parsed, safetensors headers read); returns config.json."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise ExportFolderError(f"{folder}: no such export folder")
    config = read_export_config(folder)
    read_sampling_defaults(folder)
    for path in weight_files(folder):
        if not path.is_file():
            raise ExportFolderError(f"{path}: missing (listed by the export's weight index)")
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError) as err:
            raise ExportFolderError(f"{path}: not a readable safetensors file ({err}); re-export the model") from None
    tokenizer_dir = folder / IMAGE_TOKENIZER_DIR
    read_json(tokenizer_dir / "tokenizer_config.json")
    if not (tokenizer_dir / "tokenizer.safetensors").is_file():
        raise ExportFolderError(f"{tokenizer_dir / 'tokenizer.safetensors'}: missing (the image tokenizer's weights)")
    text = config.get("text_config")
    if config.get("text_dim") is not None:
        if not isinstance(text, dict):
            raise ExportFolderError(f"{folder / CONFIG_FILE}: a text-conditional model needs a 'text_config' object")
        for key in ("tokenizer", "encoder"):
            local = folder / str(text[key])
            if str(text[key]).startswith((TEXT_TOKENIZER_DIR, TEXT_ENCODER_DIR)) and not local.exists():
                raise ExportFolderError(f"{local}: missing (config.json text_config.{key} points to it)")
    return config
