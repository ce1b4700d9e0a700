"""Shared pieces of the structural transforms: input checks and weight transfer between ResNets."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..models.resnet import ResNet, ResNetConfig, StageConfig


def require_resnet(model: nn.Module, transform: str) -> ResNet:
    """Return ``model`` if it is a compress ResNet, else raise a TypeError naming the transform."""
    if not isinstance(model, ResNet):
        raise TypeError(
            f"{transform}() works on compress ResNets (compress.models.ResNet), got "
            f"{type(model).__module__}.{type(model).__qualname__}; "
            "build one with compress.resnet18() or compress.models.ResNet(config), or convert a torchvision "
            "ResNet with compress.models.from_torchvision(model). "
            "compress.prune() works on any model."
        )
    return model


def stage_index(config: ResNetConfig, index: int, *, allow_end: bool = False) -> int:
    """Normalise a 0-based (or negative) stage index; ValueError if out of range."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"stage index must be an int, got {type(index).__name__} {index!r}")
    n = len(config.stages)
    hi = n if allow_end else n - 1
    i = index + n if index < 0 else index
    if not 0 <= i <= hi:
        raise ValueError(
            f"stage index {index} is out of range: the model has {n} stages (valid: {-n}..{hi}; "
            "stage 0 is module 'layer1')"
        )
    return i


def reset_projection(stage: StageConfig, **changes) -> StageConfig:
    """A changed stage: keeps an explicit projection shortcut, otherwise lets it be derived again."""
    return dataclasses.replace(stage, projection=True if stage.projection else None, **changes)


def copy_tensor(dst: torch.Tensor, src: torch.Tensor, *, grow: bool = False) -> bool:
    """Copy ``src`` into ``dst`` where it fits; return whether anything was copied.

    Shapes equal: full copy. Spatial dims (2 and up) differ: centred crop or zero pad, which keeps a
    conv's function when its kernel grows. Channel dims (0, 1) differ: only with ``grow``, copying the
    leading channels (used when widths grow; shrinking is done by pruning beforehand).
    """
    if dst.shape == src.shape:
        dst.copy_(src)
        return True
    if dst.dim() != src.dim() or dst.dim() == 0:
        return False
    if not grow and dst.shape[:2] != src.shape[:2]:
        return False
    if dst.dim() > 2:
        dst.zero_()
    dst_idx, src_idx = [], []
    for axis, (d, s) in enumerate(zip(dst.shape, src.shape)):
        n = min(d, s)
        if axis < 2:
            dst_idx.append(slice(0, n))
            src_idx.append(slice(0, n))
        else:
            dst_idx.append(slice((d - n) // 2, (d - n) // 2 + n))
            src_idx.append(slice((s - n) // 2, (s - n) // 2 + n))
    dst[tuple(dst_idx)] = src[tuple(src_idx)]
    return True


def _copy_module(dst: nn.Module | None, src: nn.Module | None, grow: bool) -> None:
    if dst is None or src is None:
        return
    src_state = src.state_dict()
    with torch.no_grad():
        for name, tensor in dst.state_dict(keep_vars=True).items():
            if name in src_state:
                copy_tensor(tensor.data if isinstance(tensor, nn.Parameter) else tensor, src_state[name], grow=grow)


def rebuild(
    old: ResNet,
    config: ResNetConfig,
    stage_map: Sequence[int | None],
    *,
    grow: bool = False,
) -> ResNet:
    """A new ResNet for ``config`` carrying over every weight of ``old`` that still fits.

    ``stage_map[j]`` is the old stage that new stage ``j`` comes from (``None``: a new stage). Blocks are
    matched by position within a stage; extra new blocks, new stages and layers whose input changed keep
    their fresh initialisation. See :func:`copy_tensor` for what "fits" means.
    """
    new = ResNet(config)
    new.to(next(old.parameters()).device)
    _copy_module(new.whiten, old.whiten, grow)  # a frozen whitening layer: its shape never changes here
    _copy_module(new.conv1, old.conv1, grow)
    _copy_module(new.bn1, old.bn1, grow)
    _copy_module(new.se, old.se, grow)
    old_stages = old.stages
    for new_stage, src in zip(new.stages, stage_map):
        if src is None:
            continue
        for j, block in enumerate(new_stage):
            if j < len(old_stages[src]):
                _copy_module(block, old_stages[src][j], grow)
    _copy_module(new.linear, old.linear, grow)
    new.train(old.training)
    return new
