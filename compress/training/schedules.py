"""The named training schedules every recipe can be trained with (``compress-bench --budget fast``).

Plain dicts in :class:`~compress.training.TrainConfig`'s form (a recipe's ``fast:`` section overrides
single fields); :mod:`compress.recipes` re-exports them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAST_TRAIN", "FAST_TRAIN_V1", "FAST_TRAIN_V2", "TIME_BUDGET_TRAIN"]

#: The shared ``fast`` schedule: 10 epochs of the training ideas of airbench (github.com/KellerJordan/
#: cifar10-airbench) applied to any compress model: Nesterov SGD with the learning rate and weight decay
#: given per 1024 examples (decoupled from batch size and momentum), a linear warm-up over the first 23%
#: of the steps then a linear decay, label smoothing 0.2, random translation by up to 2 pixels (reflect
#: padding) and alternating flips, and mirror + translate test-time augmentation of the final model (each
#: epoch is evaluated without it). What each of these is worth on recipe 004 is measured by
#: ``benchmarks/train_curve.py`` (docs/training.md). Batch 128: on recipe 004 it reached 89.24% where
#: batch 512 reached 86.65%, in the same time per epoch on the CPU (the rates per 1024 examples need no
#: change for it). No Lookahead, unlike airbench: on recipe 004 it cost 1.30 points at 5 epochs and 0.44
#: at 10 (:data:`FAST_TRAIN_V2` has it). A recipe's optional ``fast:`` section overrides individual fields.
FAST_TRAIN: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 128,
    "optimizer": {"name": "sgd", "lr": 8.0, "momentum": 0.9, "nesterov": True, "weight_decay": 4e-3,
                  "decoupled": True},
    "schedule": {"name": "linear", "pct_start": 0.23, "start_factor": 0.2, "end_factor": 0.0, "interval": "step"},
    "augment": [{"name": "translate", "params": {"pixels": 2}}, {"name": "alternating_flip", "params": {}}],
    "label_smoothing": 0.2,
    "tta": "mirror_translate",
    "tta_epochs": "last",
    "eval_batch_size": 1000,
}

#: :data:`FAST_TRAIN` with Lookahead every 5 steps on airbench's ramp (an average that grows as training
#: ends): the ``fast`` schedule from the morning of 2026-12-02 until the evening, which trained the
#: first rows of the 10-epoch table (002b, resnet18) and the 5-epoch ablation on 004.
FAST_TRAIN_V2: dict[str, Any] = {**FAST_TRAIN, "lookahead": {"k": 5, "alpha": 0.2262, "ramp": 3.0}}

#: The ``fast`` schedule before :data:`FAST_TRAIN_V2` (until 2026-12-02; the 15-minute CPU table and the
#: ablations of that day ran it): 20 epochs of one-cycle SGD (Nesterov) stepped per batch, batch 512,
#: label smoothing 0.1, crop + flip, no test-time augmentation. Kept for ``benchmarks/train_curve.py``'s
#: comparison.
FAST_TRAIN_V1: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 512,
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "schedule": {"name": "onecycle", "pct_start": 0.25, "interval": "step"},
    "augment": [{"name": "random_crop", "params": {"padding": 4}}, {"name": "hflip", "params": {"p": 0.5}}],
    "label_smoothing": 0.1,
    "eval_batch_size": 1000,
}

#: With a time budget (``compress-bench --time-budget MIN``) the fast schedule gets these on top, and a
#: probe fixes its length (:mod:`compress.training.budget`). Batch 128 (now also :data:`FAST_TRAIN`'s)
#: gives a short run on slow hardware (a CPU) many optimizer steps; the schedule is laid over the steps
#: that fit.
TIME_BUDGET_TRAIN: dict[str, Any] = {
    "batch_size": 128,
}
