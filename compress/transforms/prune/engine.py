"""The one pruning engine over torch-pruning: copy, trace, score, plan, check, apply, finish.

Nothing here mutates itself: :func:`setup` checks a request against the caller's model once
(:class:`Setup`), :func:`start` copies and traces it, and every step traces the pruned copy again into
a fresh :class:`State`. :func:`compress.prune` (one-shot, stepped, sequential, budgets) and layer
surgery (:func:`shrink_to`, for ``scale_width``) both prune through it.
"""

from __future__ import annotations

import copy
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from ...models.resnet import ResNet, WhiteningConv
from .. import _depgraph as dg
from .._cost import CostModel, measure
from .._depgraph import PruneError
from . import importance as imp
from . import search, select
from .config import DEFAULT_INPUT_SIZE, PruneConfig
from .plan import Planner, round_down, round_unit, weakest


@dataclass(frozen=True)
class Setup:
    """One request checked against the caller's ``model`` (which is never changed)."""

    model: nn.Module
    config: PruneConfig
    device: torch.device
    inputs: Any  # example inputs on the model's device (zeros of input_size by default)
    input_size: tuple[int, ...] | None
    flags: dict[str, bool]  # requires_grad of every parameter, by name
    was_training: bool
    heads_by_name: dict[str, int]
    unwrapped_by_name: dict[str, int]

    @property
    def flops_inputs(self) -> Any:
        """What FLOPs are counted on: the caller's inputs, or None for zeros of ``input_size``."""
        return None if self.config.inputs is None else self.inputs


@dataclass(frozen=True)
class State:
    """A (copied, possibly pruned) network traced: its graph and groups, and what may not be pruned."""

    net: nn.Module
    traced: dg.Traced
    groups: list[dg.Group]
    protected: list[str]
    num_heads: dict[Any, int]
    ignored: list[nn.Module]
    ignored_in: dict[str, list[str]]  # group key -> ignored layers in it
    candidates: list[str]  # layers whose output channels may be pruned

    def blocked(self, g: dg.Group, keep_residual: bool) -> str | None:
        """Why group ``g`` cannot be pruned (None: it can)."""
        return select.blocked(g, self.ignored_in, keep_residual)

    def protected_nodes(self) -> dict[Any, str]:
        """Graph node -> the protected output path it produces."""
        outputs = self.traced.output_nodes
        return {outputs[p]: p for p in self.protected if p in outputs}

    def param_dims(self) -> dict:
        """Unwrapped parameter -> the dim torch-pruning prunes."""
        graph = self.traced.graph
        return {m: node.pruning_dim for m, node in graph.module2node.items() if isinstance(m, nn.Parameter)}


def setup(model: nn.Module, config: PruneConfig) -> Setup:
    """Check ``config``'s layer names, heads and parameters against ``model``."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise TypeError(f"prune() needs a model with parameters; {type(model).__name__} has none") from None
    input_size = tuple(config.input_size) if config.input_size is not None else (DEFAULT_INPUT_SIZE if config.inputs is None else None)
    inputs = dg.to_device(config.inputs, device) if config.inputs is not None else torch.zeros(*input_size, device=device)
    names = dict(model.named_modules())
    params = dict(model.named_parameters())
    heads: dict[str, int] = {}
    for key, value in (config.num_heads or {}).items():
        name = next((n for n, m in names.items() if m is key), None) if isinstance(key, nn.Module) else key
        if name not in names:
            raise ValueError(f"num_heads: {key!r} is not a layer of the model")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"num_heads for {name!r} must be a positive integer, got {value!r}")
        heads[name] = value
    unwrapped = {}
    for name, dim in (config.unwrapped or {}).items():
        if name not in params:
            raise ValueError(f"unwrapped: {name!r} is not a parameter of the model (named like {', '.join(list(params)[:3])}, ...)")
        if isinstance(dim, bool) or not isinstance(dim, int) or not -params[name].dim() <= dim < params[name].dim():
            raise ValueError(f"unwrapped: dim {dim!r} is not a dimension of {name!r} (shape {tuple(params[name].shape)})")
        unwrapped[name] = dim % params[name].dim()
    return Setup(model, config, device, inputs, input_size, {n: p.requires_grad for n, p in params.items()},
                 model.training, heads, unwrapped)


def start(s: Setup) -> State:
    """A copy of the caller's model (in eval mode), traced."""
    net = copy.deepcopy(s.model)
    net.eval()
    return trace_state(s, net)


