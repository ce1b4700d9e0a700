"""Time budgets: fix a run's length so that it fits a wall-clock budget on the hardware at hand.

:func:`plan` runs a short probe (a few real training steps and a little evaluation, with the run's own
config on the run's device), measures images/s, and returns a :class:`BudgetPlan`: the number of epochs
(or, when not even one epoch fits, the number of steps of a single epoch) that fits the budget. The
schedule of the config is then laid over exactly that length by :func:`compress.training.train`.

The plan is a plain record: store it (``compress-bench`` writes ``plan.json`` in the recipe's folder)
and a resumed run reuses it, so it is the same run, whatever the machine's speed is on the second day.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from .config import TrainConfig
from .trainer import train

__all__ = ["BudgetPlan", "plan", "fit_length"]


@dataclass(frozen=True)
class BudgetPlan:
    """How long a run is, fixed from a probe: ``epochs`` (and ``max_steps_per_epoch`` when < 1 epoch).

    ``train_images_per_s`` and ``eval_images_per_s`` are the probe's measured speeds;
    ``estimated_s`` is the planned run's predicted wall time (training steps plus evaluations).
    """

    minutes: float
    epochs: int
    max_steps_per_epoch: int | None
    steps_per_epoch: int
    train_images_per_s: float
    eval_images_per_s: float
    estimated_s: float
    probe_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BudgetPlan":
        """The plan :meth:`to_dict` wrote."""
        return cls(**d)


def plan(
    model: nn.Module,
    data: ImageData,
    config: TrainConfig,
    minutes: float,
    *,
    device: str | torch.device | None = None,
    probe_steps: int = 4,
    teacher: nn.Module | None = None,
) -> BudgetPlan:
    """The run length of ``config`` on ``data`` that fits ``minutes`` of wall time on ``device``.

    The probe trains a copy of ``model`` for two short epochs of ``probe_steps`` steps on the first
    training images (the first epoch warms up: allocations, oneDNN kernels, ``torch.compile``) and
    times the second: its training steps give images/s, its evaluation of ``config.eval_batch_size``
    test images gives the evaluation speed. Each planned epoch costs its training steps plus one
    evaluation of the test (and validation) set. The plan is ``floor`` whole epochs or ``ceil`` epochs
    cut to the steps that fit (``max_steps_per_epoch``), whichever trains on more images; when not even
    one epoch fits, one cut epoch. At least one step is always planned. ``teacher`` is the distillation
    teacher of a config with ``distill`` (its forward passes are part of each step's time).
    """
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"time budget must be a positive number of minutes, got {minutes!r}")
    if probe_steps < 1:
        raise ValueError(f"probe_steps must be >= 1, got {probe_steps}")
    n_train = int(data.train_x.shape[0]) - (config.val_split.size if config.val_split is not None else 0)
    n_eval = int(data.test_x.shape[0]) + (config.val_split.size if config.val_split is not None else 0)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    n_probe_train = min(probe_steps * config.batch_size, int(data.train_x.shape[0]))
    n_probe_test = min(config.eval_batch_size, int(data.test_x.shape[0]))
    probe_data = data.subset(n_probe_train, n_probe_test)
    # the probe times plain forward passes (no TTA); each planned epoch then costs its own number of them
    probe_config = TrainConfig.from_dict({**config.to_dict(), "val_split": None, "early_stopping": None,
                                          "tta": "none", "tta_flip": False, "tta_epochs": "all"})

    t0 = time.perf_counter()
    result = train(model, probe_data, probe_config, device=device, progress=False, epochs=2, teacher=teacher)
    probe_s = time.perf_counter() - t0
    timed = result.history[-1]
    train_ips = float(timed["images_per_s"])
    step_s = n_probe_train / train_ips
    eval_s = max(float(timed["epoch_time_s"]) - step_s, 1e-6)
    eval_ips = n_probe_test / eval_s  # forward passes per second

    eval_epoch_s = n_eval * config.epoch_eval_passes / eval_ips  # (the one TTA evaluation at the end is not planned)
    epochs, max_steps, estimated = fit_length(60.0 * float(minutes), steps_per_epoch, config.batch_size / train_ips,
                                              eval_epoch_s)
    return BudgetPlan(
        minutes=float(minutes), epochs=epochs, max_steps_per_epoch=max_steps, steps_per_epoch=steps_per_epoch,
        train_images_per_s=train_ips, eval_images_per_s=eval_ips, estimated_s=estimated, probe_s=probe_s,
    )


def fit_length(budget_s: float, steps_per_epoch: int, step_s: float, eval_s: float) -> tuple[int, int | None, float]:
    """``(epochs, max_steps_per_epoch, estimated_s)`` of the longest run that fits ``budget_s`` seconds,
    for epochs of ``steps_per_epoch`` steps of ``step_s`` seconds each plus one evaluation of ``eval_s``.

    Either ``floor(fit)`` whole epochs, or ``ceil(fit)`` epochs cut to the steps that fit, whichever
    trains on more images (a cut epoch still sees a fresh random part of the training set each time);
    ``max_steps_per_epoch`` is ``None`` for whole epochs. At least one step is always planned.
    """
    fit = budget_s / (steps_per_epoch * step_s + eval_s)

    def steps_that_fit(n_epochs: int) -> int:
        return max(1, min(steps_per_epoch, int((budget_s / n_epochs - eval_s) // step_s)))

    candidates = [(n, steps_that_fit(n)) for n in sorted({max(1, math.floor(fit)), max(1, math.ceil(fit))})]
    epochs, steps = max(candidates, key=lambda c: (c[0] * c[1], -c[0]))
    return epochs, None if steps == steps_per_epoch else steps, epochs * (steps * step_s + eval_s)
