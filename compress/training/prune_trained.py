"""Pruning a trained network, the whole path in one call: sparse learning, the cut, fine-tuning.

:func:`prune_trained` trains the network for ``sparse.epochs`` with a group-sparsity regulariser on the
groups the cut will remove channels from (:class:`~compress.transforms.prune.sparse.Regularizer`, through
the trainer's ``after_backward`` hook), cuts it to the budget with :func:`compress.prune`, and fine-tunes
the result (distilled from the unpruned network if asked). Each phase is optional but the cut. See
docs/transforms/prune.md, "Sparse learning before the cut".
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..data import ImageData
from ..metrics import count_flops, count_params
from .config import DistillConfig, TrainConfig
from .trainer import TrainResult, train
from ..transforms.prune import DEFAULT_INPUT_SIZE, PruneConfig, prune
from ..transforms.prune.sparse import METHODS, Regularizer

__all__ = ["SparseConfig", "PruneTrainedResult", "prune_trained", "sparse_learn"]


@dataclass(frozen=True)
class SparseConfig:
    """Sparse learning before the cut (Torch-Pruning's regularising pruners; see
    :mod:`compress.transforms.prune.sparse`). Values are checked when it is made.

    ``method``: ``"group_norm"`` (DepGraph's group-norm sparsity, ``GroupNormPruner``) or
    ``"growing_reg"`` (``GrowingRegPruner``); ``epochs`` of training with the regulariser; ``reg`` its
    coefficient (Torch-Pruning's CIFAR default 5e-4); ``alpha`` (group_norm) the spread of its
    per-channel scaling; ``delta_reg`` (growing_reg) the growth of the penalty every ``update_every``
    steps (None: once per epoch, as Torch-Pruning does). ``train`` is the training setup of this phase
    (a :class:`~compress.training.TrainConfig` or its dict; its ``epochs`` is replaced by ``epochs``);
    None: the fine-tuning's setup without weight decay and without distillation (Torch-Pruning turns
    weight decay off while it regularises).
    """

    method: Literal["group_norm", "growing_reg"] = "group_norm"
    epochs: int = 10
    reg: float = 5e-4
    alpha: float = 4.0
    delta_reg: float = 1e-4
    update_every: int | None = None
    train: TrainConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"sparse epochs must be a positive integer, got {self.epochs!r}")
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train, "sparse.train"))
        elif self.train is not None and not isinstance(self.train, TrainConfig):
            raise TypeError(f"sparse train must be a TrainConfig, a dict or None, got {type(self.train).__name__}")
        if self.method not in METHODS:
            raise ValueError(f"sparse method must be one of {', '.join(map(repr, METHODS))}, got {self.method!r}")
        self.regularizer(PruneConfig(), 1)  # checks reg, alpha, delta_reg, update_every

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "sparse") -> SparseConfig:
        """Build from a plain dict (a recipe's ``sparse:`` section); unknown keys are a one-line error."""
        if not isinstance(data, dict):
            raise TypeError(f"{where} must be a mapping of SparseConfig fields, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; accepted: {', '.join(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain values that :meth:`from_dict` accepts."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = self.train.to_dict() if self.train is not None else None
        return d

    def regularizer(self, prune: PruneConfig, steps_per_epoch: int) -> Regularizer:
        """A fresh :class:`Regularizer` for a cut with ``prune``, on epochs of ``steps_per_epoch`` steps."""
        return Regularizer(prune, method=self.method, reg=self.reg, alpha=self.alpha, delta_reg=self.delta_reg,
                           update_every=self.update_every if self.update_every is not None else steps_per_epoch)

    def train_config(self, finetune: TrainConfig | None) -> TrainConfig:
        """The training setup of the sparse phase: ``train``, else ``finetune`` without weight decay or distillation."""
        if self.train is not None:
            return dataclasses.replace(self.train, epochs=self.epochs)
        if finetune is None:
            raise ValueError("sparse learning needs a training setup: give SparseConfig(train=...) or finetune=")
        optimizer = dataclasses.replace(finetune.optimizer, weight_decay=0.0)
        return dataclasses.replace(finetune, epochs=self.epochs, optimizer=optimizer, distill=None)


@dataclass
class PruneTrainedResult:
    """What :func:`prune_trained` did: counts before and after the cut (FLOPs by
    :func:`compress.count_flops`), the cut's :class:`PruneConfig`, the regularised groups, and the
    :class:`~compress.training.TrainResult` of each training phase (None where it did not run)."""

    params_before: int
    flops_before: int
    params: int
    flops: int
    prune: PruneConfig
    regularized: list[str]
    sparse: TrainResult | None
    finetune: TrainResult | None

    @property
    def speedup(self) -> float:
        """FLOPs before the cut over FLOPs after it."""
        return self.flops_before / self.flops

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values (the training results without their models)."""
        return {"params_before": self.params_before, "flops_before": self.flops_before, "params": self.params,
                "flops": self.flops, "speedup": self.speedup, "regularized": list(self.regularized),
                "sparse": self.sparse.to_dict() if self.sparse else None,
                "finetune": self.finetune.to_dict() if self.finetune else None}


def sparse_learn(model: nn.Module, data: ImageData, sparse: SparseConfig, prune_config: PruneConfig,
                 config: TrainConfig | None, **train_kwargs: Any) -> tuple[TrainResult, Regularizer]:
    """Sparse learning: ``sparse.epochs`` of :func:`compress.training.train` (``train_kwargs`` passed on)
    with the group-sparsity regulariser on the groups a prune with ``prune_config`` may cut. ``config``
    is the setup the phase defaults to (:meth:`SparseConfig.train_config`). Returns the training's result
    and the regulariser (its ``groups``: what it regularised)."""
    learn = sparse.train_config(config)
    steps = math.ceil(len(data.train_y) / learn.batch_size)
    if train_kwargs.get("max_steps_per_epoch") is not None:
        steps = min(steps, int(train_kwargs["max_steps_per_epoch"]))
    regularizer = sparse.regularizer(prune_config, steps)
    return train(model, data, learn, after_backward=regularizer, **train_kwargs), regularizer


def prune_trained(
    model: nn.Module,
    data: ImageData,
    *,
    target_flops: int | None = None,
    target_params: int | None = None,
    prune_config: PruneConfig | None = None,
    sparse: SparseConfig | None = None,
    finetune: TrainConfig | dict[str, Any] | None = None,
    distill: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    max_steps_per_epoch: int | None = None,
) -> tuple[nn.Module, PruneTrainedResult]:
    """Prune a trained ``model`` to a budget: sparse learning, the cut, fine-tuning. ``model`` is untouched.

    1. With ``sparse`` (a :class:`SparseConfig`): ``sparse.epochs`` of :func:`compress.training.train`
       with a group-sparsity regulariser added after every backward pass to the groups the cut may
       remove channels from (the same selection as the cut: classifier, ignored layers and, with
       ``keep_residual``, residual streams are left alone).
    2. The cut: :func:`compress.prune` with ``prune_config`` (default :meth:`PruneConfig.trained`:
       global L2 ranking, residual streams kept; ``round_to`` rounds kept widths for deployment) and the
       budget ``target_flops`` or ``target_params`` (or the config's own); the result fits it exactly as
       :func:`compress.count_flops` / :func:`compress.count_params` measure.
    3. With ``finetune`` (a :class:`~compress.training.TrainConfig` or its dict): fine-tuning; with
       ``distill=True`` distilled from ``model`` (the config's ``distill`` settings, default
       :class:`~compress.training.DistillConfig`).

    ``out_dir``: the sparse phase's trainer files go to ``out_dir/sparse``, the fine-tuning's to
    ``out_dir/finetune``; ``resume=True`` continues both from there (growing_reg's grown penalties
    restart on a resume of the sparse phase; group_norm keeps no state). ``max_steps_per_epoch`` caps both
    phases (smoke runs). Returns the pruned (fine-tuned) model, on the CPU in eval mode, and a
    :class:`PruneTrainedResult`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prune_trained() takes an nn.Module, got {type(model).__name__}")
    if not isinstance(data, ImageData):
        raise TypeError(f"prune_trained() takes an ImageData (compress.data), got {type(data).__name__}")
    if prune_config is None:
        prune_config = PruneConfig.trained()
    elif not isinstance(prune_config, PruneConfig):
        raise TypeError(f"prune_config must be a PruneConfig, got {type(prune_config).__name__}")
    if target_flops is not None or target_params is not None:
        prune_config = prune_config.replace(target_flops=target_flops, target_params=target_params, ratios=None)
    if prune_config.budget is None:
        raise TypeError("prune_trained() needs a budget: target_flops= or target_params=")
    if sparse is not None and not isinstance(sparse, SparseConfig):
        raise TypeError(f"sparse must be a SparseConfig or None, got {type(sparse).__name__}")
    if isinstance(finetune, dict):
        finetune = TrainConfig.from_dict(finetune, "finetune")
    elif finetune is not None and not isinstance(finetune, TrainConfig):
        raise TypeError(f"finetune must be a TrainConfig, a dict or None, got {type(finetune).__name__}")
    if not isinstance(distill, bool):
        raise TypeError(f"distill must be True or False, got {distill!r}")
    if distill and finetune is None:
        raise ValueError("distill=True distils during fine-tuning: give finetune= too")
    if finetune is not None and finetune.distill is not None and not distill:
        raise ValueError("finetune has distill settings but distill=False: pass distill=True (or drop finetune.distill)")
    if distill and finetune.distill is None:
        finetune = dataclasses.replace(finetune, distill=DistillConfig())
    folder = Path(out_dir) if out_dir is not None else None

    start, sparse_result, regularized = model, None, []
    if sparse is not None:
        sparse_result, regularizer = sparse_learn(
            model, data, sparse, prune_config, finetune, out_dir=folder / "sparse" if folder else None,
            resume=resume, device=device, progress=progress, max_steps_per_epoch=max_steps_per_epoch)
        start = sparse_result.model
        regularized = regularizer.groups or regularizer.bind(copy.deepcopy(start))  # a finished run resumed: no call
    pruned = prune(start, prune_config)
    finetune_result = None
    if finetune is not None:
        finetune_result = train(pruned, data, finetune, out_dir=folder / "finetune" if folder else None, resume=resume,
                                device=device, progress=progress, max_steps_per_epoch=max_steps_per_epoch,
                                teacher=model if distill else None)
        pruned = finetune_result.model
    else:
        pruned = pruned.cpu().eval()
    def flops(m: nn.Module) -> int:  # as the cut measures them: on its inputs, or zeros of its input size
        if prune_config.inputs is not None:
            return count_flops(m, example_input=prune_config.inputs)
        return count_flops(m, tuple(prune_config.input_size or DEFAULT_INPUT_SIZE))

    result = PruneTrainedResult(
        params_before=count_params(model), flops_before=flops(model), params=count_params(pruned), flops=flops(pruned),
        prune=prune_config, regularized=list(regularized), sparse=sparse_result, finetune=finetune_result)
    return pruned, result
