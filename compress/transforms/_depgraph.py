"""The machinery under :func:`compress.prune`: trace, group, score, plan, check and apply.

torch-pruning's dependency graph finds which layers share a channel dimension (a *group*) and removes
channels from all of them at once. This module adds what compress promises on top of it:

- the model is traced on the caller's example inputs (a tensor, a tuple, a dict), and every output the
  caller protects keeps its shape (a group that reaches a protected output is never pruned);
- channel grouping (grouped and depthwise convs, GroupNorm, attention heads) is respected the way
  torch-pruning's ``MetaPruner`` does it: scores are averaged over the channel groups and the same
  positions are removed in every group;
- all groups are scored before any is pruned;
- every plan is checked before anything is pruned: no layer may lose all its channels or inputs, and a
  grouped conv must lose the same positions in every group. Violations raise a ``ValueError`` naming
  the layer, so a wrong model is never returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping, shape_infer

ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM)
"""Layers whose output channels start a group (torch-pruning's default root types)."""

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


class PruneError(ValueError):
    """A pruning request that cannot be carried out without breaking the model."""


# --- calling the model on example inputs -------------------------------------------------------------

def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(x)`` for a tensor, ``model(*x)`` for a tuple or list, ``model(**x)`` for a dict."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def to_device(inputs: Any, device: torch.device) -> Any:
    """``inputs`` with every tensor inside moved to ``device``."""
    if torch.is_tensor(inputs):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs


def flatten_outputs(out: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """The tensors of a model's output with their paths: ``"output"`` for a lone tensor, ``"0"``, ``"1"``
    for a tuple, the keys for a dict (``"out"``, ``"aux"``), dotted for nested ones (``"0.boxes"``)."""
    if torch.is_tensor(out):
        return [(prefix or "output", out)]
    items: Iterable[tuple[Any, Any]]
    if isinstance(out, Mapping):
        items = out.items()
    elif isinstance(out, (tuple, list)):
        items = enumerate(out)
    else:
        return []
    found = []
    for key, value in items:
        found.extend(flatten_outputs(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


# --- tracing -----------------------------------------------------------------------------------------

@dataclass
class Traced:
    """A model's dependency graph, plus where its outputs are in it."""

    graph: tp.DependencyGraph
    names: dict[Any, str]
    outputs: dict[str, tuple[int, ...]]  # path -> shape
    output_nodes: dict[str, Any] = field(default_factory=dict)  # path -> graph node
    unmapped_splits: set = field(default_factory=set)  # split nodes whose outputs cannot be told apart


def trace(net: nn.Module, inputs: Any, unwrapped: Sequence[tuple[nn.Parameter, int]] | None = None) -> Traced:
    """Build torch-pruning's dependency graph of ``net`` (in eval mode) on ``inputs``.

    Parameters are made trainable for the trace (autograd is how torch-pruning sees them) and their
    ``requires_grad`` flags are restored afterwards.
    """
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    captured: dict[str, Any] = {}

    def forward(model: nn.Module, example: Any) -> Any:
        captured["out"] = call_model(model, example)
        return captured["out"]

    for p in net.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                net, example_inputs=inputs, forward_fn=forward, unwrapped_parameters=unwrapped
            )
    except Exception as e:  # noqa: BLE001 - torch-pruning raises many kinds on untraceable models
        raise TypeError(f"prune() cannot trace {type(net).__name__} into a dependency graph: {type(e).__name__}: {e}") from e
    finally:
        restore_requires_grad(net, flags)
    unmapped = _order_split_outputs(graph)
    flat = flatten_outputs(captured["out"])
    by_grad_fn = {id(node.grad_fn): node for node in graph.module2node.values() if node.grad_fn is not None}
    traced = Traced(graph, {m: n for n, m in net.named_modules()}, {p: tuple(t.shape) for p, t in flat})
    traced.unmapped_splits = unmapped
    for path, tensor in flat:
        node = by_grad_fn.get(id(tensor.grad_fn)) if tensor.grad_fn is not None else None
        if node is not None:
            traced.output_nodes[path] = node
    return traced


def _order_split_outputs(graph: tp.DependencyGraph) -> set:
    """Put each channel split's consumers in the order of the split's outputs.

    torch-pruning maps the i-th consumer it met while tracing to the i-th piece of a ``torch.split``,
    but it meets them in graph-walk order, so pieces can be swapped: a silently wrong model when they
    have equal sizes. Each consumer's autograd edge says which piece it reads; they are sorted by it.
    Splits whose pieces cannot all be told apart (a piece unused, or read by a layer called twice) are
    returned, and groups through them are not pruned.
    """
    unmapped, changed = set(), False
    for node in graph.module2node.values():
        if node.type != tp.ops.OPTYPE.SPLIT or node.module.split_sizes is None:
            continue  # not a split, or a split along another dim (no channel mapping)
        order = []
        for out in node.outputs:
            edges = out.grad_fn.next_functions if out.grad_fn is not None else ()
            hits = [nr for fn, nr in edges if fn is node.grad_fn]
            order.append(hits[0] if len(hits) == 1 else None)
        if None in order or sorted(order) != list(range(len(node.module.split_sizes))):
            unmapped.add(node)
        elif order != sorted(order):
            node.outputs = [out for _, out in sorted(zip(order, node.outputs), key=lambda t: t[0])]
            changed = True
    if changed:
        shape_infer.init_shape_information(graph)
        index_mapping.update_index_mapping(graph)
    return unmapped


def restore_requires_grad(net: nn.Module, flags: Mapping[str, bool]) -> None:
    """Set ``requires_grad`` of ``net``'s parameters back by name (pruned parameters are new objects)."""
    for n, p in net.named_parameters():
        if n in flags:
            p.requires_grad_(flags[n])


# --- groups --------------------------------------------------------------------------------------------

@dataclass
class Group:
    """One set of coupled channels: who is in it, how its channels are grouped, and their scores."""

    key: str  # name of the root layer: stable while the same model is pruned step after step
    root: Any
    handler: Callable
    tp_group: Any  # torch-pruning's Group with all channels: items (dep, idxs) with .root_idxs
    members: list[str]  # names of the layers whose output channels are in the group
    channels: int
    ch_groups: int
    reaches: list[str]  # protected outputs whose channels these are
    scores: torch.Tensor | None = None  # one per unit (channels // ch_groups)
    tag: str = ""  # structure tag for isomorphic ranking
    unsupported: str | None = None  # why torch-pruning cannot prune it
    residual: bool = False  # its channels meet in an addition of two tensors (a residual stream)
    _maps: list | None = field(default=None, repr=False)

    @property
    def units(self) -> int:
        return self.channels // self.ch_groups

    @property
    def items(self) -> list:
        return list(self.tp_group)

    def item_maps(self, graph: tp.DependencyGraph) -> list[tuple[Any, torch.Tensor, torch.Tensor | None]]:
        """Per item: (dep, its channel indices, the root index of each); roots None where unknown."""
        if self._maps is None:
            maps = []
            for item in self.tp_group:
                roots = item.root_idxs
                ok = roots is not None and all(r is not None and 0 <= r < self.channels for r in roots)
                maps.append((item.dep, torch.as_tensor(list(item.idxs), dtype=torch.long),
                             torch.as_tensor(list(roots), dtype=torch.long) if ok else None))
            self._maps = maps
        return self._maps

    def channel_idxs(self, units: Sequence[int]) -> list[int]:
        """Unit positions to channel indices: the same position in every channel group."""
        size = self.units
        return sorted(u + g * size for g in range(self.ch_groups) for u in units)


def _role(graph: tp.DependencyGraph, handler: Callable) -> str:
    return "out" if graph.is_out_channel_pruning_fn(handler) else "in"


def _channel_groups(graph: tp.DependencyGraph, module: Any, role: str, num_heads: Mapping[Any, int]) -> int:
    """How many equal channel groups ``module`` splits its ``role`` channels into (1: none)."""
    if module in num_heads and role == "out":
        return num_heads[module]
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
        return 1  # depthwise: in and out channels are coupled one to one
    pruner = graph.get_pruner_of_module(module) if isinstance(module, nn.Module) else None
    if pruner is None:
        return 1
    groups = pruner.get_out_channel_groups(module) if role == "out" else pruner.get_in_channel_groups(module)
    return max(1, int(groups or 1))


def collect_groups(
    traced: Traced,
    *,
    ignored: Sequence[nn.Module],
    protected: Sequence[str],
    num_heads: Mapping[Any, int],
) -> list[Group]:
    """Every group of ``traced`` (in torch-pruning's order), without scores yet."""
    protected_nodes = {traced.output_nodes[p]: p for p in protected if p in traced.output_nodes}
    groups = []
    for tg in traced.graph.get_all_groups(ignored_layers=list(ignored), root_module_types=ROOT_TYPES):
        g = make_group(traced, tg, protected_nodes, num_heads)
        if g is not None:
            groups.append(g)
    return groups


def make_group(traced: Traced, tg, protected_nodes: Mapping[Any, str], num_heads: Mapping[Any, int]) -> Group | None:
    """Describe torch-pruning group ``tg`` (with all channels); None for an attention group that has
    no downstream layer to root it at."""
    graph = traced.graph
    root_dep = tg[0].dep
    key = traced.names.get(root_dep.target.module, str(root_dep.target.module))
    if any(isinstance(d.target.module, nn.Module) and d.target.module in num_heads and _role(graph, d.handler) == "out" for d, _ in tg):
        tg = _reroot_attention(graph, tg)
        if tg is None:
            return None
    reaches = sorted({protected_nodes[d.target] for d, _ in tg if d.target in protected_nodes and _role(graph, d.handler) == "out"})
    members, ch_groups = [], 1
    for dep, _ in tg:
        module, role = dep.target.module, _role(graph, dep.handler)
        if role == "out" and isinstance(module, ROOT_TYPES) and module in traced.names and traced.names[module] not in members:
            members.append(traced.names[module])
        if isinstance(module, nn.Module):
            ch_groups = math.lcm(ch_groups, _channel_groups(graph, module, role, num_heads))
    root = tg[0].dep
    return Group(
        key=key, root=root.target.module, handler=root.handler, tp_group=tg, members=members,
        channels=len(tg[0].idxs), ch_groups=ch_groups, reaches=reaches, tag=_isomorphic_tag(graph, tg),
        unsupported=_unsupported(traced, tg), residual=_is_residual(tg),
    )


def _is_residual(tg) -> bool:
    """Whether the group's channels meet in an addition of two tensors: a residual stream."""
    for dep, _ in tg:
        node = dep.target
        if isinstance(node.module, tp.ops._ElementWiseOp) and "Add" in str(getattr(node, "grad_fn", "")) and len(node.inputs) >= 2:
            return True
    return False


def _unsupported(traced: Traced, tg) -> str | None:
    """Why torch-pruning cannot prune this group correctly (None: it can)."""
    for dep, _ in tg:
        m = dep.target.module
        if dep.target in traced.unmapped_splits:
            return "its channels pass through a torch.split whose pieces cannot be told apart (one unused, or read by a layer called twice)"
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1:
            what = _describe(traced, m)
            if m.transposed:
                return f"{what} is a grouped transposed conv (groups={m.groups}), which torch-pruning cannot prune"
            if m.groups == m.out_channels and m.in_channels != m.out_channels:
                return f"{what} has groups == out_channels ({m.groups}) but {m.in_channels} inputs, which torch-pruning cannot prune"
    return None


def _reroot_attention(graph: tp.DependencyGraph, group):
    """Root an attention group at a downstream layer's inputs, as torch-pruning's MetaPruner does
    (the head layout is only visible there when q, k, v come out of one fused layer)."""
    downstream = None
    for dep, idxs in group:
        if isinstance(dep.target.module, ROOT_TYPES) and graph.is_in_channel_pruning_fn(dep.handler):
            downstream = (dep, idxs)
    if downstream is None:
        return None
    dep, idxs = downstream
    return graph.get_pruning_group(dep.target.module, dep.handler, idxs)


def _isomorphic_tag(graph: tp.DependencyGraph, group) -> str:
    """Groups with the same tag have the same structure (torch-pruning's isomorphic pruning scopes)."""
    parts = []
    for dep, _ in group:
        role = _role(graph, dep.handler)
        parts.append(f"{type(dep.source.module).__name__}_{role}_{type(dep.target.module).__name__}_{role}")
    return "|".join(parts)


def score_groups(groups: Sequence[Group], importance: tp.importance.Importance) -> None:
    """Score every group (before any is pruned): one score per unit, averaged over channel groups."""
    for g in groups:
        g.scores = None
        if g.unsupported or g.channels % g.ch_groups or g.units < 1:
            continue
        imp = importance(g.tp_group)
        if imp is None:
            continue
        imp = imp.detach().float().cpu()
        g.scores = imp.view(g.ch_groups, -1).mean(0) if g.ch_groups > 1 else imp


# --- plans: which units of which group go ------------------------------------------------------------

Plan = dict  # group key -> sorted unit positions to remove


#: Autograd nodes of the pooling ops :func:`compress.count_flops` counts (one FLOP per input element).
POOLING_GRAD_FNS = ("MeanBackward", "AvgPool", "MaxPool", "AdaptiveAvgPool", "AdaptiveMaxPool")


def pooling_costs(graph: tp.DependencyGraph) -> dict[Any, tuple[int, int]]:
    """Every pooling op in ``graph`` over a channels-second input that keeps its channels (average, max,
    adaptive, or a ``mean`` over other dims), by its torch-pruning node (an element-wise op, or the output
    where the pool is the model's last op): (FLOPs per input channel, channels)."""
    costs: dict[Any, tuple[int, int]] = {}
    for module, node in graph.module2node.items():
        fn = node.grad_fn
        if fn is None or not type(module).__module__.startswith("torch_pruning") or not type(fn).__name__.startswith(POOLING_GRAD_FNS):
            continue
        if hasattr(fn, "_saved_self_sym_sizes"):  # mean: the input's shape and the dims it reduces
            shape = tuple(int(d) for d in fn._saved_self_sym_sizes)
            dims = getattr(fn, "_saved_dim", None)
            # autograd keeps the dims as unsigned 64-bit (-1 is 2**64 - 1)
            dims = None if dims is None else [(int(d) - (1 << 64) if int(d) >= 1 << 63 else int(d)) % max(len(shape), 1) for d in dims]
            if not dims or 0 in dims or 1 in dims:
                continue  # a mean over the channels, the batch or everything is not pooling
        elif torch.is_tensor(getattr(fn, "_saved_self", None)):
            shape = tuple(fn._saved_self.shape)
        else:
            continue
        if len(shape) >= 3 and shape[1] > 0:
            costs[module] = (math.prod(shape) // shape[1], shape[1])
    return costs


def removed_per_layer(graph: tp.DependencyGraph, groups: Sequence[Group], plan: Plan) -> dict[tuple[Any, str], set[int]]:
    """For a plan, the channel indices each (layer, "out"|"in") loses, in the unpruned model's numbering."""
    by_key = {g.key: g for g in groups}
    removed: dict[tuple[Any, str], set[int]] = {}
    for key, units in plan.items():
        if not units:
            continue
        g = by_key[key]
        root_idxs = g.channel_idxs(units)
        mask = torch.zeros(g.channels, dtype=torch.bool)
        mask[root_idxs] = True
        for dep, idxs, roots in g.item_maps(graph):
            if roots is None:
                mapped = _mapped_by_torch_pruning(graph, g, root_idxs, dep)
            else:
                mapped = set(idxs[mask[roots]].tolist())
            if mapped:
                removed.setdefault((dep.target.module, _role(graph, dep.handler)), set()).update(mapped)
    return removed


def _mapped_by_torch_pruning(graph: tp.DependencyGraph, g: Group, root_idxs: list[int], dep) -> set[int]:
    pruning_group = graph.get_pruning_group(g.root, g.handler, root_idxs)
    found: set[int] = set()
    for item in pruning_group:
        if item.dep.target is dep.target and item.dep.handler == dep.handler:
            found.update(item.idxs)
    return found


def _describe(traced: Traced, module: Any) -> str:
    name = traced.names.get(module)
    if name is not None:
        return f"{name} ({type(module).__name__})"
    if isinstance(module, nn.Parameter):
        return f"parameter {traced.graph._param_to_name.get(module, tuple(module.shape))}"
    return type(module).__name__


def check_plan(traced: Traced, groups: Sequence[Group], plan: Plan) -> dict[tuple[Any, str], set[int]]:
    """Raise :class:`PruneError` if ``plan`` would empty a layer or break its channel grouping.

    Returns what every layer loses (see :func:`removed_per_layer`).
    """
    graph = traced.graph
    removed = removed_per_layer(graph, groups, plan)
    for (module, role), idxs in removed.items():
        if not isinstance(module, (nn.Module, nn.Parameter)) or type(module).__module__.startswith("torch_pruning"):
            continue  # torch-pruning's own bookkeeping nodes (concat, split, outputs)
        what = _describe(traced, module)
        if isinstance(module, nn.Parameter):
            node = graph.module2node[module]
            total = module.shape[node.pruning_dim]
        else:
            total = graph.get_out_channels(module) if role == "out" else graph.get_in_channels(module)
        if total is None:
            continue
        if len(idxs) >= total:
            side = "output channels" if role == "out" else "input channels"
            raise PruneError(
                f"{what} would lose all {total} of its {side}; lower the ratio for it or leave it out "
                "(ignore=...)"
            )
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
            _check_grouped_conv(what, module, role, idxs)
        elif isinstance(module, nn.GroupNorm) and (total - len(idxs)) % module.num_groups:
            raise PruneError(f"{what} would keep {total - len(idxs)} channels, not a multiple of its {module.num_groups} groups")
        elif isinstance(module, nn.MultiheadAttention) and (total - len(idxs)) % module.num_heads:
            raise PruneError(f"{what} would keep {total - len(idxs)} dims, not a multiple of its {module.num_heads} heads")
    return removed


def _check_grouped_conv(what: str, conv: nn.modules.conv._ConvNd, role: str, idxs: set[int]) -> None:
    depthwise = conv.groups == conv.out_channels
    if conv.transposed:
        raise PruneError(f"{what} is a grouped transposed conv (groups={conv.groups}): torch-pruning cannot prune it; leave it out (ignore=...)")
    if depthwise:
        if conv.in_channels != conv.out_channels:
            raise PruneError(
                f"{what} has groups == out_channels ({conv.groups}) but {conv.in_channels} inputs: "
                "it cannot be pruned consistently; leave it out (ignore=...)"
            )
        return
    total = conv.out_channels if role == "out" else conv.in_channels
    size = total // conv.groups
    per_group = [sorted(i - g * size for i in idxs if g * size <= i < (g + 1) * size) for g in range(conv.groups)]
    if any(p != per_group[0] for p in per_group):
        side = "output" if role == "out" else "input"
        raise PruneError(
            f"{what} (groups={conv.groups}) would lose different {side} positions in different groups; "
            "its channels are coupled to layers grouped differently, so it cannot be pruned; leave it out (ignore=...)"
        )


def apply_plan(traced: Traced, groups: Sequence[Group], plan: Plan) -> None:
    """Remove the planned channels (call :func:`check_plan` first). Groups keep their unpruned numbering
    because each group owns its channel dimension; torch-pruning re-maps concatenations between groups."""
    graph = traced.graph
    by_key = {g.key: g for g in groups}
    for key, units in plan.items():
        if units:
            g = by_key[key]
            graph.get_pruning_group(g.root, g.handler, g.channel_idxs(units)).prune()
