"""Knowledge distillation (Hinton et al., 2015) for the trainer: a teacher's softened outputs as extra targets.

The loss of a batch is ``(1 - weight) * plain + weight * T**2 * KL(softmax(t / T) || softmax(s / T))``,
where ``plain`` is the trainer's own loss (cross-entropy, with label smoothing or mixup if configured),
``s``/``t`` are the student's and teacher's logits and ``T`` is the temperature; the ``T**2`` keeps the
soft term's gradients on the scale of the hard one. ``weight = 0`` gives exactly the plain loss.

The teacher is any model (e.g. the network before compression). :class:`Distiller` keeps it in eval
mode without gradients and runs it on the same (augmented, mixed) batch under the same autocast as the
student; when the two carry different input normalisations, the student's input is re-normalised
for the teacher.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.resnet import input_normalization
from .config import DistillConfig

__all__ = ["distillation_loss", "Distiller", "make_distiller"]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, plain_loss: torch.Tensor,
    temperature: float, weight: float,
) -> torch.Tensor:
    """Hinton's loss: ``(1 - weight) * plain_loss + weight * T**2 * KL(p_teacher^T || p_student^T)``.

    The KL divergence is summed over classes and averaged over the batch, computed in float32.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)
    return (1.0 - weight) * plain_loss + weight * soft


class Distiller:
    """A teacher for the trainer: ``distiller(x, student_logits, plain_loss)`` returns the distillation loss.

    ``student_stats``/``teacher_stats`` are the ``(mean, std)`` each model's input is normalised with;
    ``x`` arrives normalised with the student's. The teacher is copied to ``device`` in eval mode, its
    parameters frozen; the caller's teacher is not changed.
    """

    def __init__(
        self, teacher: nn.Module, config: DistillConfig, device: torch.device,
        student_stats: tuple[Sequence[float], Sequence[float]], teacher_stats: tuple[Sequence[float], Sequence[float]],
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"the teacher must be an nn.Module, got {type(teacher).__name__}")
        self.config = config
        self.teacher = copy.deepcopy(teacher).to(device).to(memory_format=memory_format).eval()
        self.teacher.requires_grad_(False)
        self.affine = None
        if tuple(map(float, student_stats[0])) != tuple(map(float, teacher_stats[0])) or \
                tuple(map(float, student_stats[1])) != tuple(map(float, teacher_stats[1])):
            # x_s = (u - m_s) / s_s  =>  x_t = (u - m_t) / s_t = x_s * (s_s / s_t) + (m_s - m_t) / s_t
            ms, ss, mt, st = (torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                              for v in (*student_stats, *teacher_stats))
            self.affine = (ss / st, (ms - mt) / st)

    def __call__(self, x: torch.Tensor, student_logits: torch.Tensor, plain_loss: torch.Tensor) -> torch.Tensor:
        """The distillation loss of a batch (call it inside the student's autocast context)."""
        with torch.no_grad():
            if self.affine is not None:
                x = x * self.affine[0] + self.affine[1]
            teacher_logits = self.teacher(x)
        return distillation_loss(student_logits, teacher_logits, plain_loss, self.config.temperature, self.config.weight)


def make_distiller(
    teacher: nn.Module | None, config: DistillConfig | None, device: torch.device,
    student_stats: tuple[Sequence[float], Sequence[float]], memory_format: torch.memory_format = torch.contiguous_format,
) -> Distiller | None:
    """The trainer's :class:`Distiller`: ``None`` without a teacher and ``train.distill``.

    A teacher without ``config`` distils with :class:`DistillConfig`'s defaults; ``config`` without a
    teacher is an error. The teacher's normalisation is the one it carries, else the student's.
    """
    if teacher is None and config is None:
        return None
    if teacher is None:
        raise ValueError("train.distill needs a teacher: pass teacher=<model> to train() "
                         "(in a recipe, distillation needs `weights:`; the teacher is the model before its transforms)")
    teacher_stats = input_normalization(teacher) or student_stats
    return Distiller(teacher, config or DistillConfig(), device, student_stats, teacher_stats, memory_format)
