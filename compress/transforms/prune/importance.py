"""Channel importance: the criteria by name, and the gradients the data-aware one (``taylor``) needs."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from .. import _depgraph as dg

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "random": lambda: tp.importance.RandomImportance(),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
}
"""Channel importance criteria by name. ``taylor`` is data-aware (needs ``data=``); ``bn_scale`` ranks
channels by the |gamma| of their batch norm, which is meaningful on a trained model."""


def check_importance(importance: Any) -> None:
    """A one-line ValueError unless ``importance`` names a criterion or is a torch-pruning ``Importance``."""
    if not isinstance(importance, tp.importance.Importance) and importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCES)} or pass a torch_pruning Importance")


def make_importance(importance: Any, data: Any) -> tp.importance.Importance:
    """The torch-pruning criterion for ``importance`` (a name in :data:`IMPORTANCES` or an ``Importance``)."""
    if isinstance(importance, tp.importance.Importance):
        return importance
    check_importance(importance)
    if importance == "taylor" and data is None:
        raise ValueError("importance='taylor' is data-aware: pass data=(inputs, labels) or an iterable of such batches")
    return IMPORTANCES[importance]()


def score(net: nn.Module, groups: list[dg.Group], importance: tp.importance.Importance, *, data: Any,
          device: torch.device, flags: dict[str, bool]) -> None:
    """Score ``groups`` of ``net``; for Taylor importance, first accumulate the gradients of ``data``
    (every parameter trainable meanwhile; ``flags`` are the ``requires_grad`` flags to restore)."""
    if isinstance(importance, tp.importance.GroupTaylorImportance):
        for p in net.parameters():
            p.requires_grad_(True)
        try:
            accumulate_gradients(net, data, device)
        finally:
            dg.restore_requires_grad(net, flags)
    dg.score_groups(groups, importance)


def accumulate_gradients(net: nn.Module, data: Any, device: torch.device) -> None:
    """Accumulate the cross-entropy gradients of ``data`` (a batch or an iterable of batches) in ``net``."""
    batches = [data] if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1]) else data
    net.zero_grad()
    seen = False
    form = "data for importance='taylor' is an (inputs, labels) pair or an iterable of such pairs"
    if torch.is_tensor(batches) or not isinstance(batches, Iterable):
        raise ValueError(f"{form}; got a {type(data).__name__}")
    with torch.enable_grad():
        for i, batch in enumerate(batches):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not torch.is_tensor(batch[1]):
                raise ValueError(f"{form}; batch {i} is a {type(batch).__name__}"
                                 + (f" of shape {tuple(batch.shape)}" if torch.is_tensor(batch) else ""))
            x, y = batch
            out = dg.call_model(net, dg.to_device(x, device))
            if not torch.is_tensor(out):
                raise ValueError("importance='taylor' needs a model whose output is one tensor of class scores")
            if y.is_floating_point() or y.is_complex():
                ok = y.shape == out.shape  # class probabilities
            else:
                y = y.long()
                ok = out.dim() == 2 and y.shape == out.shape[:1] and (
                    not y.numel() or 0 <= int(y.min()) <= int(y.max()) < out.shape[1])
            if not ok:
                span = f" in {int(y.min())}..{int(y.max())}" if y.numel() and not y.is_floating_point() else ""
                raise ValueError(f"data for importance='taylor': batch {i} has labels {y.dtype} {tuple(y.shape)}{span} for "
                                 f"scores {tuple(out.shape)}; labels are class indices in 0..{out.shape[-1] - 1}, one per "
                                 "input (or class probabilities of the scores' shape)")
            F.cross_entropy(out, y.to(device)).backward()
            seen = True
    if not seen:
        raise ValueError("data for importance='taylor' yielded no batches")
    for p in net.parameters():  # frozen layers (e.g. a ZeroPadShortcut): torch-pruning reads every layer's .grad
        if p.grad is None:
            p.grad = torch.zeros_like(p)
