"""Per-scale validation loss and token accuracy of an exported model on an MDS split (issue 8, item 4c)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from srdd_scale.export.pipeline import SRDDPipeline


@torch.no_grad()
def validation_loss(model_dir: str | Path, data_dir: str | Path, *, batch_size: int = 16, max_batches: int = 0,
                    device: str = "cpu") -> dict[str, Any]:
    """Teacher-forced CE and accuracy per scale over the MDS folder `data_dir` (all of it, or `max_batches`).

    The shards' meta.json must match the export's tokenizers (check_meta names any difference). Per-scale
    values are means over every token of that scale; `loss/mean` uses the model's own loss weighting.
    """
    from srdd_scale.data.config import DataConfig
    from srdd_scale.data.loader import build_dataloader
    from srdd_scale.data.mds import tokenizer_meta
    from srdd_scale.model.loss import scale_losses
    from srdd_scale.train.task import batch_to_model_inputs

    pipe = SRDDPipeline.from_pretrained(model_dir, device=device)
    model, tokenizer = pipe.model, pipe.tokenizer
    loader = build_dataloader(DataConfig(heldout_path=str(data_dir), num_workers=0), "heldout", batch_size,
                              seed=0, expected_meta=tokenizer_meta(tokenizer, pipe.text_tokenizer), num_workers=0)
    sums: dict[str, float] = {}
    images = batches = 0
    for batch in loader:
        codes = batch["codes"].to(pipe.device)
        rows = codes.shape[0]
        no_drop = torch.zeros(rows, dtype=torch.bool)
        logits = model(**batch_to_model_inputs(batch, tokenizer, pipe.text_encoder, model.cfg.num_classes > 0,
                                               pipe.device, no_drop))
        loss, metrics = scale_losses(logits, codes, model.patch_nums, model.cfg.loss_weighting, 0.0)
        for key, value in {"loss": float(loss), **metrics}.items():
            sums[key] = sums.get(key, 0.0) + value * rows  # batch means -> sample-weighted means
        images += rows
        batches += 1
        if max_batches and batches >= max_batches:
            break
    if not images:
        raise ValueError(f"{data_dir}: the split yielded no samples")
    return {"model": str(model_dir), "data": str(data_dir), "images": images,
            "patch_nums": list(model.patch_nums), **{k: v / images for k, v in sorted(sums.items())}}
