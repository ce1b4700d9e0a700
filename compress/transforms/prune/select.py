"""Which layers a prune request touches: ratio keys (names, glob patterns, block indices) matched to
layers, the protected outputs, and why a group cannot be pruned."""

from __future__ import annotations

import fnmatch
import math
import re
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from torch import nn

from ...models.resnet import ResNet
from .. import _depgraph as dg

Ratios = Union[float, Mapping[Union[str, int], float]]


def check_ratio(value: Any, key: Any, *, upper_inclusive: bool = False) -> float:
    """``value`` as a float if it is a ratio in [0, 1) ([0, 1] with ``upper_inclusive``), else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"ratio for {key!r} must be a number in [0, 1), got {type(value).__name__} {value!r}")
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok or math.isnan(value):
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"ratio {value!r} for {key!r} is outside {interval}: it is the fraction of channels removed")
    return float(value)


def matches(name: str, pattern: str) -> bool:
    """Whether module ``name`` is ``pattern`` (a name or glob) or lies inside a module it names."""
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".") or (
        any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern + ".*")
    )


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of ``patterns`` (see :func:`matches`)."""
    return any(matches(name, p) for p in patterns)


def blocks(model: nn.Module) -> list[str]:
    """Names of the residual blocks in order (``layerN.M``)."""
    if isinstance(model, ResNet):
        return [f"layer{i + 1}.{j}" for i, s in enumerate(model.config.stages) for j in range(len(s.blocks))]
    return [n for n, _ in model.named_modules() if re.fullmatch(r"layer\d+\.\d+", n)]


def resolve(model: nn.Module, ratios: Ratios, layers: Sequence[str]) -> dict[str, tuple[float, int]]:
    """Map every matched layer name to (its ratio, the index of the key that set it), in layer order."""
    if isinstance(ratios, Mapping):
        items = list(ratios.items())
    elif isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        items = [("*", ratios)]
    else:
        raise TypeError(f"ratios must be a float or a mapping of layer names/patterns/block indices to floats, got {type(ratios).__name__}")
    resolved: dict[str, tuple[float, int]] = {}
    found_blocks = None
    for index, (key, value) in enumerate(items):
        r = check_ratio(value, key)
        if isinstance(key, int) and not isinstance(key, bool):
            found_blocks = found_blocks if found_blocks is not None else blocks(model)
            if not -len(found_blocks) <= key < len(found_blocks):
                raise ValueError(f"block index {key} is out of range: the model has {len(found_blocks)} residual blocks "
                                 f"(0..{len(found_blocks) - 1})")
            block = found_blocks[key]
            names = [
                n for n in layers
                if n.startswith(block + ".") and not re.match(r"(shortcut|downsample|se)\b", n[len(block) + 1:])
            ]
        elif isinstance(key, str):
            names = [n for n in layers if matches(n, key)]
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


def protected_outputs(traced: dg.Traced, outputs: str | Sequence[str | int]) -> list[str]:
    """The output paths of ``traced`` that ``outputs`` protects (``"all"``: every one)."""
    paths = list(traced.outputs)
    if outputs == "all":
        return paths
    wanted = [outputs] if isinstance(outputs, (str, int)) else list(outputs)
    found = []
    for w in wanted:
        key = str(w)
        hits = [p for p in paths if p == key or p.startswith(key + ".")]
        if not hits:
            raise ValueError(f"outputs: {w!r} is not an output of the model; its outputs are {', '.join(paths)}")
        found.extend(hits)
    return found


def blocked(g: dg.Group, ignored_in: Mapping[str, list[str]], keep_residual: bool) -> str | None:
    """Why group ``g`` cannot be pruned at all (None: it can); ``ignored_in`` maps group keys to the
    ignored layers in them."""
    if g.unsupported:
        return g.unsupported
    if g.reaches:
        return f"its channels are the model output {', '.join(map(repr, g.reaches))} (protected by outputs=)"
    if g.key in ignored_in:
        return f"it shares channels with ignored layer(s) {', '.join(ignored_in[g.key])}"
    if keep_residual and g.residual:
        return "it is a residual stream (its channels meet in an addition; kept by keep_residual=True)"
    if g.channels % g.ch_groups:
        return f"its {g.channels} channels do not split into {g.ch_groups} equal groups"
    if g.units < 2:
        return "it has a single channel" + (f" per group of {g.ch_groups}" if g.ch_groups > 1 else "")
    if not g.members:
        return "it has no prunable layer"
    return None


def targets(
    model: nn.Module,
    ratios: Ratios,
    groups: Sequence[dg.Group],
    candidates: Sequence[str],
    reason_of: Callable[[dg.Group], str | None],
) -> dict[str, tuple[float, int]]:
    """For every group with a requested ratio: (ratio, ranking scope). ``reason_of(group)`` says why a
    group cannot be pruned (None: it can)."""
    resolved = resolve(model, ratios, candidates)
    found_targets: dict[str, tuple[float, int]] = {}
    handled = set()
    for g in groups:
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
        reason = reason_of(g)
        if reason is not None:
            named = [n for n in members if isinstance(ratios, Mapping) and n in ratios]
            if named:
                raise ValueError(f"{', '.join(named)} cannot be pruned: {reason}")
            continue
        ratio = found.pop()
        if ratio > 0:
            found_targets[g.key] = (ratio, resolved[members[0]][1])
    missing = [n for n in resolved if n not in handled and isinstance(ratios, Mapping) and n in ratios]
    if missing:
        raise ValueError(f"{', '.join(missing)} cannot be pruned: its output channels are not traced into a group")
    return found_targets
