"""Dependency-graph structured pruning (through torch-pruning): at ratios, ranked per layer or across
layers, in one shot or in steps, or to a params/FLOPs budget. See docs/transforms/prune.md."""

from __future__ import annotations

import copy
import fnmatch
import math
import re
import sys
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from ..models.resnet import ResNet, WhiteningConv
from . import _depgraph as dg
from ._cost import CostModel, measure
from ._depgraph import PruneError

__all__ = ["prune", "prunable_layers", "IMPORTANCES", "PruneError", "TRAINED", "UNTRAINED"]

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

RANKINGS = ("local", "global", "isomorphic")

#: ``prune``'s defaults for a freshly built network (uniform widths, as the reports pruned) and for a
#: trained one (``trained=True``): the setting that kept most accuracy on the trained ResNet-56 pruned to
#: half its FLOPs before fine-tuning, 38.94% against 34.59% for the untrained defaults
#: (``benchmarks/prune_criteria.py``; ``benchmarks/results/prune-criteria-resnet56.json``).
UNTRAINED: dict[str, Any] = {"ranking": "local", "importance": "l1", "keep_residual": False}
TRAINED: dict[str, Any] = {"ranking": "global", "importance": "l2", "keep_residual": True}
DEFAULT_INPUT_SIZE = (1, 3, 32, 32)

# Torch-Pruning's MetaPruner argument names that prune() accepts, and the compress name each one means.
TORCH_PRUNING_ALIASES = {
    "pruning_ratio": "ratios",
    "pruning_ratio_dict": "ratios",
    "ch_sparsity": "ratios",
    "ch_sparsity_dict": "ratios",
    "global_pruning": "ranking",
    "isomorphic": "ranking",
    "max_pruning_ratio": "max_ratio",
    "iterative_steps": "steps",
    "ignored_layers": "ignore",
    "example_inputs": "inputs",
    "unwrapped_parameters": "unwrapped",
}
_TORCH_PRUNING_UNSUPPORTED = (
    "prune_num_heads", "prune_head_dims", "head_pruning_ratio", "head_pruning_ratio_dict", "customized_pruners",
    "root_module_types", "forward_fn", "output_transform", "in_channel_groups", "out_channel_groups",
    "channel_groups", "iterative_pruning_ratio_scheduler",
)


