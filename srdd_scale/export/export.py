"""Training checkpoint (any backend) -> a Hugging Face folder that transformers and srdd_scale both load."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from srdd_scale.config import load_saved_config, to_dict
from srdd_scale.export.checkpoints import read_model_state, resolve_checkpoint
from srdd_scale.export.folder import (
    CARD_FILE, GENERATION_FILE, IMAGE_TOKENIZER_DIR, TEXT_ENCODER_DIR, TEXT_TOKENIZER_DIR, check_export_folder,
)
from srdd_scale.model import SamplingConfig
from srdd_scale.run_config import RunConfig
from srdd_scale.model.hf import SRDDConfig, SRDDModel
from srdd_scale.tokenizer import save_tokenizer
from srdd_scale.train import checkpoint as ckpt

RUN_CONFIG_FILE = "config.yaml"


def _copy_text_tokenizer(text_cfg, out: Path) -> str:
    """Copy the caption tokenizer's own files verbatim (so its identity hash, checked against MDS meta, holds)."""
    from srdd_scale.text import load_text_tokenizer

    tokenizer = load_text_tokenizer(text_cfg)
    target = out / TEXT_TOKENIZER_DIR
    target.mkdir()
    files = tokenizer._identity_files()  # the vocabulary files that define it (text/tokenizer.py)
    for source in files.values():
        shutil.copy2(source, target / Path(source).name)
    if tokenizer.kind == "sentencepiece":
        return f"{TEXT_TOKENIZER_DIR}/{Path(tokenizer.path).name}"
    return TEXT_TOKENIZER_DIR


def _final_metrics(run_dir: Path, step: int) -> dict[str, float]:
    """The last logged value (at or before `step`) of every loss/accuracy metric in the run's metrics.jsonl."""
    from srdd_scale.train.callbacks.loggers import read_metrics

    latest: dict[str, float] = {}
    for record in read_metrics(run_dir):
        if record.get("step", 0) > step:
            break
        for key, value in record.items():
            if key.startswith(("loss", "acc", "eval/")) and isinstance(value, (int, float)) and math.isfinite(value):
                latest[key] = float(value)
    return latest


def _model_card(cfg, meta: ckpt.CheckpointMeta, hf_cfg: SRDDConfig, metrics: dict[str, float], out_name: str,
                bundled: bool) -> str:
    summary = ["loss", "loss/mean", "loss/last", "acc/mean", "acc/last"]
    rows = [f"| {k} | {metrics[k]:.4f} |" for k in summary + sorted(k for k in metrics if k.startswith("eval/"))
            if k in metrics]
    conditioning = "text" if hf_cfg.text_dim else ("class" if hf_cfg.num_classes else "unconditional")
    encoder = "bundled in `text_encoder/`" if bundled else f"referenced as `{cfg.text.encoder}` (not bundled)"
    return "\n".join([
        "---", "library_name: transformers", "tags: [srdd, next-scale-prediction, text-to-image]", "---", "",
        f"# SRDD transformer (depth {hf_cfg.depth}, {conditioning}-conditional)", "",
        "VAR-style next-scale prediction with SRDD's Markovian attention mask (mask mode "
        f"`{hf_cfg.mask}`), exported from an srdd-scale training run.", "",
        "## Training", "",
        f"* data: `{cfg.data.train_path}` (held out: `{cfg.data.heldout_path or 'none'}`)",
        f"* steps: {meta.step} of {cfg.train.total_steps}, global batch {cfg.train.global_batch_size}, "
        f"backend {meta.backend} on {meta.world_size} ranks (ZeRO stage {meta.zero_stage} if DeepSpeed)",
        f"* schedule (patch_nums): {hf_cfg.patch_nums}; image codebook {hf_cfg.vocab_size} x {hf_cfg.latent_dim}",
        f"* weights: {'EMA (decay ' + str(cfg.train.ema_decay) + ')' if hf_cfg.training['ema_weights'] else 'trained'}",
        f"* text encoder: {encoder}; run config hash `{meta.config_hash}`", "",
        "| final metric | value |", "| --- | --- |", *(rows or ["| (no metrics.jsonl in the run) | |"]), "",
        "## Sampling", "", "```bash",
        f"python tools/sample.py --model {out_name} --prompt \"a red circle\" --num 4 --out samples/",
        "```", "", "```python",
        "from srdd_scale.export.pipeline import SRDDPipeline",
        f"pipe = SRDDPipeline.from_pretrained(\"{out_name}\")",
        "images = pipe(prompts=[\"a red circle\"], seed=0)  # list of PIL images", "```", "",
        "Plain transformers (teacher-forced logits; the sampler lives in srdd_scale):", "", "```python",
        "from transformers import AutoModel",
        f"model = AutoModel.from_pretrained(\"{out_name}\", trust_remote_code=True)", "```", "",
        f"Sampling defaults (CFG, top-k/p, temperature, mask resampling) are in `{GENERATION_FILE}`.", "",
    ])