def trace_state(s: Setup, net: nn.Module) -> State:
    """Trace ``net`` into a fresh :class:`State`: its groups, the protected outputs, the ignored layers."""
    params = dict(net.named_parameters())
    unwrapped = [(params[n], d) for n, d in s.unwrapped_by_name.items()] or None
    traced = dg.trace(net, s.inputs, unwrapped)
    protected = select.protected_outputs(traced, s.config.outputs)
    modules = dict(net.named_modules())
    num_heads = {m: m.num_heads for m in net.modules() if isinstance(m, nn.MultiheadAttention)}
    num_heads.update({modules[n]: h for n, h in s.heads_by_name.items()})
    patterns = s.config.ignore
    # a frozen patch-whitening layer is never pruned: its filters are a whole eigenbasis, and the stem
    # conv after it keeps all its input channels
    ignored = [m for n, m in net.named_modules() if n and (select.matches_any(n, patterns) or isinstance(m, WhiteningConv))]
    if patterns:
        unmatched = [p for p in patterns if not any(select.matches(n, p) for n in modules if n)]
        if unmatched:
            raise ValueError(f"ignore: {', '.join(map(repr, unmatched))} matches no module of the model")
    groups = dg.collect_groups(traced, ignored=[], protected=protected, num_heads=num_heads)
    ignored_set = set(ignored)
    graph = traced.graph
    ignored_in = {}
    for g in groups:
        hits = [traced.names.get(d.target.module, "?") for d, _ in g.items
                if d.target.module in ignored_set and graph.is_out_channel_pruning_fn(d.handler)]
        if hits:
            ignored_in[g.key] = hits
    candidates = [n for n, m in net.named_modules() if isinstance(m, dg.ROOT_TYPES) and m in graph.module2node and m not in ignored_set]
    return State(net, traced, groups, protected, num_heads, ignored, ignored_in, candidates)


def score(s: Setup, state: State, importance: tp.importance.Importance, groups: Sequence[dg.Group] | None = None) -> None:
    """Score ``groups`` (all of ``state``'s by default)."""
    imp.score(state.net, list(state.groups if groups is None else groups), importance,
              data=s.config.data, device=s.device, flags=s.flags)


def apply(s: Setup, state: State, plan: dict, groups: Sequence[dg.Group] | None = None) -> None:
    """Check and carry out ``plan`` on ``state.net``, then settle the pruned net (flags, grads, widths)."""
    groups = state.groups if groups is None else groups
    dg.check_plan(state.traced, groups, plan)
    dg.apply_plan(state.traced, groups, plan)
    settle(s, state.net)


def settle(s: Setup, net: nn.Module) -> None:
    """After pruning: the caller's ``requires_grad`` flags back, no gradients left, width attributes fixed."""
    dg.restore_requires_grad(net, s.flags)
    net.zero_grad(set_to_none=True)
    apply_fixes(s, net)


def apply_fixes(s: Setup, net: nn.Module) -> None:
    """Update width attributes pruning cannot see: known torchvision models', then the caller's ``fix``."""
    vit = sys.modules.get("torchvision.models.vision_transformer")  # loaded if the model is one
    if vit is not None:
        for m in net.modules():
            if isinstance(m, vit.VisionTransformer):
                m.hidden_dim = m.conv_proj.out_channels
    if s.config.fix is not None:
        s.config.fix(net)


def finish(s: Setup, state: State) -> nn.Module:
    """The pruned net, checked: it runs on the example inputs and every protected output kept its shape."""
    net = state.net
    dg.restore_requires_grad(net, s.flags)
    net.zero_grad(set_to_none=True)
    for module in net.modules():  # the model itself, or one inside a wrapper (DataParallel, any `.module`)
        if isinstance(module, ResNet):
            module.config = module.config_from_modules()
    try:
        with torch.no_grad():
            out = dg.call_model(net, s.inputs)
    except Exception as e:  # noqa: BLE001 - any failure here means the pruned model is broken
        raise PruneError(
            f"the pruned model fails on the example inputs ({type(e).__name__}: {e}); if the model stores "
            "widths in attributes, update them with fix=lambda m: ..."
        ) from e
    shapes = {p: tuple(t.shape) for p, t in dg.flatten_outputs(out)}
    for path in state.protected:
        before = state.traced.outputs.get(path)
        if shapes.get(path) != before:
            raise PruneError(f"pruning changed the protected output {path!r} from {before} to {shapes.get(path)}")
    net.train(s.was_training)
    return net


