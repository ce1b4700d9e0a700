"""Dependency-graph structured pruning (through torch-pruning): at ratios, ranked per layer or across
layers, in one shot or in steps, or to a params/FLOPs budget. See docs/transforms/prune.md.

One verb and one plain config: ``prune(model, PruneConfig(...))``, with any field given as a keyword
override (``prune(model, PruneConfig.trained(), target_flops=...)``, or just ``prune(model, 0.5)``).
The package's modules each do one job: :mod:`.config` (the config and its presets), :mod:`.select`
(which layers), :mod:`.plan` (ratios to channel counts, no model needed), :mod:`.search` (the budget
search), :mod:`.importance`, :mod:`.engine` (the one engine over torch-pruning) and :mod:`.vocab`
(Torch-Pruning's argument names); :mod:`.sparse` is sparse learning before a cut (a training hook over
the groups the cut would take; :func:`compress.prune_trained` runs the whole path).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

from torch import nn

from .._depgraph import PruneError
from . import engine, vocab
from .config import DEFAULT_INPUT_SIZE, FIELDS, PRESETS, RANKINGS, TRAINED, UNTRAINED, PruneConfig, check_fields  # noqa: F401
from .importance import IMPORTANCES, make_importance
from .select import Ratios
from .vocab import TORCH_PRUNING_ALIASES

__all__ = ["prune", "prunable_layers", "PruneConfig", "IMPORTANCES", "PruneError", "TRAINED", "UNTRAINED"]

KEYWORDS = FIELDS + ("preset",) + tuple(TORCH_PRUNING_ALIASES)
"""The keywords prune() takes besides the model and the config (``trained`` too, deprecated)."""

# None for these means "the config's value" (as it meant "the default" before PruneConfig)
_NONE_IS_UNSET = ("importance", "ranking", "keep_residual")


def prune(
    model: nn.Module,
    config: PruneConfig | Ratios | None = None,
    *,
    preset: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Return a copy of ``model`` with channels physically removed; ``model`` is untouched.

    ``config`` is a :class:`PruneConfig` (or, as before it existed, the ``ratios``); ``preset`` names
    one (``"untrained"``, the default, or ``"trained"``: :meth:`PruneConfig.trained`); every keyword
    in ``overrides`` is a :class:`PruneConfig` field that replaces the config's value, or one of
    Torch-Pruning's argument names (see :meth:`PruneConfig.from_torch_pruning`). So
    ``prune(model, PruneConfig.trained(), target_flops=n)`` and ``prune(model, 0.5, round_to=8)``.

    **Ratios.** ``ratios`` is the fraction of channels to remove, in [0, 1): a float for every prunable
    layer, or a mapping from module names, glob patterns (``"layer4.*.conv1"``; a name also covers the
    modules inside it) or block indices (``3``: the 4th residual block, its convs but not its shortcut)
    to ratios; later keys override earlier ones; layers not mentioned keep their channels. Layers that
    share channels (a residual stream, a depthwise conv and its input) form one group and are pruned
    together, so they must not be given different ratios. A group of ``n`` channels keeps
    ``int(n * (1 - r))`` of them, as in Torch-Pruning.

    **Ranking.** ``"local"``: every group loses its own ``r`` (uniform widths). ``"global"``: channels are
    ranked across all groups (scores normalised per group) and the weakest ``r`` of all of them go, so
    widths become uneven; no group loses more than ``max_ratio`` of its channels or its last channel.
    ``"isomorphic"``: ranked across groups of the same structure only. With a mapping, each key's
    layers are ranked together. All groups are scored before any is pruned. ``steps=k`` reaches the
    target in k equal steps, scoring again after each (and recomputing gradients for ``taylor``).

    **Budget.** ``target_params`` / ``target_flops`` instead of ``ratios``: the smallest ratio (uniform
    with local ranking, global with global ranking) whose result fits the budget; FLOPs are counted on
    ``inputs`` (or zeros of ``input_size``, default 1x3x32x32), as :func:`compress.count_flops` counts
them. A budget the model already fits is a ``UserWarning`` (the result is an unpruned copy). ``mode="sequential"`` instead visits the
    matched layers in order and removes ``int(r * n)`` of their *current* width, so ratios compound
    along a residual stream (the procedure of torch-pruning 0.2.8 and report 002a).

    **Rounding.** ``round_to`` rounds each kept width *down* to a multiple of it (Torch-Pruning's rule).

    **Importance.** ``importance`` names a criterion in :data:`IMPORTANCES` (default ``"l1"``) or is a
    torch-pruning ``Importance``; ``"taylor"`` needs ``data``: an ``(inputs, labels)`` pair or an
    iterable of them.

    **Trained networks.** ``keep_residual=True`` leaves every residual stream whole (the channels that
    meet in an addition: a ResNet's stem, each block's last conv and the shortcuts) and prunes only
    inside the blocks. :meth:`PruneConfig.trained` (``preset="trained"``) is what kept most accuracy
    when a trained ResNet-56 was pruned to half its FLOPs (``benchmarks/results/prune-criteria-resnet56.json``):
    ``ranking="global"`` (per layer in sequential mode), ``importance="l2"``, ``keep_residual=True``;
    overrides win over it. The defaults are ``"local"``, ``"l1"`` and ``False`` (uniform widths, as the
    reports pruned). ``trained=True`` still selects the trained preset but is deprecated.

    **What is never pruned.** Layers matching a pattern in ``ignore`` (and the layers sharing their
    channels); a frozen patch-whitening layer (:func:`~compress.transforms.whiten_stem`) and the input
    channels of the stem conv it feeds; the channels of the model's outputs: ``outputs="all"`` protects every output, or give the
    output keys/indices to protect (``["out"]`` for a dict output; ``[]`` protects none). A request that
    would leave a layer with no channels, or a grouped conv with different channels in different
    groups, is a ``ValueError`` naming the layer (:class:`PruneError`).

    **Other models.** ``inputs`` are example inputs for tracing and the final check: a tensor, a tuple
    (positional) or a dict (keyword), e.g. a real batch for data-dependent branches. ``num_heads``
    (``{layer name: heads}``) keeps attention heads whole: head dims are removed alike in every head
    (``nn.MultiheadAttention`` heads are read from the module). ``unwrapped`` gives the pruned dim of
    parameters outside any layer (``{"class_token": 2}``; by default their last non-singleton dim).
    ``fix(pruned)`` runs after pruning and before the check forward, to update attributes that store
    widths (torchvision's ViT ``hidden_dim`` is fixed automatically). Torch-Pruning's argument names
    (``pruning_ratio``, ``pruning_ratio_dict``, ``global_pruning``, ``isomorphic``,
    ``max_pruning_ratio``, ``iterative_steps``, ``ignored_layers``, ``example_inputs``,
    ``unwrapped_parameters``) are accepted as overrides too.

    A compress ResNet comes back as a ResNet whose config describes the pruned widths.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prune() takes an nn.Module, got {type(model).__name__}")
    cfg = _config(model, config, preset, overrides)
    if cfg.ratios is None and cfg.budget is None:
        raise TypeError("prune() needs ratios (a float or a mapping) or a budget (target_params / target_flops)")
    importance = make_importance(cfg.importance, cfg.data)
    s = engine.setup(model, cfg)
    if cfg.mode == "sequential":
        return engine.sequential(s, importance)
    return engine.one_shot(s, importance)


def _config(model: nn.Module, config: Any, preset: str | None, overrides: dict[str, Any]) -> PruneConfig:
    """The PruneConfig of one prune() call: ``config`` (or the preset) with ``overrides`` applied."""
    overrides = dict(overrides)
    if config is not None and not isinstance(config, PruneConfig):  # prune(model, 0.5): the ratios
        if "ratios" in overrides:
            raise TypeError("prune() got ratios twice: give them positionally or as ratios=, not both")
        overrides["ratios"] = config
        config = None
    if "trained" in overrides:
        trained = overrides.pop("trained")
        if not isinstance(trained, bool):
            raise TypeError(f"trained must be True or False, got {trained!r}")
        warnings.warn("prune(trained=...) is deprecated: pass PruneConfig.trained() (or preset='trained') instead",
                      DeprecationWarning, stacklevel=3)
        if preset is not None or config is not None:
            raise TypeError("give trained= or a PruneConfig/preset=, not both")
        preset = "trained" if trained else "untrained"
    names = {k: overrides.pop(k) for k in list(overrides) if vocab.is_torch_pruning_name(k)}
    check_fields(overrides, accepted=KEYWORDS, what="prune()")
    for k in _NONE_IS_UNSET:
        if k in overrides and overrides[k] is None:
            del overrides[k]
    if names:
        overrides = vocab.translate(model, names, overrides)
    if config is None:
        return PruneConfig.preset(preset or "untrained", **overrides)
    if preset is not None:
        raise TypeError("give a PruneConfig or preset=, not both")
    return config.replace(**overrides)


def prunable_layers(
    model: nn.Module,
    ignore: Sequence[str] = (),
    input_size: Sequence[int] | None = None,
    *,
    inputs: Any = None,
    outputs: str | Sequence[str | int] = "all",
) -> dict[str, nn.Module]:
    """The layers :func:`prune` may remove output channels from, by name (of ``model``).

    Excluded: layers matching ``ignore`` and those sharing channels with them, layers whose channels
    are a protected output (the classifier), and groups of a single channel.
    """
    s = engine.setup(model, PruneConfig(ignore=ignore, outputs=outputs, inputs=inputs, input_size=input_size))
    state = engine.start(s)
    names = {n for g in state.groups if state.blocked(g, False) is None for n in g.members}
    return {n: m for n, m in model.named_modules() if n in names}