def _write_generation_config(out: Path, sampling: SamplingConfig) -> None:
    """Every SamplingConfig field, written in full (GenerationConfig.save_pretrained would drop default values);
    top_k/top_p/temperature/do_sample keep their transformers meaning, the rest are extra keys it keeps."""
    import transformers

    values = {"do_sample": True, **dataclasses.asdict(sampling), "transformers_version": transformers.__version__}
    (out / GENERATION_FILE).write_text(json.dumps(values, indent=2) + "\n")


def export_checkpoint(source: str | Path, out_dir: str | Path, *, bundle_text_encoder: bool = False,
                      max_shard_size: str | int = "2GB", sampling: SamplingConfig | None = None,
                      ema: bool = False, overwrite: bool = False) -> Path:
    """Write the HF folder for checkpoint `source` (a run dir: its newest complete checkpoint) into `out_dir`.

    The folder is assembled next to `out_dir` and moved into place at the end, so a failed export leaves
    nothing half-written behind. `ema` exports the EMA weights (runs with train.ema_decay > 0). Returns `out_dir`.
    """
    from srdd_scale.train.task import SRDDTask

    run_dir, folder = resolve_checkpoint(source)
    config_path = run_dir / RUN_CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; the run directory of {folder} must hold its config.yaml")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: exists and is not empty; choose a new folder or pass overwrite")
    cfg = load_saved_config(config_path, RunConfig)
    meta = ckpt.read_meta(folder)
    sampling = sampling or SamplingConfig()
    sampling.validate()
    task = SRDDTask(cfg, torch.device("cpu"))

    from srdd_scale.text import load_text_tokenizer

    text_config: dict[str, Any] | None = None
    # what the model was trained with, checked whenever the export is loaded (export/folder.py check_identity)
    identities = {"image_tokenizer": task.tokenizer.identity()}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Staged beside the target, so the final rename is atomic and never crosses filesystems.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if task.text_encoder is not None:
            text_config = to_dict(cfg.text)
            text_config["tokenizer"] = _copy_text_tokenizer(cfg.text, staging)
            identities["text_tokenizer"] = load_text_tokenizer(cfg.text).identity()
            if bundle_text_encoder:
                task.text_encoder.model.save_pretrained(str(staging / TEXT_ENCODER_DIR), safe_serialization=True)
                text_config["encoder"] = TEXT_ENCODER_DIR
        hf_cfg = SRDDConfig.from_model_config(
            cfg.model, task.patch_nums, task.tokenizer.vocab_size, task.tokenizer.latent_dim, task.text_dim,
            text_config=text_config, image_tokenizer=IMAGE_TOKENIZER_DIR, image_size=task.tokenizer.image_size,
            identities=identities,
            training={"step": meta.step, "backend": meta.backend, "world_size": meta.world_size,
                      "config_hash": meta.config_hash, "train_path": cfg.data.train_path, "ema_weights": ema},
        )
        model = SRDDModel(hf_cfg)
        model.transformer.load_state_dict(read_model_state(folder, model.transformer.state_dict(), ema=ema))
        model.eval().save_pretrained(str(staging), max_shard_size=max_shard_size, safe_serialization=True)
        save_tokenizer(task.tokenizer, staging / IMAGE_TOKENIZER_DIR)
        _write_generation_config(staging, sampling)
        card = _model_card(cfg, meta, hf_cfg, _final_metrics(run_dir, meta.step), out_dir.name,
                           bundle_text_encoder)
        (staging / CARD_FILE).write_text(card)
        check_export_folder(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