def measure_plan(s: Setup, state: State, plan: dict, what: str) -> int:
    """Real params/FLOPs of ``state.net`` pruned by ``plan``, on a copy (for layers the cost model lacks)."""
    trial = trace_state(s, copy.deepcopy(state.net))
    dg.apply_plan(trial.traced, trial.groups, plan)
    apply_fixes(s, trial.net)
    return measure(trial.net, what, s.flops_inputs, s.input_size)


# --- the modes ---------------------------------------------------------------------------------------

def one_shot(s: Setup, importance: tp.importance.Importance) -> nn.Module:
    """Prune at ``s.config``'s ratios or to its budget, in ``steps`` steps, ranked as it says."""
    config = s.config
    state = start(s)
    budget = config.budget
    targets = target_groups(s, state)
    planner = Planner({g.key: g.units for g in state.groups}, config.ranking, config.max_ratio, config.round_to)
    if budget is not None:
        what, value = budget
        start_cost = CostModel(state.net, what, s.flops_inputs, s.input_size, state.param_dims(), dg.pooling_costs(state.traced.graph)).total
        if start_cost <= value:
            _nothing_to_prune(what, value, start_cost)
            return finish(s, state)
    for step in range(1, config.steps + 1):
        if step > 1:
            state = trace_state(s, state.net)
        score(s, state, importance)
        groups = [g for g in state.groups if g.key in targets and g.scores is not None]
        if budget is None:
            frac = step / config.steps
            plan = planner.plan(groups, {k: (r * frac, scope) for k, (r, scope) in targets.items()})
        else:
            goal = start_cost - (start_cost - value) * step // config.steps
            plan, expected = _budget_plan(s, state, planner, groups, targets, goal, value)
        apply(s, state, plan)
    if budget is not None:
        real = measure(state.net, what, s.flops_inputs, s.input_size)
        if real != expected or real > value:  # never a silent miss of the budget
            raise RuntimeError(f"prune() bug: the pruned model has {real:,} {what} where {expected:,} were "
                               f"predicted (budget {value:,}); please report it")
    return finish(s, state)


def target_groups(s: Setup, state: State) -> dict[str, tuple[float | None, int]]:
    """The groups of ``state`` a one-shot prune of ``s.config`` may cut, by key: (ratio, ranking scope);
    ratio None under a budget, or without ratios (every prunable group with a candidate layer is eligible)."""
    config, keep_residual = s.config, s.config.keep_residual
    if config.ratios is not None:
        return select.targets(s.model, config.ratios, state.groups, state.candidates,
                              lambda g: state.blocked(g, keep_residual))
    return {g.key: (None, 0) for g in state.groups
            if state.blocked(g, keep_residual) is None and any(n in state.candidates for n in g.members)}


def _nothing_to_prune(what: str, budget: int, size: int) -> None:
    """Warn that a budget at or above the model's size leaves it unpruned (the result is a plain copy)."""
    warnings.warn(f"target_{what}={budget:,} is at or above the model's {size:,} {search.label(what)}: "
                  "nothing was pruned (the result is an unpruned copy)", UserWarning, stacklevel=4)


def _budget_plan(s: Setup, state: State, planner: Planner, groups: list[dg.Group], targets: Mapping[str, tuple],
                 goal: int, budget: int) -> tuple[dict, int]:
    """The plan at the smallest ratio whose predicted cost is at most ``goal``, and that cost."""
    what = s.config.budget[0]
    cost_model = CostModel(state.net, what, s.flops_inputs, s.input_size, state.param_dims(), dg.pooling_costs(state.traced.graph))

    def evaluate_plan(plan: dict) -> tuple[dict, int]:
        cost = cost_model.predict(dg.check_plan(state.traced, state.groups, plan))
        return plan, cost if cost is not None else measure_plan(s, state, plan, what)

    def evaluate(r: float) -> tuple[dict, int]:
        return evaluate_plan(planner.plan(groups, {k: (r, scope) for k, (_, scope) in targets.items()}))

    units = sum(planner.initial[g.key] for g in groups) or 1
    best, floor = search.smallest_ratio(evaluate, goal, hi=1.0, tol=min(1e-4, 0.5 / units))
    if best is None:
        try:
            _, least = evaluate_plan(planner.fewest(groups))
        except PruneError:
            least = floor[1] if floor else None
        left = f"leaves {least:,}" if least is not None else "empties a layer"
        raise ValueError(f"no ratio reaches {budget:,} {search.label(what)}: even keeping the fewest channels every layer allows {left}")
    return best


