"""Dependency-graph structured pruning (through torch-pruning) at per-layer ratios or to a budget."""

from __future__ import annotations

import copy
import fnmatch
import math
import re
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from ..metrics import count_flops, count_params
from ..models.resnet import ResNet

__all__ = ["prune", "prunable_layers", "IMPORTANCES"]

Ratios = Union[float, Mapping[Union[str, int], float]]

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "random": lambda: tp.importance.RandomImportance(),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
}
"""Channel importance criteria by name. ``taylor`` is data-aware (needs ``data=``); ``bn_scale`` ranks
channels by the |gamma| of their batch norm, which is meaningful on a trained model."""

_MAX_SEARCH_RATIO = 0.99


def prune(
    model: nn.Module,
    ratios: Ratios | None = None,
    *,
    importance: str | tp.importance.Importance = "l1",
    round_to: int | None = None,
    mode: Literal["one-shot", "sequential"] = "one-shot",
    target_params: int | None = None,
    target_flops: int | None = None,
    ignore: Sequence[str] = (),
    data: Any = None,
    input_size: Sequence[int] = (1, 3, 32, 32),
) -> nn.Module:
    """Return a copy of ``model`` with output channels physically removed; ``model`` is untouched.

    ``ratios`` is the fraction of output channels to remove, in [0, 1):

    - a float: every prunable conv/linear layer (the classifier's outputs are never pruned);
    - a mapping from module names, glob patterns (``"layer4.*.conv1"``; a name also covers the modules
      inside it, so ``"layer4"`` is the whole stage) or block indices (``3``: the 4th residual block,
      counted across stages; its convs but not its shortcut) to ratios. Later keys override earlier
      ones. Layers coupled through a residual connection are pruned together, so they must not be given
      different ratios.

    ``mode="one-shot"`` removes ``int(r * n)`` channels from each coupled group at once (n: its width).
    ``mode="sequential"`` visits the matched layers in order and removes ``int(r * n)`` of their
    *current* width, so ratios compound along a residual stream (the procedure of report 002a).
    ``round_to`` rounds each kept width to a multiple of it. ``importance`` names a criterion in
    :data:`IMPORTANCES` (``"l1"``, ``"l2"``, ``"random"``, ``"bn_scale"``, ``"taylor"``) or is a
    torch-pruning ``Importance``; ``"taylor"`` needs ``data``: an ``(inputs, labels)`` pair or an
    iterable of them, used to compute loss gradients.

    Budget mode: give ``target_params`` or ``target_flops`` (instead of ``ratios``) and the smallest
    uniform ratio whose result is at most that budget is found. FLOPs are counted at ``input_size``.
    Layers whose names match a pattern in ``ignore`` are never pruned. A compress ResNet comes back as
    a ResNet whose config describes the pruned widths, so it can be saved and loaded.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prune() takes an nn.Module, got {type(model).__name__}")
    if mode not in ("one-shot", "sequential"):
        raise ValueError(f"mode must be 'one-shot' or 'sequential', got {mode!r}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to must be a positive integer or None, got {round_to!r}")
    if isinstance(ignore, str):
        ignore = (ignore,)
    imp = _importance(importance, data)
    kwargs = dict(importance=imp, round_to=round_to, mode=mode, ignore=tuple(ignore), data=data, input_size=input_size)
    if target_params is not None or target_flops is not None:
        if ratios is not None:
            raise TypeError("give either ratios or a budget (target_params / target_flops), not both")
        return _prune_to_budget(model, target_params, target_flops, kwargs)
    if ratios is None:
        raise TypeError("prune() needs ratios (a float or a mapping) or a budget (target_params / target_flops)")
    return _prune(model, ratios, **kwargs)


def prunable_layers(model: nn.Module, ignore: Sequence[str] = (), input_size: Sequence[int] = (1, 3, 32, 32)) -> dict[str, nn.Module]:
    """The layers :func:`prune` may remove output channels from, by name (the classifier excluded)."""
    classifier = _classifier(model, input_size)
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not classifier and not _matches_any(name, ignore):
            layers[name] = m
    return layers


# --- ratio resolution ------------------------------------------------------------------------------

def _check_ratio(value: Any, key: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"ratio for {key!r} must be a number in [0, 1), got {type(value).__name__} {value!r}")
    if not 0 <= value < 1 or math.isnan(value):
        raise ValueError(f"ratio {value!r} for {key!r} is outside [0, 1): it is the fraction of channels removed")
    return float(value)


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".") or (
        any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern + ".*")
    )


def _matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(_matches(name, p) for p in patterns)


def _blocks(model: nn.Module) -> list[str]:
    """Names of the residual blocks in order (``layerN.M``)."""
    if isinstance(model, ResNet):
        return [f"layer{i + 1}.{j}" for i, s in enumerate(model.config.stages) for j in range(len(s.blocks))]
    return [n for n, _ in model.named_modules() if re.fullmatch(r"layer\d+\.\d+", n)]


def _resolve(model: nn.Module, ratios: Ratios, layers: dict[str, nn.Module]) -> dict[str, float]:
    """Map every prunable layer name to its ratio (layers not mentioned are absent)."""
    if isinstance(ratios, Mapping):
        items = list(ratios.items())
    elif isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        items = [("*", ratios)]
    else:
        raise TypeError(f"ratios must be a float or a mapping of layer names/patterns/block indices to floats, got {type(ratios).__name__}")
    resolved: dict[str, float] = {}
    blocks = None
    for key, value in items:
        r = _check_ratio(value, key)
        if isinstance(key, int) and not isinstance(key, bool):
            blocks = blocks if blocks is not None else _blocks(model)
            if not -len(blocks) <= key < len(blocks):
                raise ValueError(f"block index {key} is out of range: the model has {len(blocks)} residual blocks (0..{len(blocks) - 1})")
            block = blocks[key]
            names = [
                n for n in layers
                if n.startswith(block + ".") and not re.match(r"(shortcut|downsample|se)\b", n[len(block) + 1:])
            ]
        elif isinstance(key, str):
            names = [n for n in layers if _matches(n, key)]
        else:
            raise TypeError(f"ratio keys must be layer names, glob patterns or block indices, got {key!r}")
        if not names:
            sample = ", ".join(list(layers)[:6])
            raise ValueError(
                f"{key!r} matches no prunable layer; prunable layers are named like {sample}, ... "
                f"({len(layers)} in all; see compress.transforms.prunable_layers(model))"
            )
        for n in names:
            resolved[n] = r
    order = list(layers)
    return {n: resolved[n] for n in order if n in resolved}


# --- the pruning itself -----------------------------------------------------------------------------

def _importance(importance: Any, data: Any) -> tp.importance.Importance:
    if isinstance(importance, tp.importance.Importance):
        return importance
    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCES)} or pass a torch_pruning Importance")
    if importance == "taylor" and data is None:
        raise ValueError("importance='taylor' is data-aware: pass data=(inputs, labels) or an iterable of such batches")
    return IMPORTANCES[importance]()


def _classifier(model: nn.Module, input_size: Sequence[int]) -> nn.Module | None:
    """The layer producing the model's outputs (never pruned): the last Linear, else the last conv."""
    if isinstance(model, ResNet):
        return model.linear
    for kind in (nn.Linear, nn.Conv2d):
        found = [m for m in model.modules() if isinstance(m, kind)]
        if found:
            return found[-1]
    return None


