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

from srdd_scale.model.hf import PICKLE_SUFFIXES

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


class ExportIdentityError(ValueError):
    """A tokenizer in an export is not the one the model was trained with (its identity hash differs)."""


# text_config.encoder values that name no path (built in, or shipped in an installed package)
ENCODER_ALIASES = ("tiny_t5", "minilm", "none")


def inside(folder: str | Path, relative: str, key: str) -> Path:
    """``folder/relative``, refused unless it stays inside the folder (no absolute path, no ``..``, no link out)."""
    folder = Path(folder)
    path = folder / relative
    if Path(relative).is_absolute() or not path.resolve().is_relative_to(folder.resolve()):
        raise ExportFolderError(f"{folder / CONFIG_FILE}: {key}={relative!r} points outside the export folder "
                                f"{folder}; an export must be self-contained (re-export it with tools/export_hf.py)")
    return path


def text_paths(folder: str | Path, text_config: dict[str, Any]) -> dict[str, str]:
    """text_config's tokenizer/encoder with paths made absolute inside ``folder``; encoder aliases kept."""
    resolved = {}
    for key in ("tokenizer", "encoder"):
        value = str(text_config.get(key, ""))
        if key == "encoder" and value in ENCODER_ALIASES:
            resolved[key] = value
        else:
            resolved[key] = str(inside(folder, value, f"text_config.{key}"))
    return resolved


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
        return [inside(folder, str(name), f"{WEIGHTS_INDEX_FILE} weight_map")
                for name in sorted(set(weight_map.values()))]
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
    pickles = sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ExportFolderError(f"{pickles[0]}: a pickle-format file in an export folder, which srdd_scale never "
                                f"writes and will not load (loading a pickle can run code); remove it or re-export")
    config = read_export_config(folder)
    inside(folder, str(config.get("image_tokenizer", IMAGE_TOKENIZER_DIR)), "image_tokenizer")
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
        for key, value in text_paths(folder, text).items():
            if value not in ENCODER_ALIASES and not Path(value).exists():
                raise ExportFolderError(f"{value}: missing (config.json text_config.{key} points to it)")
    return config


def check_identity(folder: str | Path, role: str, loaded: str, recorded: str | None) -> None:
    """Refuse a tokenizer whose identity hash differs from the one config.json recorded at export."""
    if recorded is None:
        raise ExportIdentityError(f"{Path(folder) / CONFIG_FILE}: records no identity for the {role} (exported "
                                  f"before identities were recorded); re-export the checkpoint")
    if loaded != recorded:
        raise ExportIdentityError(
            f"{Path(folder) / CONFIG_FILE}: the {role} in {folder} has identity {loaded[:16]}..., the model was "
            f"trained with {recorded[:16]}... (swapped or modified files); restore the exported tokenizer"
        )
