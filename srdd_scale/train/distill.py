"""Scale distillation with a teacher (docs/method.md §5.4, §6.6): a student on a reduced schedule, started from
the full-schedule teacher's weights, learns the teacher's token distributions at the kept scales as well as
the data codes.

The teacher is the exported full-schedule model re-laid onto the student's schedule (the same re-laying as
``train.init_from``) and frozen. It is run on the student's own teacher-forcing inputs, so at every kept scale
it says what the full model predicts from the student's state. Under the ``markovian`` mask a scale sees only
its own tokens, so this is exactly the full teacher's prediction for that scale given that state (tested);
under the other masks the re-laid teacher sees the reduced history instead of the full one.
Loss = (1 - w) * CE(student, codes) + w * T^2 * KL(teacher_T || student_T), both averaged over tokens.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from srdd_scale.model.loss import scale_losses
from srdd_scale.train.task import SRDDTask


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
                      ) -> torch.Tensor:
    """Mean over tokens of T^2 * KL(softmax(teacher / T) || softmax(student / T)); [B, L, V] logits."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return kl.mean() * temperature**2


class DistillTask(SRDDTask):
    """SRDDTask whose loss mixes the data CE with the frozen teacher's distributions (``train.distill_from``)."""

    def __init__(self, cfg: Any, device: torch.device):
        super().__init__(cfg, device)
        from srdd_scale.export.importing import load_exported_weights

        teacher = super().build_model()
        load_exported_weights(teacher, cfg.train.distill_from)  # re-laid onto this run's (reduced) schedule
        self.teacher = teacher.to(device).eval().requires_grad_(False)

    def loss(self, model, batch: dict[str, torch.Tensor], cond_drop: torch.Tensor | None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = self.model_inputs(batch, cond_drop)
        logits = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs)
        targets = batch["codes"].to(self.device, non_blocking=True)
        ce, metrics = scale_losses(logits, targets, self.patch_nums, self.cfg.model.loss_weighting,
                                   self.cfg.model.label_smoothing)
        kd = distillation_loss(logits, teacher_logits, self.cfg.train.distill_temperature)
        weight = self.cfg.train.distill_weight
        metrics["loss/distill"] = float(kd.detach())
        return (1 - weight) * ce + weight * kd, metrics


def build_task(cfg: Any, device: torch.device) -> SRDDTask:
    """The trainer's task: distillation when ``train.distill_from`` names a teacher export, else plain CE."""
    return DistillTask(cfg, device) if cfg.train.distill_from else SRDDTask(cfg, device)
