"""Per-scale token cross-entropy: SRDD's training objective (docs/method.md §5.1) with VAR's metrics."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def metric_names(num_scales: int) -> list[str]:
    """Names of the entries of ``scale_loss_summary``'s summary tensor, in order."""
    return ([f"loss/scale_{k}" for k in range(num_scales)] + [f"acc/scale_{k}" for k in range(num_scales)]
            + ["loss/mean", "acc/mean", "loss/last", "acc/last"])


def scale_loss_summary(
    logits: torch.Tensor,
    targets: torch.Tensor,
    patch_nums: tuple[int, ...],
    weighting: str = "token",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CE over all scales and the per-scale metrics as one tensor on the logits' device (``metric_names`` order).

    Nothing here reads a value back to the host, so a training loop can keep the metrics of every micro-batch on
    the device and read them once per step.

    weighting: ``token`` averages over all L tokens (VAR: a scale weighs as many tokens as it has, so the
    finest scales dominate); ``scale`` averages the per-scale means (every diffusion step weighs the same,
    the other reading of the ELBO sum in docs/method.md §5.1).
    Metrics are computed without label smoothing (as VAR logs them): per-scale loss and accuracy, the mean over
    all tokens, and those of the finest scale.
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
        summary = torch.cat([per_scale_loss, per_scale_acc, plain.mean()[None], correct.mean()[None],
                             per_scale_loss[-1:], per_scale_acc[-1:]])
    return loss, summary


def scale_losses(
    logits: torch.Tensor,
    targets: torch.Tensor,
    patch_nums: tuple[int, ...],
    weighting: str = "token",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``scale_loss_summary`` with the metrics read back as a dict (``loss/scale_k``, ``acc/mean``, ...)."""
    loss, summary = scale_loss_summary(logits, targets, patch_nums, weighting, label_smoothing)
    return loss, dict(zip(metric_names(len(patch_nums)), summary.tolist()))
