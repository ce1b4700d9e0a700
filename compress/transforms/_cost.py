"""Params and FLOPs of a pruning plan, predicted from layer shapes (so a budget search needs no pruning).

The prediction starts from the unpruned model's counts (:func:`compress.count_params`, fvcore FLOPs per
layer, as :func:`compress.count_flops` counts them: one convention, pooling counted, so a prediction
is what the counter then measures) and rescales each layer that a plan touches by how
its shape changes: a conv or linear layer by ``out * in / groups``, a norm layer by its channels, a
pooling op (a module or a call such as ``x.mean((2, 3))``, found in torch-pruning's graph) by the
channels it pools. Where a plan touches a layer this does not model (attention, LSTM), or FLOPs are
spent outside any layer and any pooling op, :meth:`CostModel.predict` says so (it returns None) and
the caller measures a pruned copy instead.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..metrics import count_params, flops_by_module, fvcore_by_module

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def flops_per_module(model: nn.Module, inputs: Any, input_size: Any) -> dict[str, int]:
    """FLOPs per named module (``""``: the whole model) on ``inputs`` (or zeros of ``input_size``), counted
    as :func:`compress.count_flops` counts them (fvcore, pooling counted)."""
    if inputs is None:
        return flops_by_module(model, input_size)
    if isinstance(inputs, Mapping):
        raise ValueError("target_flops needs positional example inputs (a tensor or a tuple), not a dict")
    return fvcore_by_module(model, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,))


def measure(model: nn.Module, what: str, inputs: Any, input_size: Any) -> int:
    """The real params (trainable) or FLOPs of ``model``."""
    if what == "params":
        return count_params(model)
    return int(flops_per_module(model, inputs, input_size)[""])


def _weight_factor(m: nn.Module, out: int, inp: int) -> int | None:
    """What a layer's weight size and FLOPs are proportional to, at ``out`` outputs and ``inp`` inputs."""
    if isinstance(m, nn.modules.conv._ConvNd):
        groups = out if m.groups == m.out_channels and m.groups > 1 else m.groups  # depthwise stays depthwise
        return out * (inp // groups)
    if isinstance(m, nn.Linear):
        return out * inp
    return None


class CostModel:
    """Predicts params or FLOPs after a plan, from the unpruned model (see the module docstring)."""

    def __init__(self, net: nn.Module, what: str, inputs: Any, input_size: Any, param_dims: Mapping[Any, int] = {},
                 pooling: Mapping[Any, tuple[int, int]] = {}) -> None:
        self.what = what
        self.param_dims = param_dims  # unwrapped parameter -> the dim torch-pruning prunes
        self.pooling = pooling  # torch-pruning node -> (FLOPs per pooled channel, channels); see dg.pooling_costs
        self.names = {m: n for n, m in net.named_modules()}
        if what == "params":
            self.total = count_params(net)
            self.flops: dict[str, int] = {}
            self.unattributed = 0
        else:
            self.flops = flops_per_module(net, inputs, input_size)
            self.total = int(self.flops[""])
            # FLOPs outside every layer with parameters must all be pooling that the graph shows
            layers = {n for n, m in net.named_modules()
                      if not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False))}
            outside = self.total - sum(int(v) for n, v in self.flops.items() if n in layers)
            self.unattributed = outside - sum(per * channels for per, channels in pooling.values())

    def predict(self, removed: Mapping[tuple[Any, str], set[int]]) -> int | None:
        """Params/FLOPs after a plan (``removed`` from :func:`check_plan`), or None where not modelled."""
        if not removed:
            return self.total
        if self.what == "flops" and self.unattributed:
            return None
        lost: dict[Any, dict[str, set[int]]] = {}
        for (module, role), idxs in removed.items():
            lost.setdefault(module, {}).setdefault(role, set()).update(idxs)
        total = self.total
        for module, roles in lost.items():
            if module in self.pooling:
                if self.what == "flops":
                    total -= self.pooling[module][0] * len(set().union(*roles.values()))
                continue
            if type(module).__module__.startswith("torch_pruning"):
                continue  # bookkeeping nodes (concat, split, outputs) hold no params or FLOPs
            delta = self._delta(module, roles)
            if delta is None:
                return None
            total -= delta
        return total

    def _delta(self, m: Any, roles: Mapping[str, set[int]]) -> int | None:
        """How much ``m`` loses."""
        n_out, n_in = len(roles.get("out", ())), len(roles.get("in", ()))
        if isinstance(m, nn.Parameter):  # an unwrapped parameter, pruned along one dim
            if self.what == "flops" or not m.requires_grad:
                return 0
            dim = self.param_dims.get(m)
            if dim is None:
                return None
            size = m.shape[dim]
            return m.numel() - m.numel() // size * (size - len(roles.get("out", set()) | roles.get("in", set())))
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.out_channels and m.groups > 1:
            gone = len(roles.get("out", set()) | roles.get("in", set()))
            new_out, new_in = m.out_channels - gone, m.in_channels - gone
        elif isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            old_out = m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
            old_in = m.in_channels if isinstance(m, nn.modules.conv._ConvNd) else m.in_features
            new_out, new_in = old_out - n_out, old_in - n_in
        elif isinstance(m, _NORMS) or (isinstance(m, nn.PReLU) and m.num_parameters > 1):
            return self._norm_delta(m, len(roles.get("out", set()) | roles.get("in", set())))
        elif isinstance(m, nn.Module) and not any(True for _ in m.parameters(recurse=False)) and not self._own_flops(m):
            return 0  # parameter-free and FLOP-free (activations, dropout)
        else:
            return None
        old = _weight_factor(m, m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features,
                             m.in_channels if isinstance(m, nn.modules.conv._ConvNd) else m.in_features)
        new = _weight_factor(m, new_out, new_in)
        if old is None or new is None or old == 0:
            return None
        if self.what == "flops":
            f = self._own_flops(m)
            return f - f * new // old
        delta = 0
        if m.weight is not None and m.weight.requires_grad:
            delta += m.weight.numel() - m.weight.numel() * new // old
        bias = getattr(m, "bias", None)
        if bias is not None and bias.requires_grad:
            delta += bias.numel() - new_out
        return delta

    def _norm_delta(self, m: nn.Module, gone: int) -> int | None:
        if isinstance(m, nn.LayerNorm):
            channels = m.normalized_shape[-1]
        elif isinstance(m, nn.PReLU):
            channels = m.num_parameters
        else:
            channels = m.num_features if hasattr(m, "num_features") else m.num_channels
        if self.what == "flops":
            f = self._own_flops(m)
            return f - f * (channels - gone) // channels
        return sum(p.numel() - p.numel() * (channels - gone) // channels for p in m.parameters(recurse=False) if p.requires_grad)

    def _own_flops(self, m: nn.Module) -> int:
        if self.what != "flops":
            return 0
        name = self.names.get(m)
        return int(self.flops.get(name, 0)) if name is not None else 0
