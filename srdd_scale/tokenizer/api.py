"""Build, save and load tokenizers: our folder format and VAR's released `vae_ch160v4096z32.pth`."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from srdd_scale.config import ConfigError, build, to_dict
from srdd_scale.tokenizer.config import VAR_PATCH_NUMS_256, TokenizerConfig
from srdd_scale.tokenizer.vqvae import TRAINING_STATE_KEYS, MultiScaleVQTokenizer

CONFIG_FILE = "tokenizer_config.json"
WEIGHTS_FILE = "tokenizer.safetensors"
RUN_SUBFOLDER = "tokenizer"  # where tools/train_tokenizer.py saves the tokenizer inside its run folder
FORMAT_VERSION = 1
# Keys whose presence marks a VAR VQ-VAE state dict (VAR's models/vqvae.py naming).
VAR_MARKER_KEYS = ("quantize.embedding.weight", "encoder.conv_in.weight", "decoder.conv_out.weight")
# Fields a checkpoint fixes; a config that names a checkpoint must agree with it on each of them.
ARCH_FIELDS = ("image_size", "ch", "ch_mult", "num_res_blocks", "latent_dim", "vocab_size", "quant_resi",
               "share_quant_resi", "norm_groups", "norm")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the tokenizer it is loaded into; the message lists the keys."""


def build_tokenizer(cfg: TokenizerConfig) -> MultiScaleVQTokenizer:
    """Fresh tokenizer from `cfg`, or the weights at `cfg.checkpoint` (which must match cfg's architecture)."""
    cfg.validate()
    if cfg.checkpoint is None:
        return MultiScaleVQTokenizer(cfg)
    tokenizer = load_tokenizer(cfg.checkpoint, patch_nums=cfg.patch_nums)
    found = tokenizer.config
    differ = [f"tokenizer.{k}={getattr(cfg, k)!r} but the checkpoint has {getattr(found, k)!r}"
              for k in ARCH_FIELDS if getattr(cfg, k) != getattr(found, k)]
    if differ:
        raise ConfigError(f"tokenizer.checkpoint={cfg.checkpoint}: " + "; ".join(differ))
    return tokenizer


def save_tokenizer(tokenizer: MultiScaleVQTokenizer, folder: str | Path) -> Path:
    """Write `tokenizer_config.json` + `tokenizer.safetensors` into `folder` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(tokenizer.config, checkpoint=None)
    meta = {"format_version": FORMAT_VERSION, "tokenizer": to_dict(cfg), "identity": tokenizer.identity()}
    state = {k: v.detach().cpu().contiguous() for k, v in tokenizer.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def saved_tokenizer_path(path: str | Path) -> Path:
    """`path` itself, or the tokenizer a train_tokenizer run folder saved (RUN/tokenizer) when `path` is one."""
    path = Path(path)
    if path.is_dir() and not (path / CONFIG_FILE).is_file() and (path / RUN_SUBFOLDER / CONFIG_FILE).is_file():
        return path / RUN_SUBFOLDER
    return path


def load_tokenizer(path: str | Path, patch_nums: tuple[int, ...] | None = None) -> MultiScaleVQTokenizer:
    """Load our folder format (or a train_tokenizer run folder) or VAR's .pth (detected by its keys); eval mode.

    `patch_nums` replaces the saved schedule (it must end at the same latent grid).
    """
    path = saved_tokenizer_path(path)
    if path.is_dir():
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{path} is a folder without {CONFIG_FILE}: not a saved tokenizer")
        meta = json.loads(config_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointMismatchError(
                f"{config_path}: format_version={meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        cfg = build(TokenizerConfig, meta["tokenizer"], prefix="tokenizer")
        state = load_file(str(path / WEIGHTS_FILE))
    elif path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(k in state for k in VAR_MARKER_KEYS):
            keys = list(state)[:8] if isinstance(state, dict) else type(state).__name__
            raise CheckpointMismatchError(
                f"{path}: not a VAR VQ-VAE state dict (expected keys {list(VAR_MARKER_KEYS)}; found {keys})")
        cfg = var_config_from_state_dict(state, path, patch_nums or VAR_PATCH_NUMS_256)
    else:
        raise FileNotFoundError(f"tokenizer checkpoint not found: {path}")
    if patch_nums is not None:
        cfg = dataclasses.replace(cfg, patch_nums=tuple(patch_nums))
    tokenizer = MultiScaleVQTokenizer(cfg)
    load_weights(tokenizer, state, path)
    tokenizer.eval().requires_grad_(False)
    return tokenizer


def load_weights(tokenizer: MultiScaleVQTokenizer, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict load that names every missing, unexpected or mis-shaped key (training-state buffers may be absent)."""
    expected = tokenizer.state_dict()
    state = dict(state)
    for key in TRAINING_STATE_KEYS:
        # usage statistics of another schedule (e.g. 10 scales loaded as 6): start them afresh
        if key in state and key in expected and state[key].shape != expected[key].shape:
            state[key] = expected[key]
    missing = sorted(k for k in expected if k not in state and k not in TRAINING_STATE_KEYS)
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                       for k in expected if k in state and state[k].shape != expected[k].shape)
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatches", misshaped)) if keys]
    if problems:
        raise CheckpointMismatchError(f"{source} does not match the tokenizer architecture: " + "; ".join(problems))
    tokenizer.load_state_dict(state, strict=False)


def _require(state: dict, key: str, source: Path) -> torch.Tensor:
    if key not in state:
        raise CheckpointMismatchError(f"{source}: missing key {key!r} needed to infer the VAR architecture")
    return state[key]


def _count_indexed(state: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.fullmatch(k))})


def var_config_from_state_dict(state: dict, source: Path, patch_nums: tuple[int, ...]) -> TokenizerConfig:
    """Infer a TokenizerConfig from a VAR state dict's shapes (VAR stores no config beside its weights)."""
    vocab_size, latent_dim = _require(state, "quantize.embedding.weight", source).shape
    ch = _require(state, "encoder.conv_in.weight", source).shape[0]
    levels = _count_indexed(state, r"encoder\.down\.(\d+)\..*")
    ch_mult = tuple(_require(state, f"encoder.down.{i}.block.0.conv2.weight", source).shape[0] // ch
                    for i in range(levels))
    num_res_blocks = _count_indexed(state, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight")
    share_quant_resi = _count_indexed(state, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.weight")
    if share_quant_resi == 0:
        raise CheckpointMismatchError(
            f"{source}: no 'quantize.quant_resi.qresi_ls.N.weight' keys; only VAR's partially shared Phi "
            "(share_quant_resi >= 2, as in vae_ch160v4096z32.pth) is supported")
    downsample = 2 ** (levels - 1)
    # VAR's Phi ratio (0.5) and GroupNorm groups (32) are constants of its code, not stored in the file.
    cfg = TokenizerConfig(image_size=patch_nums[-1] * downsample, ch=ch, ch_mult=ch_mult,
                          num_res_blocks=num_res_blocks, latent_dim=int(latent_dim), vocab_size=int(vocab_size),
                          patch_nums=tuple(patch_nums), quant_resi=0.5, share_quant_resi=share_quant_resi,
                          norm_groups=32)
    cfg.validate()
    return cfg
