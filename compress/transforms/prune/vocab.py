"""Torch-Pruning's vocabulary: its ``MetaPruner`` argument names translated into :class:`PruneConfig` fields."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

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
"""Torch-Pruning's MetaPruner argument names that compress accepts, and the compress field each one sets."""

TORCH_PRUNING_UNSUPPORTED = (
    "prune_num_heads", "prune_head_dims", "head_pruning_ratio", "head_pruning_ratio_dict", "customized_pruners",
    "root_module_types", "forward_fn", "output_transform", "in_channel_groups", "out_channel_groups",
    "channel_groups", "iterative_pruning_ratio_scheduler",
)

# the compress defaults a Torch-Pruning name may replace without a conflict
_DEFAULTS = dict(ratios=None, ranking="local", max_ratio=1.0, steps=1, ignore=(), inputs=None, unwrapped=None)


def is_torch_pruning_name(name: str) -> bool:
    """Whether ``name`` is one of Torch-Pruning's MetaPruner argument names (supported or not)."""
    return name in TORCH_PRUNING_ALIASES or name in TORCH_PRUNING_UNSUPPORTED


def translate(model: nn.Module, names: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compress field values for Torch-Pruning's argument ``names`` (modules become ``model``'s layer names).

    ``given`` are compress-named values set beside them: the result is both together, and a TypeError
    where a field is given under both names.
    """
    out = dict(given or {})
    for name in names:
        if name in TORCH_PRUNING_UNSUPPORTED:
            raise TypeError(f"{name!r} is a Torch-Pruning option that compress.prune() does not support")
        if name not in TORCH_PRUNING_ALIASES:
            raise TypeError(f"{name!r} is not a Torch-Pruning name compress accepts ({', '.join(TORCH_PRUNING_ALIASES)})")

    def put(target: str, value: Any, alias: str) -> None:
        if out.get(target) is not None and out[target] != _DEFAULTS[target]:
            raise TypeError(f"give {target}= or its Torch-Pruning alias {alias}=, not both")
        out[target] = value

    module_names = {m: n for n, m in model.named_modules()}
    ratio = names.get("pruning_ratio", names.get("ch_sparsity"))
    ratio_dict = names.get("pruning_ratio_dict", names.get("ch_sparsity_dict"))
    if ratio is not None or ratio_dict is not None:
        if out.get("ratios") is not None:
            raise TypeError("give ratios= or Torch-Pruning's pruning_ratio=/pruning_ratio_dict=, not both")
        if ratio_dict is not None and not isinstance(ratio_dict, Mapping):
            raise TypeError(f"pruning_ratio_dict maps modules (or layer names) to ratios, got {type(ratio_dict).__name__} "
                            f"{ratio_dict!r}")
        if ratio_dict:
            mapping: dict = {} if ratio is None else {"*": ratio}
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
        resolved = []
        for m in names["ignored_layers"] or []:
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
        mapping = {}
        for p, dim in pairs.items() if isinstance(pairs, Mapping) else pairs:
            if p not in params:
                raise ValueError("unwrapped_parameters holds a parameter that is not part of the model")
            mapping[params[p]] = dim
        put("unwrapped", mapping, "unwrapped_parameters")
    return out
