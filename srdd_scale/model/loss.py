"""Per-scale token cross-entropy: SRDD's training objective (docs/method.md §5.1) with VAR's metrics."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def scale_losses(
    logits: torch.Tensor,
    targets: torch.Tensor,
    patch_nums: tuple[int, ...],
    weighting: str = "token",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CE over all scales and per-scale metrics.

    weighting: ``token`` averages over all L tokens (VAR: a scale weighs as many tokens as it has, so the
    finest scales dominate); ``scale`` averages the per-scale means (every diffusion step weighs the same,
    the other reading of the ELBO sum in docs/method.md §5.2 / §9.3).
    Metrics are computed without label smoothing (as VAR logs them): ``loss/scale_k``, ``acc/scale_k``,
    ``loss/mean`` and ``acc/mean`` over all tokens, ``loss/last`` and ``acc/last`` of the finest scale.
    """
    sizes = [p * p for p in patch_nums]
    if logits.shape[:2] != targets.shape or logits.shape[1] != sum(sizes):
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match the schedule "
            f"patch_nums={list(patch_nums)} (L={sum(sizes)})"
        )
    if weighting not in ("token", "scale"):
        raise ValueError(f"weighting={weighting!r}: expected 'token' or 'scale'")
    flat_logits = logits.float().flatten(0, 1)
    flat_targets = targets.flatten()
    token_loss = F.cross_entropy(flat_logits, flat_targets, reduction="none", label_smoothing=label_smoothing)
    token_loss = token_loss.view_as(targets)
    if weighting == "token":
        loss = token_loss.mean()
    else:
        loss = torch.stack([part.mean() for part in token_loss.split(sizes, dim=1)]).mean()

    with torch.no_grad():
        plain = token_loss if label_smoothing == 0 else F.cross_entropy(flat_logits, flat_targets, reduction="none")
        plain = plain.view_as(targets)
        correct = (logits.argmax(-1) == targets).float()
        per_scale_loss = torch.stack([part.mean() for part in plain.split(sizes, dim=1)])
        per_scale_acc = torch.stack([part.mean() for part in correct.split(sizes, dim=1)])
        summary = torch.cat([per_scale_loss, per_scale_acc, plain.mean()[None], correct.mean()[None]]).tolist()
    k_total = len(sizes)
    metrics = {f"loss/scale_{k}": summary[k] for k in range(k_total)}
    metrics.update({f"acc/scale_{k}": summary[k_total + k] for k in range(k_total)})
    metrics.update(
        {
            "loss/mean": summary[-2],
            "acc/mean": summary[-1],
            "loss/last": summary[k_total - 1],
            "acc/last": summary[2 * k_total - 1],
        }
    )
    return loss, metrics