def _n_prune(n: int, ratio: float, round_to: int | None) -> int:
    keep = n - int(ratio * n)
    if round_to:
        keep = min(n, max(round_to, round_to * round(keep / round_to)))
    return n - keep


def build_graph(net: nn.Module, input_size: Sequence[int]) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``net``, traced on a zero input of ``input_size``."""
    device = next(net.parameters()).device
    try:
        return tp.DependencyGraph().build_dependency(net, example_inputs=torch.zeros(*input_size, device=device))
    except Exception as e:  # noqa: BLE001 - torch-pruning raises many kinds on untraceable models
        raise TypeError(f"prune() cannot trace {type(net).__name__} into a dependency graph: {e}") from e


def prune_weakest(graph: tp.DependencyGraph, group, importance: tp.importance.Importance, n: int) -> None:
    """Remove the ``n`` channels of ``group`` that ``importance`` scores lowest, in every coupled layer."""
    idxs = torch.argsort(importance(group))[:n].tolist()
    root = group[0].dep
    graph.get_pruning_group(root.target.module, root.handler, idxs).prune()


def _accumulate_gradients(net: nn.Module, data: Any, device: torch.device) -> None:
    batches = [data] if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]) else data
    net.zero_grad()
    seen = False
    for x, y in batches:
        F.cross_entropy(net(x.to(device)), y.to(device)).backward()
        seen = True
    if not seen:
        raise ValueError("data for importance='taylor' yielded no batches")
    for p in net.parameters():  # frozen layers (e.g. a ZeroPadShortcut): torch-pruning reads every layer's .grad
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _prune(
    model: nn.Module,
    ratios: Ratios,
    *,
    importance: tp.importance.Importance,
    round_to: int | None,
    mode: str,
    ignore: tuple[str, ...],
    data: Any,
    input_size: Sequence[int],
) -> nn.Module:
    layers = prunable_layers(model, ignore, input_size)
    resolved = _resolve(model, ratios, layers)  # validates before any copy is made
    net = copy.deepcopy(model)
    was_training = net.training
    net.eval()
    names = {m: n for n, m in net.named_modules()}
    layers = {n: m for n, m in net.named_modules() if n in layers}
    ignored = [m for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in layers]
    device = next(net.parameters()).device
    graph = build_graph(net, input_size)
    if isinstance(importance, tp.importance.GroupTaylorImportance):
        _accumulate_gradients(net, data, device)

    def out_members(group) -> list[nn.Module]:
        return [d.target.module for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)]

    if mode == "one-shot":
        handled: set[str] = set()
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
            members = [names[m] for m in out_members(group) if names.get(m) in resolved]
            handled.update(members)
            found = {resolved[n] for n in members}
            if not found:
                continue
            if len(found) > 1:
                detail = ", ".join(f"{n}={resolved[n]}" for n in members)
                raise ValueError(
                    f"these layers share channels through a residual connection and must be pruned "
                    f"together, but were given different ratios: {detail}"
                )
            n = graph.get_out_channels(group[0].dep.target.module)
            k = _n_prune(n, found.pop(), round_to)
            if k:
                prune_weakest(graph, group, importance, k)
        blocked = [n for n in resolved if n not in handled and isinstance(ratios, Mapping) and n in ratios]
        if blocked:  # named explicitly (patterns and plain floats simply skip coupled-to-ignored layers)
            raise ValueError(f"{', '.join(blocked)} cannot be pruned: coupled with an ignored layer or the classifier")
    else:
        for name, ratio in resolved.items():
            module = layers[name]
            fn = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
            n = graph.get_out_channels(module)
            group = graph.get_pruning_group(module, fn, list(range(n)))
            blocked = [names[m] for m in out_members(group) if m in ignored]
            if blocked:
                raise ValueError(f"{name} cannot be pruned: it shares channels with ignored layer(s) {', '.join(blocked)}")
            k = _n_prune(n, ratio, round_to)
            if k:
                prune_weakest(graph, group, importance, k)

    net.zero_grad(set_to_none=True)
    if isinstance(net, ResNet):
        net.config = net.config_from_modules()
    with torch.no_grad():
        net(torch.zeros(*input_size, device=device))  # a pruned model that cannot run is a bug: fail here
    net.train(was_training)
    return net


def _prune_to_budget(model: nn.Module, target_params: int | None, target_flops: int | None, kwargs: dict) -> nn.Module:
    if target_params is not None and target_flops is not None:
        raise TypeError("give one budget: target_params or target_flops")
    if target_params is not None:
        budget, what, measure = target_params, "params", count_params
    else:
        budget, what = target_flops, "FLOPs"
        measure = lambda m: count_flops(m, kwargs["input_size"])  # noqa: E731
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"target_{what.lower()} must be a positive integer, got {budget!r}")
    if measure(model) <= budget:
        return copy.deepcopy(model)
    smallest = _prune(model, _MAX_SEARCH_RATIO, **kwargs)
    floor = measure(smallest)
    if floor > budget:
        raise ValueError(
            f"no ratio reaches {budget:,} {what}: pruning {_MAX_SEARCH_RATIO:.0%} of every prunable layer "
            f"still leaves {floor:,}"
        )
    lo, hi, best = 0.0, _MAX_SEARCH_RATIO, smallest
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        candidate = _prune(model, mid, **kwargs)
        if measure(candidate) <= budget:
            hi, best = mid, candidate
        else:
            lo = mid
    return best
