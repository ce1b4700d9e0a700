"""Sparse learning before the cut: Torch-Pruning's regularising pruners, over exactly the groups a
:func:`compress.prune` call would cut.

:class:`Regularizer` is a training hook (``compress.training.train(..., after_backward=reg)``): after
each backward pass it adds a group-sparsity gradient to the network being trained, through
torch-pruning's own ``regularize()``:

- ``"group_norm"``: :class:`torch_pruning.pruner.GroupNormPruner`, DepGraph's sparse learning (Fang et
  al., CVPR 2023): every coupled channel group gets ``reg * gamma * w`` added to its gradients, with
  ``gamma`` from 1 for the group's strongest channel to ``2**alpha`` for its weakest, so weak channels
  are pushed to zero as a whole (all the layers they couple) while strong ones barely move;
- ``"growing_reg"``: :class:`torch_pruning.pruner.GrowingRegPruner` (Wang et al., ICLR 2021): an L2
  penalty per channel that starts at ``reg`` and grows by up to ``delta_reg`` (the most for the weakest
  channels) every ``update_every`` steps (``update_reg()``). In torch-pruning 1.6.1 its penalty
  reaches the convolutions (and linear layers) only: its batch-norm update adds to a copy of the
  gradient (``grad.data[idxs].add_``), so batch-norm weights are not regularised.

Which groups are regularised is decided by prune's own selection (:func:`.engine.target_groups`) for
the :class:`PruneConfig` the cut will use: the classifier's group, ignored layers and (with
``keep_residual``) residual streams are left alone, as the cut leaves them. Both sides trace the same
network, and the hook checks that torch-pruning's groups are those groups, root for root.
"""

from __future__ import annotations

import math
from typing import Any

import torch_pruning as tp
from torch import nn

from .. import _depgraph as dg
from . import engine
from .config import PruneConfig

METHODS = ("group_norm", "growing_reg")
"""The sparse-learning methods: torch-pruning's ``GroupNormPruner`` and ``GrowingRegPruner``."""


def _positive(value: Any, what: str, *, zero: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if zero else value > 0)
    if not ok:
        raise ValueError(f"{what} must be a number {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)


class Regularizer:
    """An ``after_backward`` hook adding a group-sparsity gradient to the groups ``prune`` would cut.

    ``prune`` is the :class:`PruneConfig` of the cut (default :meth:`PruneConfig.trained`); ``method``
    one of :data:`METHODS`; ``reg`` the coefficient; ``alpha`` (group_norm) the spread of the per-channel
    scaling, ``[2**0, 2**alpha]``; ``delta_reg`` and ``update_every`` (growing_reg) how much and how
    often (in steps; None: never) the penalty grows. The hook binds to the first network it is called
    with (traced then, in eval mode so batch-norm statistics are untouched) and refuses another one;
    :attr:`groups` then names the regularised groups (by root layer) and :attr:`steps` counts the calls.
    """

    def __init__(self, prune: PruneConfig | None = None, *, method: str = "group_norm", reg: float = 5e-4,
                 alpha: float = 4.0, delta_reg: float = 1e-4, update_every: int | None = None) -> None:
        if prune is not None and not isinstance(prune, PruneConfig):
            raise TypeError(f"prune must be a PruneConfig, got {type(prune).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
        if update_every is not None and (isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1):
            raise ValueError(f"update_every must be a positive number of steps or None, got {update_every!r}")
        self.prune = prune if prune is not None else PruneConfig.trained()
        self.method = method
        self.reg = _positive(reg, "reg", zero=True)
        self.alpha = _positive(alpha, "alpha", zero=True)
        self.delta_reg = _positive(delta_reg, "delta_reg", zero=True)
        self.update_every = update_every
        self.groups: list[str] = []
        self.steps = 0
        self._net: nn.Module | None = None
        self._pruner: Any = None

    def __call__(self, net: nn.Module) -> None:
        """Add the regulariser's gradient to ``net``'s ``.grad`` fields (after its backward pass)."""
        if self._net is None:
            self.bind(net)
        elif net is not self._net:
            raise ValueError("this Regularizer is bound to another network: make one Regularizer per training run")
        if self.method == "group_norm":
            self._pruner.regularize(net, alpha=2 ** self.alpha)
        else:
            self._pruner.regularize(net)
        self.steps += 1
        if self.method == "growing_reg" and self.update_every and self.steps % self.update_every == 0:
            self._pruner.update_reg()

    def bind(self, net: nn.Module) -> list[str]:
        """Bind to ``net`` (done by the first call): trace it as prune would, build torch-pruning's pruner
        over the same groups, and return their names (:attr:`groups`). ``net`` keeps its weights and mode."""
        if self._net is not None:
            if net is not self._net:
                raise ValueError("this Regularizer is bound to another network: make one Regularizer per training run")
            return self.groups
        was_training = net.training
        flags = {n: p.requires_grad for n, p in net.named_parameters()}
        net.eval()
        try:
            s = engine.setup(net, self.prune)
            state = engine.trace_state(s, net)
            eligible = engine.target_groups(s, state)
            ours = [g.key for g in state.groups if g.key in eligible]
            if not ours:
                raise dg.PruneError("sparse learning: the prune config leaves no group to regularise (every group is "
                                    "ignored, protected or a residual stream)")
            # torch-pruning skips a group if one of its out-channel layers is ignored: ignoring every
            # out-channel layer of the groups prune leaves alone leaves exactly prune's groups
            graph = state.traced.graph
            ignored = list(state.ignored) + [d.target.module for g in state.groups if g.key not in eligible
                                             for d, _ in g.items if isinstance(d.target.module, nn.Module)
                                             and graph.is_out_channel_pruning_fn(d.handler)]
            params = dict(net.named_parameters())
            common = dict(example_inputs=s.inputs, ignored_layers=ignored, num_heads=dict(state.num_heads),
                          unwrapped_parameters=[(params[n], d) for n, d in s.unwrapped_by_name.items()] or None,
                          forward_fn=dg.call_model, root_module_types=list(dg.ROOT_TYPES))
            for p in net.parameters():  # autograd is how torch-pruning traces (as for prune's own trace)
                p.requires_grad_(True)
            if self.method == "group_norm":  # Torch-Pruning's reproduce/ settings for CIFAR
                importance = tp.importance.GroupMagnitudeImportance(p=2, normalizer="max")
                pruner = tp.pruner.GroupNormPruner(net, importance=importance, reg=self.reg, alpha=self.alpha, **common)
            else:
                importance = tp.importance.GroupMagnitudeImportance(p=2)
                pruner = tp.pruner.GrowingRegPruner(net, importance=importance, reg=self.reg, delta_reg=self.delta_reg, **common)
            names = {m: n for n, m in net.named_modules()}
            theirs = [names.get(tg[0].dep.target.module, "?") for tg in
                      pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)]
            if sorted(theirs) != sorted(ours):
                raise dg.PruneError(f"sparse learning: torch-pruning's groups ({', '.join(theirs) or 'none'}) are not the "
                                    f"groups prune cuts ({', '.join(ours)}); please report it")
        finally:
            dg.restore_requires_grad(net, flags)
            net.train(was_training)
        self.groups, self._net, self._pruner = ours, net, pruner
        return ours
