"""Layer surgery on compress ResNets: stages, widths, depths, kernels, squeeze-and-excitation.

Each transform returns a new :class:`~compress.models.ResNet` and leaves its input untouched. Weights
that still fit are carried over (see :func:`compress.transforms._common.rebuild`), so the transforms
also apply to trained models; new layers are freshly initialised.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal, Sequence, Union

from torch import nn

from ..models.resnet import BlockConfig, ResNet, ResNetConfig, StageConfig
from ._common import rebuild, require_resnet, reset_projection, stage_index
from .prune import engine
from .prune.importance import IMPORTANCES

__all__ = ["remove_stage", "insert_stage", "scale_width", "redistribute_blocks", "set_kernels", "add_se"]

Kernels = tuple[int, int]


def remove_stage(model: ResNet, index: int, *, fold_stride: bool = False) -> ResNet:
    """Remove stage ``index`` (0-based; ``-1`` is the last); the classifier takes the new last width.

    With ``fold_stride`` the removed stage's stride is multiplied into the stage before it (into the
    one after it when removing stage 0), so the final feature map keeps its size, as in report 002b.
    """
    cfg = require_resnet(model, "remove_stage").config
    i = stage_index(cfg, index)
    if len(cfg.stages) == 1:
        raise ValueError("cannot remove the only stage of the model")
    stages = list(cfg.stages)
    removed = stages.pop(i)
    if fold_stride and removed.stride != 1:
        j = i - 1 if i > 0 else 0
        stages[j] = reset_projection(stages[j], stride=stages[j].stride * removed.stride)
    if i < len(stages):
        stages[i] = reset_projection(stages[i])  # its input width changed
    stage_map = [k for k in range(len(cfg.stages)) if k != i]
    return rebuild(model, cfg.replace(stages=tuple(stages)), stage_map)


def insert_stage(model: ResNet, index: int, width: int, blocks: int, stride: int = 1, *, kernels: Kernels = (3, 3)) -> ResNet:
    """Insert a new stage of ``blocks`` blocks of ``width`` channels at position ``index`` (0..n)."""
    cfg = require_resnet(model, "insert_stage").config
    i = stage_index(cfg, index, allow_end=True)
    for what, v in (("width", width), ("blocks", blocks), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"insert_stage: {what} must be a positive integer, got {v!r}")
    new = StageConfig(width, stride, tuple(BlockConfig(width, tuple(kernels)) for _ in range(blocks)))
    stages = list(cfg.stages)
    stages.insert(i, new)
    if i + 1 < len(stages):
        stages[i + 1] = reset_projection(stages[i + 1])
    stage_map = list(range(i)) + [None] + list(range(i, len(cfg.stages)))
    return rebuild(model, cfg.replace(stages=tuple(stages)), stage_map)


def redistribute_blocks(model: ResNet, blocks: Sequence[int]) -> ResNet:
    """Set the number of blocks per stage (e.g. ``[4, 6, 8, 2]``).

    Removed blocks are taken from the end of a stage; added blocks are freshly initialised copies of
    the shape of the stage's last block.
    """
    cfg = require_resnet(model, "redistribute_blocks").config
    blocks = list(blocks) if isinstance(blocks, (list, tuple)) else blocks
    if not isinstance(blocks, list) or len(blocks) != len(cfg.stages):
        raise ValueError(f"redistribute_blocks: give one block count per stage ({len(cfg.stages)}), got {blocks!r}")
    stages = []
    for stage, n in zip(cfg.stages, blocks):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"redistribute_blocks: block counts must be positive integers, got {blocks!r}")
        kept = stage.blocks[:n] + (stage.blocks[-1],) * max(0, n - len(stage.blocks))
        stages.append(dataclasses.replace(stage, blocks=kept))
    return rebuild(model, cfg.replace(stages=tuple(stages)), list(range(len(stages))))


def set_kernels(model: ResNet, kernels: Union[Kernels, Sequence[Kernels]]) -> ResNet:
    """Set the kernel sizes ``(k1, k2)`` of the two convs of every block, or one pair per stage (in a
    bottleneck block, its first two convs; the last stays 1x1).

    Old kernels are centred in the new ones (zero padded when growing, centre-cropped when shrinking),
    so growing 3x3 to 5x5 keeps the model's function exactly.
    """
    cfg = require_resnet(model, "set_kernels").config
    per_stage = isinstance(kernels, (list, tuple)) and len(kernels) > 0 and isinstance(kernels[0], (list, tuple))
    pairs = list(kernels) if per_stage else [kernels] * len(cfg.stages)
    if len(pairs) != len(cfg.stages):
        raise ValueError(f"set_kernels: give one (k1, k2) pair or one per stage ({len(cfg.stages)}), got {kernels!r}")
    stages = []
    for stage, pair in zip(cfg.stages, pairs):
        if (
            not isinstance(pair, (list, tuple)) or len(pair) != 2
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in pair)
        ):
            raise ValueError(f"set_kernels: kernels must be (k1, k2) pairs of odd positive integers, got {pair!r}")
        blocks = tuple(dataclasses.replace(b, kernels=tuple(pair)) for b in stage.blocks)
        stages.append(dataclasses.replace(stage, blocks=blocks))
    return rebuild(model, cfg.replace(stages=tuple(stages)), list(range(len(stages))))


def add_se(model: ResNet, where: Literal["stem", "blocks"] = "blocks", reduction: int = 16) -> ResNet:
    """Add squeeze-and-excitation modules of hidden width ``max(1, channels // reduction)``.

    ``where="stem"``: one module after the stem (report 003); ``"blocks"``: one in every residual block,
    after its second batch norm.
    """
    cfg = require_resnet(model, "add_se").config
    if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
        raise ValueError(f"add_se: reduction must be a positive integer, got {reduction!r}")
    if where == "stem":
        if cfg.stem_se:
            raise ValueError("add_se: the stem already has a squeeze-and-excitation module")
        new_cfg = cfg.replace(stem_se=max(1, cfg.stem_width // reduction))
    elif where == "blocks":
        if any(b.se for s in cfg.stages for b in s.blocks):
            raise ValueError("add_se: the blocks already have squeeze-and-excitation modules")
        stages = tuple(
            dataclasses.replace(s, blocks=tuple(dataclasses.replace(b, se=max(1, s.width // reduction)) for b in s.blocks))
            for s in cfg.stages
        )
        new_cfg = cfg.replace(stages=stages)
    else:
        raise ValueError(f"add_se: where must be 'stem' or 'blocks', got {where!r}")
    return rebuild(model, new_cfg, list(range(len(cfg.stages))))


def scale_width(model: ResNet, factor: Union[float, Sequence[float]]) -> ResNet:
    """Multiply channel widths by ``factor``: one number, or one per stage with the stem first.

    ``[1, 1, 1, 1, 0.5]`` halves the last of four stages only. Widths are rounded to the nearest
    integer; block inner widths and SE widths scale with their stage. Shrinking keeps the channels
    with the largest L1 norm (through torch-pruning, so coupled layers keep the same channels);
    growing keeps every old weight and initialises the new channels afresh.
    """
    cfg = require_resnet(model, "scale_width").config
    n = len(cfg.stages) + 1
    factors = list(factor) if isinstance(factor, (list, tuple)) else [factor] * n
    if len(factors) != n:
        raise ValueError(f"scale_width: give one factor or {n} (the stem, then each of {n - 1} stages), got {len(factors)}")
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < math.inf:
            raise ValueError(f"scale_width: factors must be positive finite numbers, got {str(factor)[:80]}")

    def scaled(width: int, f: float, what: str, groups: int = 1) -> int:
        w = round(width // groups * f) * groups  # a grouped conv keeps its groups: whole groups scale
        if w < 1:
            raise ValueError(f"scale_width: {what} of {width} channels x {f} rounds to zero channels")
        return w

    stages = []
    for i, (stage, f) in enumerate(zip(cfg.stages, factors[1:])):
        blocks = tuple(
            dataclasses.replace(
                b, mid=scaled(b.mid, f, f"layer{i + 1}.{j} inner width", b.groups), se=max(1, round(b.se * f)) if b.se else 0,
                mid2=scaled(b.mid2, f, f"layer{i + 1}.{j} middle width", b.groups) if b.mid2 else 0,
            )
            for j, b in enumerate(stage.blocks)
        )
        stages.append(reset_projection(stage, width=scaled(stage.width, f, f"layer{i + 1} width"), blocks=blocks))
    new_cfg = cfg.replace(
        stages=tuple(stages),
        stem_width=scaled(cfg.stem_width, factors[0], "stem width"),
        stem_se=max(1, round(cfg.stem_se * factors[0])) if cfg.stem_se else 0,
    )
    shrunk = _shrink_to(model, new_cfg)
    return rebuild(shrunk, new_cfg, list(range(len(stages))), grow=True)


def _target_widths(model: ResNet, cfg: ResNetConfig) -> dict[nn.Module, int]:
    """Output width wanted by ``cfg`` for every conv of ``model`` (same stage/block layout)."""
    want = {model.conv1: cfg.stem_width}
    if model.se is not None:
        want[model.se.fc1] = cfg.stem_se or model.se.fc1.out_channels
    for stage, scfg in zip(model.stages, cfg.stages):
        for block, bcfg in zip(stage, scfg.blocks):
            want[block.conv1] = bcfg.mid
            if bcfg.bottleneck:
                want[block.conv2] = bcfg.mid2
                want[block.conv3] = scfg.width
            else:
                want[block.conv2] = scfg.width
            if not isinstance(block.shortcut, nn.Identity):
                want[block.shortcut[0]] = scfg.width
            if block.se is not None:
                want[block.se.fc1] = bcfg.se or block.se.fc1.out_channels
                want[block.se.fc2] = scfg.width
    return want


def _shrink_to(model: ResNet, cfg: ResNetConfig) -> ResNet:
    """A copy of ``model`` pruned (L1, through prune's engine) wherever ``cfg`` is narrower.

    Coupled layers share one width, so a group is pruned to the largest width any of its members wants;
    where members want different widths, :func:`rebuild` settles the rest.
    """
    want = _target_widths(model, cfg)
    if all(m.out_channels <= w for m, w in want.items()):
        return copy.deepcopy(model)
    names = {m: n for n, m in model.named_modules()}
    widths = {names[m]: w for m, w in want.items()}
    return engine.shrink_to(model, widths, IMPORTANCES["l1"](), (1, cfg.in_channels, 32, 32), ignore=("linear",))
