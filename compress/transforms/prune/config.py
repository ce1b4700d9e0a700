"""``PruneConfig``: everything a :func:`compress.prune` call can ask for, as one frozen value, with presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import torch_pruning as tp
from torch import nn

from . import vocab
from .importance import check_importance
from .select import Ratios, check_ratio

RANKINGS = ("local", "global", "isomorphic")
MODES = ("one-shot", "sequential")
DEFAULT_INPUT_SIZE = (1, 3, 32, 32)

#: The settings of the two presets: a freshly built network (uniform widths, as the reports pruned) and
#: a trained one (:meth:`PruneConfig.trained`): the setting that kept most accuracy on the trained
#: ResNet-56 pruned to half its FLOPs before fine-tuning, 38.94% against 34.59% for the untrained defaults
#: (``benchmarks/prune_criteria.py``; ``benchmarks/results/prune-criteria-resnet56.json``).
UNTRAINED: dict[str, Any] = {"ranking": "local", "importance": "l1", "keep_residual": False}
TRAINED: dict[str, Any] = {"ranking": "global", "importance": "l2", "keep_residual": True}
PRESETS = {"untrained": UNTRAINED, "trained": TRAINED}


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how; every field is a keyword of :func:`compress.prune` (see its docstring and
    docs/transforms/prune.md). Values are checked when the config is made; a one-line error otherwise.

    ``PruneConfig()`` holds the defaults for a freshly built network; :meth:`trained` the preset for a
    trained one. Change fields with :meth:`replace`; Torch-Pruning's names convert with
    :meth:`from_torch_pruning`.
    """

    ratios: Ratios | None = None
    importance: str | tp.importance.Importance = "l1"
    ranking: Literal["local", "global", "isomorphic"] = "local"
    max_ratio: float = 1.0
    steps: int = 1
    round_to: int | None = None
    mode: Literal["one-shot", "sequential"] = "one-shot"
    target_params: int | None = None
    target_flops: int | None = None
    ignore: Sequence[str] = ()
    keep_residual: bool = False
    outputs: str | Sequence[str | int] = "all"
    inputs: Any = None
    input_size: Sequence[int] | None = None
    data: Any = None
    num_heads: Mapping[Any, int] | None = None
    unwrapped: Mapping[str, int] | None = None
    fix: Callable[[nn.Module], Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.keep_residual, bool):
            raise TypeError(f"keep_residual must be True or False, got {self.keep_residual!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'one-shot' or 'sequential', got {self.mode!r}")
        if self.ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {', '.join(map(repr, RANKINGS))}, got {self.ranking!r}")
        if self.mode == "sequential" and (self.ranking != "local" or self.steps != 1):
            raise ValueError("mode='sequential' prunes layer by layer: it takes neither ranking='global'/'isomorphic' nor steps")
        r = self.round_to
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(f"round_to must be a positive integer or None, got {r!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "max_ratio", check_ratio(self.max_ratio, "max_ratio", upper_inclusive=True))
        if self.fix is not None and not callable(self.fix):
            raise TypeError(f"fix must be a callable taking the pruned model, got {type(self.fix).__name__}")
        ignore = (self.ignore,) if isinstance(self.ignore, str) else self.ignore
        bad = [p for p in ignore if not isinstance(p, str)] if isinstance(ignore, Iterable) else [ignore]
        if bad:
            raise TypeError(f"ignore takes layer names or glob patterns (strings), got {type(bad[0]).__name__} {bad[0]!r}; "
                            "to ignore modules, pass them as ignored_layers=")
        object.__setattr__(self, "ignore", tuple(ignore))
        if self.inputs is not None and self.input_size is not None:
            raise TypeError("give example inputs or input_size, not both")
        check_importance(self.importance)
        if self.target_params is not None or self.target_flops is not None:
            if self.ratios is not None:
                raise TypeError("give either ratios or a budget (target_params / target_flops), not both")
            if self.target_params is not None and self.target_flops is not None:
                raise TypeError("give one budget: target_params or target_flops")
            what, value = self.budget
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"target_{what} must be a positive integer, got {value!r}")

    # --- presets and changes --------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **changes: Any) -> PruneConfig:
        """The preset ``name`` (``"untrained"`` or ``"trained"``) with ``changes``. In sequential mode the
        ranking is always per layer, so a preset's ranking applies to the other modes only."""
        if name not in PRESETS:
            raise ValueError(f"unknown prune preset {name!r}; presets: {', '.join(PRESETS)}")
        settings = dict(PRESETS[name])
        if changes.get("mode") == "sequential":
            settings["ranking"] = "local"
        check_fields(changes)
        return cls(**{**settings, **changes})

    @classmethod
    def trained(cls, **changes: Any) -> PruneConfig:
        """The preset for trained networks: global ranking, L2 importance, residual streams kept (what
        kept most accuracy on a trained ResNet-56 pruned to half its FLOPs), with ``changes``."""
        return cls.preset("trained", **changes)

    @classmethod
    def from_torch_pruning(cls, model: nn.Module, **names: Any) -> PruneConfig:
        """The config for Torch-Pruning's ``MetaPruner`` arguments (``pruning_ratio``,
        ``pruning_ratio_dict``, ``global_pruning``, ``isomorphic``, ``max_pruning_ratio``,
        ``iterative_steps``, ``ignored_layers``, ``example_inputs``, ``unwrapped_parameters``); modules
        and parameters are named as in ``model``."""
        return cls(**vocab.translate(model, names))

    def replace(self, **changes: Any) -> PruneConfig:
        """A copy with ``changes`` (checked like a new config)."""
        check_fields(changes)
        return dataclasses.replace(self, **changes)

    @property
    def budget(self) -> tuple[str, int] | None:
        """``("params", n)`` or ``("flops", n)`` for a budget, else None."""
        if self.target_params is not None:
            return ("params", self.target_params)
        if self.target_flops is not None:
            return ("flops", self.target_flops)
        return None


FIELDS = tuple(f.name for f in dataclasses.fields(PruneConfig))


def check_fields(changes: Mapping[str, Any], *, accepted: Sequence[str] = FIELDS, what: str = "PruneConfig") -> None:
    """A one-line TypeError naming the accepted names if ``changes`` has a name that is not a field."""
    unknown = [k for k in changes if k not in accepted]
    if unknown:
        raise TypeError(f"{what} got an unexpected keyword argument {unknown[0]!r}; accepted: {', '.join(accepted)}")