def sequential(s: Setup, importance: tp.importance.Importance) -> nn.Module:
    """Visit the matched layers in order, each losing ``int(r * n)`` of its current width (ratios
    compound along a residual stream: torch-pruning 0.2.8's procedure); to a budget if one is set:
    the smallest ratio for every layer whose result fits."""
    config = s.config
    if config.budget is None:
        return _sequential_at(s, importance, config.ratios)
    what, value = config.budget

    def cost(m: nn.Module) -> int:
        inputs = None if config.inputs is None else dg.to_device(config.inputs, next(m.parameters()).device)
        return measure(m, what, inputs, s.input_size)

    if (start := cost(s.model)) <= value:
        _nothing_to_prune(what, value, start)
        return copy.deepcopy(s.model)

    def evaluate(r: float) -> tuple[nn.Module, int]:
        candidate = _sequential_at(s, importance, r)
        return candidate, cost(candidate)

    best, _ = search.smallest_ratio(evaluate, value, hi=0.99, tol=1e-3)
    if best is None:
        raise ValueError(f"no ratio reaches {value:,} {search.label(what)} in sequential mode")
    return best[0]


def _sequential_at(s: Setup, importance: tp.importance.Importance, ratios: Any) -> nn.Module:
    """Sequential pruning at ``ratios`` (see :func:`sequential`)."""
    config = s.config
    state = start(s)
    resolved = select.resolve(s.model, ratios, state.candidates)
    modules = dict(state.net.named_modules())
    traced, graph = state.traced, state.traced.graph
    protected_nodes = state.protected_nodes()
    ignored = set(state.ignored)
    for name, (ratio, _) in resolved.items():
        module = modules[name]
        fn = graph.get_pruner_of_module(module).prune_out_channels
        n = graph.get_out_channels(module)
        group = dg.make_group(traced, graph.get_pruning_group(module, fn, list(range(n))), protected_nodes, state.num_heads)
        hits = [traced.names.get(d.target.module, "?") for d, _ in group.items
                if d.target.module in ignored and graph.is_out_channel_pruning_fn(d.handler)]
        reason = (f"it shares channels with ignored layer(s) {', '.join(hits)}" if hits else
                  f"its channels are the model output {', '.join(map(repr, group.reaches))}" if group.reaches else
                  f"its {group.channels} channels do not split into {group.ch_groups} groups"
                  if group.channels % group.ch_groups else None)
        if reason is not None:
            if isinstance(ratios, Mapping) and name in ratios:  # named on purpose: an error, as in one-shot mode
                raise ValueError(f"{name} cannot be pruned: {reason}")
            continue  # matched by a float or a pattern: left as it is, as in one-shot mode
        keep = group.units - int(ratio * group.units)  # torch-pruning 0.2.8: remove int(r * n)
        keep = round_down(keep, round_unit(config.round_to, group.ch_groups))
        if keep < 1:
            raise PruneError(f"{name}: ratio {ratio} with round_to={config.round_to} leaves no channel of {group.channels}")
        if keep == group.units:
            continue
        score(s, state, importance, [group])
        if group.scores is None:
            raise PruneError(f"{group.key}: the importance criterion gives no scores for this group")
        plan = {group.key: weakest(group.scores, group.units - keep)}
        dg.check_plan(traced, [group], plan)
        dg.apply_plan(traced, [group], plan)
    settle(s, state.net)
    return finish(s, state)


# --- layer surgery --------------------------------------------------------------------------------------

def shrink_to(model: nn.Module, widths: Mapping[str, int], importance: tp.importance.Importance,
              input_size: Sequence[int], ignore: Sequence[str] = ()) -> nn.Module:
    """A copy of ``model`` whose layers (by name) keep at most ``widths[name]`` output channels, the
    ``importance`` weakest going; a group of coupled layers keeps the largest width any member asks for.

    Groups are taken one after another in graph order, each scored just before it is pruned (after the
    groups before it), as torch-pruning's own loop over ``get_all_groups`` does.
    """
    s = setup(model, PruneConfig(input_size=tuple(input_size), ignore=tuple(ignore)))
    state = start(s)
    traced = state.traced
    protected_nodes = state.protected_nodes()
    for tg in traced.graph.get_all_groups(ignored_layers=list(state.ignored), root_module_types=dg.ROOT_TYPES):
        g = dg.make_group(traced, tg, protected_nodes, state.num_heads)
        wanted = [widths[n] for n in g.members if n in widths] if g is not None else []
        if not wanted or max(wanted) >= g.channels or select.blocked(g, {}, False) is not None:
            continue
        score(s, state, importance, [g])
        apply(s, state, {g.key: weakest(g.scores, g.units - max(wanted) // g.ch_groups)}, [g])
    return finish(s, state)
