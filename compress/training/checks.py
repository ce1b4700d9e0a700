"""What :func:`~compress.training.train` checks before it starts, and what it calls a diverged run.

:func:`check_inputs` runs first in ``train`` and in ``compress-bench`` before anything is written: every
way the model, the data and the config can fail to fit together is one ``ValueError`` naming the
problem and the accepted values, instead of a traceback (or a wrong number) minutes later.

:func:`check_diverged` is the divergence guard the trainer runs at the end of every epoch, before the
epoch is recorded: a NaN or infinite loss, a loss above :data:`DIVERGED_LOSS`, or a NaN/infinite weight
raises :class:`NonFiniteLossError`. So no checkpoint, history or result ever holds a diverged epoch, and
a diverged run is never reported as a measurement.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from .config import TrainConfig

__all__ = ["check_inputs", "check_diverged", "check_loss", "check_weights", "NonFiniteLossError", "DIVERGED_LOSS", "DIVERGED_WEIGHT"]

#: A mean cross-entropy above this is divergence, not learning (a uniform guess scores ln(classes), 2.3 for 10).
DIVERGED_LOSS = 1e4

#: A test or validation loss above DIVERGED_LOSS is divergence only when a weight has also grown past this.
#: Without it, a deep network in its first few steps can show a finite but huge eval-mode loss (its BN
#: running statistics have not caught up yet: ResNet-68 of recipe 004 measures 1e9 after 6 steps, with
#: weights below 2), which is a measurement of that network, not a diverged run (lr 1e6 for one step
#: gives weights near 1e5).
DIVERGED_WEIGHT = 1e3


class NonFiniteLossError(FloatingPointError):
    """Training diverged (NaN/inf or exploding loss, or NaN/inf weights); the last good checkpoint, if any, is kept."""


def check_inputs(
    model: nn.Module,
    data: ImageData,
    config: TrainConfig,
    *,
    epochs: int | None = None,
    max_steps_per_epoch: int | None = None,
    world_size: int = 1,
) -> None:
    """Raise ``ValueError`` (one line: the problem and the accepted values) if :func:`train` cannot run
    these inputs or would report a number that is not a measurement. Writes nothing, changes nothing
    (the model is run once on a blank image in eval mode and put back in its mode)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"train() takes an nn.Module, got {type(model).__name__}")
    if not isinstance(data, ImageData):
        raise TypeError(f"train() takes a compress.data.ImageData, got {type(data).__name__}")
    n_epochs = epochs if epochs is not None else config.epochs
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {n_epochs!r}")
    if max_steps_per_epoch is not None and (
        isinstance(max_steps_per_epoch, bool) or not isinstance(max_steps_per_epoch, int) or max_steps_per_epoch < 1
    ):
        raise ValueError(f"max_steps_per_epoch must be an integer >= 1 or None, got {max_steps_per_epoch!r}")
    n_train, n_test = len(data.train_y), len(data.test_y)
    if n_train == 0:
        raise ValueError(f"the data ({data.name}) has no training images")
    if n_test == 0:
        raise ValueError(f"the data ({data.name}) has no test images: an accuracy over no images is not a measurement")
    channels = data.train_x.shape[1]
    if channels != len(config.normalize.mean):
        raise ValueError(f"the images have {channels} channel(s) but normalize.mean/std give {len(config.normalize.mean)}; "
                         "compress trains on RGB images (3 channels)")
    if config.val_split is not None and data.val_x is None and not 0 < config.val_split.size < n_train:
        raise ValueError(f"val_split.size must be in 1..{n_train - 1} (the data has {n_train} training images), "
                         f"got {config.val_split.size}")
    has_val = data.val_x is not None or config.val_split is not None
    if config.early_stopping is not None and config.early_stopping.metric.startswith("val") and not has_val:
        raise ValueError(f"early_stopping on {config.early_stopping.metric} needs a validation split (val_split)")
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {world_size} processes")
    n_fit = n_train - (config.val_split.size if config.val_split is not None and data.val_x is None else 0)
    if world_size > 1 and n_fit < config.batch_size:
        raise ValueError(f"{n_fit} training images give no full batch of {config.batch_size}")
    outputs = _outputs(model, tuple(data.train_x.shape[1:]))
    if outputs < data.num_classes:
        raise ValueError(f"the model predicts {outputs} classes but the data ({data.name}) has {data.num_classes}; "
                         f"labels must be in 0..{outputs - 1}")


def _outputs(model: nn.Module, chw: tuple[int, ...]) -> int:
    """The number of classes ``model`` predicts, from one forward pass on a blank image of shape ``chw``."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *chw, device=device))
    except Exception as e:  # noqa: BLE001 - any failure means the model cannot take these images
        raise ValueError(f"the model cannot take the data's {'x'.join(map(str, chw))} images "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(f"the model must return class scores of shape (batch, classes), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return int(out.shape[1])


def check_diverged(row: dict[str, Any], nets: list[nn.Module], ckpt_path: Path | None) -> None:
    """Raise :class:`NonFiniteLossError` if an epoch's ``row`` (its ``*_loss`` values) or the weights of
    ``nets`` show divergence; the message names the last good checkpoint, which never holds such an epoch."""
    epoch = row["epoch"]
    check_weights(nets, f"in epoch {epoch}", ckpt_path)
    for key, value in row.items():
        if not key.endswith("_loss") or _sane(value):
            continue
        what = f"{key.replace('_', ' ')} is {value:.4g} in epoch {epoch}"
        if key == "train_loss" or not math.isfinite(value):
            _diverged(what, ckpt_path)
        largest = _largest_weight(nets)
        if largest > DIVERGED_WEIGHT:  # a huge eval loss with sane weights is a poor network, measured
            _diverged(f"{what}, with weights up to {largest:.3g}", ckpt_path)


def check_weights(nets: list[nn.Module], when: str, ckpt_path: Path | None) -> None:
    """Raise :class:`NonFiniteLossError` if a weight or buffer of ``nets`` is NaN or infinite (``when``:
    where in the run, for the message). Run before every checkpoint, so none holds such weights."""
    for net in nets:
        tensors = [t for t in net.state_dict().values() if t.is_floating_point()]
        if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            _diverged(f"weights became NaN or infinite {when}", ckpt_path)


def _largest_weight(nets: list[nn.Module]) -> float:
    return max((float(p.detach().abs().max()) for net in nets for p in net.parameters()
                if p.is_floating_point() and p.numel()), default=0.0)


def check_loss(value: float, epoch: int, step: int, ckpt_path: Path | None) -> None:
    """The in-epoch guard: raise :class:`NonFiniteLossError` if the mean training loss so far is not sane."""
    if not _sane(value):
        _diverged(f"training loss became {value:.4g} in epoch {epoch + 1} (by step {step + 1})", ckpt_path)


def _sane(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= DIVERGED_LOSS


def _diverged(what: str, ckpt_path: Path | None) -> None:
    if ckpt_path is not None and ckpt_path.is_file():
        where = f"the last good checkpoint is kept at {ckpt_path}"
    else:
        where = "no checkpoint was written before it"
    raise NonFiniteLossError(
        f"training diverged: {what} (NaN, infinite, or above {DIVERGED_LOSS:g}); stopping, nothing of this epoch "
        f"is recorded; {where}. Lower the learning rate, add gradient clipping, or use amp: none to rule out overflow."
    )