def prune(
    model: nn.Module,
    ratios: Ratios | None = None,
    *,
    importance: str | tp.importance.Importance | None = None,
    ranking: Literal["local", "global", "isomorphic"] | None = None,
    max_ratio: float = 1.0,
    steps: int = 1,
    round_to: int | None = None,
    mode: Literal["one-shot", "sequential"] = "one-shot",
    target_params: int | None = None,
    target_flops: int | None = None,
    ignore: Sequence[str] = (),
    keep_residual: bool | None = None,
    trained: bool = False,
    outputs: str | Sequence[str | int] = "all",
    inputs: Any = None,
    input_size: Sequence[int] | None = None,
    data: Any = None,
    num_heads: Mapping[Any, int] | None = None,
    unwrapped: Mapping[str, int] | None = None,
    fix: Callable[[nn.Module], Any] | None = None,
    **torch_pruning_names: Any,
) -> nn.Module:
    """Return a copy of ``model`` with channels physically removed; ``model`` is untouched.

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
    ``inputs`` (or zeros of ``input_size``, default 1x3x32x32). ``mode="sequential"`` instead visits the
    matched layers in order and removes ``int(r * n)`` of their *current* width, so ratios compound
    along a residual stream (the procedure of torch-pruning 0.2.8 and report 002a).

    **Rounding.** ``round_to`` rounds each kept width *down* to a multiple of it (Torch-Pruning's rule).

    **Importance.** ``importance`` names a criterion in :data:`IMPORTANCES` (default ``"l1"``) or is a
    torch-pruning ``Importance``; ``"taylor"`` needs ``data``: an ``(inputs, labels)`` pair or an
    iterable of them.

    **Trained networks.** ``keep_residual=True`` leaves every residual stream whole (the channels that
    meet in an addition: a ResNet's stem, each block's last conv and the shortcuts) and prunes only
    inside the blocks. ``trained=True`` picks what kept most accuracy when a trained ResNet-56 was
    pruned to half its FLOPs (``benchmarks/results/prune-criteria-resnet56.json``):
    ``ranking="global"``, ``importance="l2"``, ``keep_residual=True``, each unless given. Without it
    the defaults are ``"local"``, ``"l1"`` and ``False`` (uniform widths, as the reports pruned).

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
    ``unwrapped_parameters``) are accepted as aliases.

    A compress ResNet comes back as a ResNet whose config describes the pruned widths.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prune() takes an nn.Module, got {type(model).__name__}")
    given = dict(ratios=ratios, ranking=ranking, max_ratio=max_ratio, steps=steps, ignore=ignore, inputs=inputs, unwrapped=unwrapped)
    opts = _from_torch_pruning_names(model, given, torch_pruning_names)
    ratios, ranking, max_ratio, steps = opts["ratios"], opts["ranking"], opts["max_ratio"], opts["steps"]
    ignore, inputs, unwrapped = opts["ignore"], opts["inputs"], opts["unwrapped"]
    if not isinstance(trained, bool):
        raise TypeError(f"trained must be True or False, got {trained!r}")
    if keep_residual is not None and not isinstance(keep_residual, bool):
        raise TypeError(f"keep_residual must be True or False, got {keep_residual!r}")
    defaults = TRAINED if trained else UNTRAINED
    if ranking is None:
        ranking = defaults["ranking"] if mode != "sequential" else "local"
    if importance is None:
        importance = defaults["importance"]
    if keep_residual is None:
        keep_residual = defaults["keep_residual"]

    if mode not in ("one-shot", "sequential"):
        raise ValueError(f"mode must be 'one-shot' or 'sequential', got {mode!r}")
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {', '.join(map(repr, RANKINGS))}, got {ranking!r}")
    if mode == "sequential" and (ranking != "local" or steps != 1):
        raise ValueError("mode='sequential' prunes layer by layer: it takes neither ranking='global'/'isomorphic' nor steps")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to must be a positive integer or None, got {round_to!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    max_ratio = _check_ratio(max_ratio, "max_ratio", upper_inclusive=True)
    if fix is not None and not callable(fix):
        raise TypeError(f"fix must be a callable taking the pruned model, got {type(fix).__name__}")
    if isinstance(ignore, str):
        ignore = (ignore,)
    bad = [p for p in ignore if not isinstance(p, str)] if isinstance(ignore, Iterable) else [ignore]
    if bad:
        raise TypeError(f"ignore takes layer names or glob patterns (strings), got {type(bad[0]).__name__} {bad[0]!r}; "
                        "to ignore modules, pass them as ignored_layers=")
    if inputs is not None and input_size is not None:
        raise TypeError("give example inputs or input_size, not both")
    imp = _importance(importance, data)

    budget = None
    if target_params is not None or target_flops is not None:
        if ratios is not None:
            raise TypeError("give either ratios or a budget (target_params / target_flops), not both")
        if target_params is not None and target_flops is not None:
            raise TypeError("give one budget: target_params or target_flops")
        what, value = ("params", target_params) if target_params is not None else ("flops", target_flops)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"target_{what} must be a positive integer, got {value!r}")
        budget = (what, value)
    elif ratios is None:
        raise TypeError("prune() needs ratios (a float or a mapping) or a budget (target_params / target_flops)")

    job = _Job(model, imp, ignore=tuple(ignore), outputs=outputs, inputs=inputs, input_size=input_size,
               num_heads=num_heads, unwrapped=unwrapped, data=data, fix=fix, keep_residual=keep_residual)
    if mode == "sequential":
        return job.sequential(ratios, round_to, budget)
    return job.run(ratios, budget, ranking=ranking, max_ratio=max_ratio, steps=steps, round_to=round_to)


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
    if isinstance(ignore, str):
        ignore = (ignore,)
    job = _Job(model, None, ignore=tuple(ignore), outputs=outputs, inputs=inputs, input_size=input_size,
               num_heads=None, unwrapped=None, data=None, fix=None)
    net, traced, groups = job.start()
    names = [n for g in groups if job.blocked(g) is None for n in g.members]
    modules = dict(model.named_modules())
    order = [n for n, _ in model.named_modules()]
    return {n: modules[n] for n in order if n in set(names)}


# --- argument handling -------------------------------------------------------------------------------

def _from_torch_pruning_names(model: nn.Module, given: dict, names: dict) -> dict:
    """Translate Torch-Pruning's MetaPruner argument names into compress's."""
    out = dict(given)
    for name in names:
        if name in _TORCH_PRUNING_UNSUPPORTED:
            raise TypeError(f"{name!r} is a Torch-Pruning option that compress.prune() does not support")
        if name not in TORCH_PRUNING_ALIASES:
            accepted = ", ".join(TORCH_PRUNING_ALIASES)
            raise TypeError(f"prune() got an unexpected keyword argument {name!r} (Torch-Pruning names accepted: {accepted})")
    defaults = dict(ratios=None, ranking="local", max_ratio=1.0, steps=1, ignore=(), inputs=None, unwrapped=None)

    def put(target: str, value: Any, alias: str) -> None:
        if out[target] is not None and out[target] != defaults[target] and not (target == "ratios" and alias.endswith("_dict")):
            raise TypeError(f"give {target}= or its Torch-Pruning alias {alias}=, not both")
        out[target] = value

    module_names = {m: n for n, m in model.named_modules()}
    ratio = names.get("pruning_ratio", names.get("ch_sparsity"))
    ratio_dict = names.get("pruning_ratio_dict", names.get("ch_sparsity_dict"))
    if ratio is not None or ratio_dict is not None:
        if out["ratios"] is not None:
            raise TypeError("give ratios= or Torch-Pruning's pruning_ratio=/pruning_ratio_dict=, not both")
        mapping: dict = {}
        if ratio_dict is not None and not isinstance(ratio_dict, Mapping):
            raise TypeError(f"pruning_ratio_dict maps modules (or layer names) to ratios, got {type(ratio_dict).__name__} "
                            f"{ratio_dict!r}")
        if ratio_dict:
            if ratio is not None:
                mapping["*"] = ratio
            for key, r in ratio_dict.items():
                for m in key if isinstance(key, tuple) else (key,):
                    mapping[module_names.get(m, m) if isinstance(m, nn.Module) else m] = r
            out["ratios"] = mapping
        else:
            out["ratios"] = ratio
    if names.get("isomorphic"):
        put("ranking", "isomorphic", "isomorphic")
    elif names.get("global_pruning"):
        put("ranking", "global", "global_pruning")
    for alias, target in (("max_pruning_ratio", "max_ratio"), ("iterative_steps", "steps"), ("example_inputs", "inputs")):
        if alias in names:
            put(target, names[alias], alias)
    if "ignored_layers" in names:
        layers = names["ignored_layers"] or []
        resolved = []
        for m in layers:
            if isinstance(m, nn.Module):
                if m not in module_names:
                    raise ValueError("ignored_layers holds a module that is not part of the model")
                resolved.append(module_names[m])
            elif isinstance(m, str):
                resolved.append(m)
            else:
                raise TypeError(f"ignored_layers takes modules or names, got {type(m).__name__}")
        put("ignore", tuple(resolved), "ignored_layers")
    if "unwrapped_parameters" in names:
        params = {p: n for n, p in model.named_parameters()}
        pairs = names["unwrapped_parameters"] or []
        pairs = pairs.items() if isinstance(pairs, Mapping) else pairs
        mapping = {}
        for p, dim in pairs:
            if p not in params:
                raise ValueError("unwrapped_parameters holds a parameter that is not part of the model")
            mapping[params[p]] = dim
        put("unwrapped", mapping, "unwrapped_parameters")
    return out


def _check_ratio(value: Any, key: Any, *, upper_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"ratio for {key!r} must be a number in [0, 1), got {type(value).__name__} {value!r}")
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok or math.isnan(value):
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"ratio {value!r} for {key!r} is outside {interval}: it is the fraction of channels removed")
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


def _resolve(model: nn.Module, ratios: Ratios, layers: Sequence[str]) -> dict[str, tuple[float, int]]:
    """Map every matched layer name to (its ratio, the index of the key that set it), in layer order."""
    if isinstance(ratios, Mapping):
        items = list(ratios.items())
    elif isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        items = [("*", ratios)]
    else:
        raise TypeError(f"ratios must be a float or a mapping of layer names/patterns/block indices to floats, got {type(ratios).__name__}")
    resolved: dict[str, tuple[float, int]] = {}
    blocks = None
    for index, (key, value) in enumerate(items):
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
            resolved[n] = (r, index)
    return {n: resolved[n] for n in layers if n in resolved}


def _importance(importance: Any, data: Any) -> tp.importance.Importance | None:
    if isinstance(importance, tp.importance.Importance):
        return importance
    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCES)} or pass a torch_pruning Importance")
    if importance == "taylor" and data is None:
        raise ValueError("importance='taylor' is data-aware: pass data=(inputs, labels) or an iterable of such batches")
    return IMPORTANCES[importance]()


def _fix_known_models(net: nn.Module) -> None:
    """Update width attributes of known torchvision models that pruning cannot see."""
    vit = sys.modules.get("torchvision.models.vision_transformer")  # loaded if the model is one
    if vit is None:
        return
    VisionTransformer = vit.VisionTransformer
    for m in net.modules():
        if isinstance(m, VisionTransformer):
            m.hidden_dim = m.conv_proj.out_channels


# --- one pruning job ---------------------------------------------------------------------------------

class _Job:
    """The state of one prune() call: a copy of the model, its graph, its groups."""

    def __init__(self, model, importance, *, ignore, outputs, inputs, input_size, num_heads, unwrapped, data, fix,
                 keep_residual=False):
        self.model = model
        self.keep_residual = keep_residual
        self.importance = importance
        self.ignore = ignore
        self.outputs = outputs
        self.input_size = tuple(input_size) if input_size is not None else (DEFAULT_INPUT_SIZE if inputs is None else None)
        self.raw_inputs = inputs
        self.num_heads_arg = num_heads
        self.unwrapped_arg = unwrapped
        self.data = data
        self.fix = fix

    # setting up ---------------------------------------------------------------------------------
    def start(self) -> tuple[nn.Module, dg.Traced, list[dg.Group]]:
        """Copy the model, trace the copy and collect its groups."""
        model = self.model
        try:
            device = next(model.parameters()).device
        except StopIteration:
            raise TypeError(f"prune() needs a model with parameters; {type(model).__name__} has none") from None
        self.device = device
        self.inputs = dg.to_device(self.raw_inputs, device) if self.raw_inputs is not None else torch.zeros(*self.input_size, device=device)
        self.flags = {n: p.requires_grad for n, p in model.named_parameters()}
        self._check_names(model)
        net = copy.deepcopy(model)
        self.was_training = model.training
        net.eval()
        self.net = net
        self.retrace()
        return net, self.traced, self.groups

    def _check_names(self, model: nn.Module) -> None:
        names = dict(model.named_modules())
        params = dict(model.named_parameters())
        heads: dict[str, int] = {}
        for key, value in (self.num_heads_arg or {}).items():
            name = next((n for n, m in names.items() if m is key), None) if isinstance(key, nn.Module) else key
            if name not in names:
                raise ValueError(f"num_heads: {key!r} is not a layer of the model")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"num_heads for {name!r} must be a positive integer, got {value!r}")
            heads[name] = value
        self.heads_by_name = heads
        unwrapped = {}
        for name, dim in (self.unwrapped_arg or {}).items():
            if name not in params:
                raise ValueError(f"unwrapped: {name!r} is not a parameter of the model (named like {', '.join(list(params)[:3])}, ...)")
            if isinstance(dim, bool) or not isinstance(dim, int) or not -params[name].dim() <= dim < params[name].dim():
                raise ValueError(f"unwrapped: dim {dim!r} is not a dimension of {name!r} (shape {tuple(params[name].shape)})")
            unwrapped[name] = dim % params[name].dim()
        self.unwrapped_by_name = unwrapped

    def retrace(self) -> None:
        """(Re)build the graph of ``self.net`` and its groups."""
        net = self.net
        params = dict(net.named_parameters())
        unwrapped = [(params[n], d) for n, d in self.unwrapped_by_name.items()] or None
        self.traced = dg.trace(net, self.inputs, unwrapped)
        self.protected = self._protected_outputs(self.traced)
        modules = dict(net.named_modules())
        self.num_heads = {m: m.num_heads for m in net.modules() if isinstance(m, nn.MultiheadAttention)}
        self.num_heads.update({modules[n]: h for n, h in self.heads_by_name.items()})
        # a frozen patch-whitening layer is never pruned: its filters are a whole eigenbasis, and the stem
        # conv after it keeps all its input channels
        self.ignored = [m for n, m in net.named_modules()
                        if n and (_matches_any(n, self.ignore) or isinstance(m, WhiteningConv))]
        if self.ignore:
            unmatched = [p for p in self.ignore if not any(_matches(n, p) for n in modules if n)]
            if unmatched:
                raise ValueError(f"ignore: {', '.join(map(repr, unmatched))} matches no module of the model")
        self.groups = dg.collect_groups(self.traced, ignored=[], protected=self.protected, num_heads=self.num_heads)
        ignored = set(self.ignored)
        self.ignored_in = {}
        for g in self.groups:
            hits = [self.traced.names.get(d.target.module, "?") for d, _ in g.items
                    if d.target.module in ignored and self.traced.graph.is_out_channel_pruning_fn(d.handler)]
            if hits:
                self.ignored_in[g.key] = hits
        graph = self.traced.graph
        self.candidates = [
            n for n, m in net.named_modules() if isinstance(m, dg.ROOT_TYPES) and m in graph.module2node and m not in ignored
        ]

    def _protected_outputs(self, traced: dg.Traced) -> list[str]:
        paths = list(traced.outputs)
        if self.outputs == "all":
            return paths
        if isinstance(self.outputs, (str, int)):
            wanted = [self.outputs]
        else:
            wanted = list(self.outputs)
        found = []
        for w in wanted:
            key = str(w)
            hits = [p for p in paths if p == key or p.startswith(key + ".")]
            if not hits:
                raise ValueError(f"outputs: {w!r} is not an output of the model; its outputs are {', '.join(paths)}")
            found.extend(hits)
        return found

    def blocked(self, g: dg.Group) -> str | None:
        """Why group ``g`` cannot be pruned at all (None: it can)."""
        if g.unsupported:
            return g.unsupported
        if g.reaches:
            return f"its channels are the model output {', '.join(map(repr, g.reaches))} (protected by outputs=)"
        if g.key in self.ignored_in:
            return f"it shares channels with ignored layer(s) {', '.join(self.ignored_in[g.key])}"
        if self.keep_residual and g.residual:
            return "it is a residual stream (its channels meet in an addition; kept by keep_residual=True)"
        if g.channels % g.ch_groups:
            return f"its {g.channels} channels do not split into {g.ch_groups} equal groups"
        if g.units < 2:
            return "it has a single channel" + (f" per group of {g.ch_groups}" if g.ch_groups > 1 else "")
        if not g.members:
            return "it has no prunable layer"
        return None

    # scoring --------------------------------------------------------------------------------------
    def score(self) -> None:
        net = self.net
        if isinstance(self.importance, tp.importance.GroupTaylorImportance):
            for p in net.parameters():
                p.requires_grad_(True)
            try:
                _accumulate_gradients(net, self.data, self.device)
            finally:
                dg.restore_requires_grad(net, self.flags)
        dg.score_groups(self.groups, self.importance)

    # the main paths -------------------------------------------------------------------------------
    def run(self, ratios, budget, *, ranking, max_ratio, steps, round_to) -> nn.Module:
        net, _, groups = self.start()
        if budget is None:
            targets = self._targets(ratios, ranking)
        else:
            targets = {g.key: (None, 0) for g in groups if self.blocked(g) is None and any(n in self.candidates for n in g.members)}
        initial = {g.key: g.units for g in groups}
        planner = _Planner(initial, ranking, max_ratio, round_to)
        start_cost = None
        if budget is not None:
            cost_model = CostModel(net, budget[0], self._flops_inputs(), self.input_size, self._param_dims())
            start_cost = cost_model.total
            if start_cost <= budget[1]:
                return self._finish()
        for step in range(1, steps + 1):
            if step > 1:
                self.retrace()
                if budget is not None:
                    cost_model = CostModel(self.net, budget[0], self._flops_inputs(), self.input_size, self._param_dims())
            self.score()
            groups = [g for g in self.groups if g.key in targets and g.scores is not None]
            if budget is None:
                frac = step / steps
                plan = planner.plan(groups, {k: (r * frac, s) for k, (r, s) in targets.items()})
            else:
                goal = start_cost - (start_cost - budget[1]) * step // steps
                plan, expected = self._search(planner, groups, targets, cost_model, goal, budget[1])
            dg.check_plan(self.traced, self.groups, plan)
            dg.apply_plan(self.traced, self.groups, plan)
            self._after_step()
        if budget is not None:
            real = measure(self.net, budget[0], self._flops_inputs(), self.input_size)
            if real != expected or real > budget[1]:  # never a silent miss of the budget
                raise RuntimeError(f"prune() bug: the pruned model has {real:,} {budget[0]} where {expected:,} were "
                                   f"predicted (budget {budget[1]:,}); please report it")
        return self._finish()

    def _targets(self, ratios, ranking) -> dict[str, tuple[float, int]]:
        """For every group with a requested ratio: (ratio, ranking scope)."""
        resolved = _resolve(self.model, ratios, self.candidates)
        targets: dict[str, tuple[float, int]] = {}
        handled = set()
        for g in self.groups:
            members = [n for n in g.members if n in resolved]
            if not members:
                continue
            handled.update(members)
            found = {resolved[n][0] for n in members}
            if len(found) > 1:
                detail = ", ".join(f"{n}={resolved[n][0]}" for n in members)
                raise ValueError(
                    f"these layers share channels (a residual connection or a grouped/depthwise conv) and must be "
                    f"pruned together, but were given different ratios: {detail}"
                )
            reason = self.blocked(g)
            if reason is not None:
                named = [n for n in members if isinstance(ratios, Mapping) and n in ratios]
                if named:
                    raise ValueError(f"{', '.join(named)} cannot be pruned: {reason}")
                continue
            ratio = found.pop()
            if ratio > 0:
                targets[g.key] = (ratio, resolved[members[0]][1])
        missing = [n for n in resolved if n not in handled and isinstance(ratios, Mapping) and n in ratios]
        if missing:
            raise ValueError(f"{', '.join(missing)} cannot be pruned: its output channels are not traced into a group")
        return targets

    def _search(self, planner, groups, targets, cost_model: CostModel, goal: int, budget: int) -> tuple[dict, int]:
        """The plan at the smallest ratio whose cost is at most ``goal`` (bisection over the ratio), and
        that cost."""
        what = cost_model.what

        def evaluate_plan(plan: dict):
            removed = dg.check_plan(self.traced, self.groups, plan)
            cost = cost_model.predict(removed)
            if cost is None:
                cost = self._measure_plan(plan, what)
            return plan, cost

        def evaluate(r: float):
            return evaluate_plan(planner.plan(groups, {k: (r, s) for k, (_, s) in targets.items()}))

        units = sum(planner.initial[g.key] for g in groups) or 1
        lo, hi, best, floor = 0.0, 1.0, None, None
        while hi - lo > min(1e-4, 0.5 / units):
            mid = (lo + hi) / 2
            try:
                plan, cost = evaluate(mid)
            except PruneError:
                hi = mid
                continue
            if floor is None or mid > floor[0]:
                floor = (mid, cost)
            if cost <= goal:
                hi, best = mid, (plan, cost)
            else:
                lo = mid
        if best is None:
            label = "params" if what == "params" else "FLOPs"
            try:
                _, least = evaluate_plan(planner.fewest(groups))
            except PruneError:
                least = floor[1] if floor else None
            left = f"leaves {least:,}" if least is not None else "empties a layer"
            raise ValueError(f"no ratio reaches {budget:,} {label}: even keeping the fewest channels every layer allows {left}")
        return best

    def _measure_plan(self, plan: dict, what: str) -> int:
        """Real params/FLOPs of the current model pruned by ``plan`` (for layers the cost model lacks)."""
        saved = self.net, self.traced, self.groups
        try:
            self.net = copy.deepcopy(saved[0])
            self.retrace()
            dg.apply_plan(self.traced, self.groups, plan)
            self._apply_fixes(self.net)
            return measure(self.net, what, self._flops_inputs(), self.input_size)
        finally:
            self.net, self.traced, self.groups = saved
            self.protected = self._protected_outputs(self.traced)

    def _param_dims(self) -> dict:
        graph = self.traced.graph
        return {m: node.pruning_dim for m, node in graph.module2node.items() if isinstance(m, nn.Parameter)}

    def _flops_inputs(self):
        return None if self.raw_inputs is None else self.inputs

    def sequential(self, ratios, round_to, budget) -> nn.Module:
        if budget is not None:
            return self._sequential_budget(round_to, budget)
        net, traced, groups = self.start()
        resolved = _resolve(self.model, ratios, self.candidates)
        modules = dict(net.named_modules())
        graph = traced.graph
        protected_nodes = {traced.output_nodes[p]: p for p in self.protected if p in traced.output_nodes}
        ignored = set(self.ignored)
        for name, (ratio, _) in resolved.items():
            module = modules[name]
            fn = graph.get_pruner_of_module(module).prune_out_channels
            n = graph.get_out_channels(module)
            group = dg.make_group(traced, graph.get_pruning_group(module, fn, list(range(n))), protected_nodes, self.num_heads)
            blocked = [traced.names.get(d.target.module, "?") for d, _ in group.items
                       if d.target.module in ignored and graph.is_out_channel_pruning_fn(d.handler)]
            reason = (f"it shares channels with ignored layer(s) {', '.join(blocked)}" if blocked else
                      f"its channels are the model output {', '.join(map(repr, group.reaches))}" if group.reaches else
                      f"its {group.channels} channels do not split into {group.ch_groups} groups"
                      if group.channels % group.ch_groups else None)
            if reason is not None:
                if isinstance(ratios, Mapping) and name in ratios:  # named on purpose: an error, as in one-shot mode
                    raise ValueError(f"{name} cannot be pruned: {reason}")
                continue  # matched by a float or a pattern: left as it is, as in one-shot mode
            keep = group.units - int(ratio * group.units)  # torch-pruning 0.2.8: remove int(r * n)
            keep = _round_down(keep, _round_unit(round_to, group.ch_groups))
            if keep < 1:
                raise PruneError(f"{name}: ratio {ratio} with round_to={round_to} leaves no channel of {group.channels}")
            if keep == group.units:
                continue
            self.score_one(group)
            plan = {group.key: _weakest(group.scores, group.units - keep)}
            dg.check_plan(traced, [group], plan)
            dg.apply_plan(traced, [group], plan)
        self._after_step()
        return self._finish()

    def _sequential_budget(self, round_to, budget) -> nn.Module:
        what, value = budget
        job = lambda r: _Job(self.model, self.importance, ignore=self.ignore, outputs=self.outputs,  # noqa: E731
                             inputs=self.raw_inputs, input_size=self.input_size if self.raw_inputs is None else None,
                             num_heads=self.num_heads_arg, unwrapped=self.unwrapped_arg, data=self.data,
                             fix=self.fix).sequential(r, round_to, None)
        cost = lambda m: measure(m, what, None if self.raw_inputs is None else dg.to_device(self.raw_inputs, next(m.parameters()).device), self.input_size)  # noqa: E731
        if cost(self.model) <= value:
            return copy.deepcopy(self.model)
        lo, hi, best = 0.0, 0.99, None
        while hi - lo > 1e-3:
            mid = (lo + hi) / 2
            try:
                candidate = job(mid)
            except PruneError:
                hi = mid
                continue
            if cost(candidate) <= value:
                hi, best = mid, candidate
            else:
                lo = mid
        if best is None:
            raise ValueError(f"no ratio reaches {value:,} {'params' if what == 'params' else 'FLOPs'} in sequential mode")
        return best

    def score_one(self, group: dg.Group) -> None:
        if isinstance(self.importance, tp.importance.GroupTaylorImportance):
            for p in self.net.parameters():
                p.requires_grad_(True)
            try:
                _accumulate_gradients(self.net, self.data, self.device)
            finally:
                dg.restore_requires_grad(self.net, self.flags)
        dg.score_groups([group], self.importance)
        if group.scores is None:
            raise PruneError(f"{group.key}: the importance criterion gives no scores for this group")

    # finishing ------------------------------------------------------------------------------------
    def _apply_fixes(self, net: nn.Module) -> None:
        _fix_known_models(net)
        if self.fix is not None:
            self.fix(net)

    def _after_step(self) -> None:
        net = self.net
        dg.restore_requires_grad(net, self.flags)
        net.zero_grad(set_to_none=True)
        self._apply_fixes(net)

    def _finish(self) -> nn.Module:
        net = self.net
        dg.restore_requires_grad(net, self.flags)
        net.zero_grad(set_to_none=True)
        for module in net.modules():  # the model itself, or one inside a wrapper (DataParallel, any `.module`)
            if isinstance(module, ResNet):
                module.config = module.config_from_modules()
        try:
            with torch.no_grad():
                out = dg.call_model(net, self.inputs)
        except Exception as e:  # noqa: BLE001 - any failure here means the pruned model is broken
            raise PruneError(
                f"the pruned model fails on the example inputs ({type(e).__name__}: {e}); if the model stores "
                "widths in attributes, update them with fix=lambda m: ..."
            ) from e
        shapes = {p: tuple(t.shape) for p, t in dg.flatten_outputs(out)}
        for path in self.protected:
            before = self.traced.outputs.get(path)
            if shapes.get(path) != before:
                raise PruneError(f"pruning changed the protected output {path!r} from {before} to {shapes.get(path)}")
        net.train(self.was_training)
        return net


class _Planner:
    """Turns scores and target ratios into a plan: which units of which group to remove."""

    def __init__(self, initial: Mapping[str, int], ranking: str, max_ratio: float, round_to: int | None) -> None:
        self.initial = dict(initial)  # units per group before the first step
        self.ranking = ranking
        self.max_ratio = max_ratio
        self.round_to = round_to

    def plan(self, groups: Sequence[dg.Group], targets: Mapping[str, tuple[float, int]]) -> dict:
        groups = [g for g in groups if g.key in targets]
        if self.ranking == "local":
            return {g.key: self._local(g, targets[g.key][0]) for g in groups}
        scopes: dict[Any, list[dg.Group]] = {}
        for g in groups:
            scope = (targets[g.key][1], g.tag if self.ranking == "isomorphic" else "")
            scopes.setdefault(scope, []).append(g)
        plan = {}
        for members in scopes.values():
            plan.update(self._ranked(members, targets[members[0].key][0]))
        return plan

    def fewest(self, groups: Sequence[dg.Group]) -> dict:
        """The plan keeping the fewest channels allowed in every group (one, or one round_to multiple,
        and no less than ``max_ratio`` allows)."""
        plan = {}
        for g in groups:
            unit = _round_unit(self.round_to, g.ch_groups)
            floor = max(1, int(self.initial[g.key] * (1 - self.max_ratio)))
            keep = min(g.units, -(-floor // unit) * unit)
            plan[g.key] = _weakest(g.scores, g.units - keep)
        return plan

    def _local(self, g: dg.Group, ratio: float) -> list[int]:
        ratio = min(ratio, self.max_ratio)
        keep = int(self.initial[g.key] * (1 - ratio))
        keep = min(_round_down(keep, _round_unit(self.round_to, g.ch_groups)), g.units)
        if keep < 1:
            raise PruneError(
                f"{_layer(g)} would keep no channel: ratio {ratio:g} of {self.initial[g.key] * g.ch_groups} channels"
                + (f" rounded down to a multiple of round_to={self.round_to}" if self.round_to else "")
                + "; lower the ratio for it or leave it out (ignore=...)"
            )
        return _weakest(g.scores, g.units - keep)

    def _ranked(self, groups: Sequence[dg.Group], ratio: float) -> dict:
        """Remove the weakest units across ``groups``: ``ratio`` of all their initial units in total."""
        total = sum(self.initial[g.key] for g in groups)
        to_remove = sum(g.units for g in groups) - int(total * (1 - ratio))
        floors = {g.key: max(1, int(self.initial[g.key] * (1 - self.max_ratio))) for g in groups}
        chosen: dict[str, list[int]] = {g.key: [] for g in groups}
        if to_remove > 0:
            order = sorted(
                ((float(s), i, u) for i, g in enumerate(groups) for u, s in enumerate(g.scores.tolist())),
                key=lambda t: (t[0], t[1], t[2]),
            )
            for _, i, u in order:
                if to_remove <= 0:
                    break
                g = groups[i]
                if g.units - len(chosen[g.key]) > floors[g.key]:
                    chosen[g.key].append(u)
                    to_remove -= 1
        plan = {}
        for g in groups:
            keep = g.units - len(chosen[g.key])
            unit = _round_unit(self.round_to, g.ch_groups)
            if unit > 1 and keep < g.units:
                if g.units < unit:
                    keep = g.units
                else:
                    lowest = -(-floors[g.key] // unit) * unit
                    keep = min(g.units, max(_round_down(keep, unit), lowest, unit))
            plan[g.key] = _weakest(g.scores, g.units - keep)
        return plan


def _round_unit(round_to: int | None, ch_groups: int) -> int:
    """Kept units must be a multiple of this so that kept channels are a multiple of ``round_to``."""
    if not round_to:
        return 1
    return round_to // math.gcd(round_to, ch_groups)


def _round_down(n: int, unit: int) -> int:
    return n - n % unit if unit > 1 else n


def _weakest(scores: torch.Tensor, n: int) -> list[int]:
    if n <= 0:
        return []
    return sorted(torch.argsort(scores, stable=True)[:n].tolist())


def _layer(g: dg.Group) -> str:
    return ", ".join(g.members[:3]) + (f" (and {len(g.members) - 3} coupled layers)" if len(g.members) > 3 else "")


def _accumulate_gradients(net: nn.Module, data: Any, device: torch.device) -> None:
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


# --- kept for layer surgery (scale_width shrinks through these) ------------------------------------

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
