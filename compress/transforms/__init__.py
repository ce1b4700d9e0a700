"""Compression transforms: plain functions ``model -> new model`` that compose in any order.

Every transform returns a new model and never mutates its input. ``compose`` chains them; ``REGISTRY``
maps names to functions (recipes refer to transforms by these names)::

    from compress.transforms import compose, transform
    pipeline = compose(transform("scale_width", factor=0.5), transform("redistribute_blocks", blocks=[4, 6, 8, 2]))
    small = pipeline(compress.resnet18())
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

from .prune import IMPORTANCES, PruneConfig, prunable_layers, prune
from .surgery import add_se, insert_stage, redistribute_blocks, remove_stage, scale_width, set_kernels
from .whiten import init_whitening, whiten_stem

__all__ = [
    "prune",
    "PruneConfig",
    "prunable_layers",
    "IMPORTANCES",
    "remove_stage",
    "insert_stage",
    "scale_width",
    "redistribute_blocks",
    "set_kernels",
    "add_se",
    "whiten_stem",
    "init_whitening",
    "REGISTRY",
    "transform",
    "compose",
    "Compose",
]

Transform = Callable[[nn.Module], nn.Module]

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "prune": prune,
    "remove_stage": remove_stage,
    "insert_stage": insert_stage,
    "scale_width": scale_width,
    "redistribute_blocks": redistribute_blocks,
    "set_kernels": set_kernels,
    "add_se": add_se,
    "whiten_stem": whiten_stem,  # in a recipe: the structure only; bench computes the weights before training
}
"""Transform functions by name, as used in recipe files."""


class _Bound(functools.partial):
    """A transform with its arguments bound; prints as ``name(arg=value, ...)``."""

    def __repr__(self) -> str:
        args = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.keywords.items()]
        return f"{self.func.__name__}({', '.join(args)})"


def transform(name: str, *args: Any, **kwargs: Any) -> Transform:
    """The registered transform ``name`` with its arguments bound: a callable ``model -> new model``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown transform {name!r}; known transforms: {', '.join(REGISTRY)}")
    return _Bound(REGISTRY[name], *args, **kwargs)


class Compose:
    """Apply transforms in order: ``Compose([t1, t2])(model) == t2(t1(model))``."""

    def __init__(self, transforms: list[Transform]) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose takes callables model -> model, got {t!r}")
        self.transforms = list(transforms)

    def __call__(self, model: nn.Module) -> nn.Module:
        for t in self.transforms:
            model = t(model)
        return model

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


def compose(*transforms: Transform) -> Compose:
    """Chain transforms into one callable (``compose(a, b)(m) == b(a(m))``)."""
    return Compose(list(transforms))
