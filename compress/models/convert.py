"""torchvision ResNets as compress :class:`~compress.models.ResNet`\\ s, and back.

:func:`from_torchvision` reads any torchvision ``ResNet`` (``resnet18`` ... ``resnet152``,
``wide_resnet50_2``/``101_2``, ``resnext50_32x4d`` ..., trained or not, ImageNet-style or adapted to
CIFAR with a 3x3 stride-1 stem and no max-pool) off its modules and returns a compress ResNet with
the same weights, computing the same outputs. The module names are torchvision's but for two:
``downsample`` is compress's ``shortcut`` and ``fc`` its ``linear``. :func:`to_torchvision` goes back,
where the architecture still fits a torchvision ``ResNet`` (four stages of one block kind, no SE, no
whitening layer, conv shortcuts); widths, depths and kernels may have changed (pruned, surgered).
:func:`torchvision_config` reads the same config off a torchvision state dict, for
:func:`~compress.models.from_checkpoint`'s ``"torchvision"`` layout.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Mapping

import torch
from torch import nn

from .resnet import Bottleneck, BlockConfig, ResNet, ResNetConfig, StageConfig

__all__ = ["from_torchvision", "to_torchvision", "torchvision_config", "torchvision_names", "compress_names"]

_RENAMES = ((".downsample.", ".shortcut."), ("fc.", "linear."))


def compress_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict under compress's module names (``downsample`` -> ``shortcut``, ``fc`` -> ``linear``)."""
    return {_rename(k, _RENAMES): v for k, v in state.items()}


def torchvision_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A compress ResNet state dict under torchvision's module names (the inverse of :func:`compress_names`)."""
    return {_rename(k, tuple((b, a) for a, b in _RENAMES)): v for k, v in state.items()}


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if old.startswith("."):
            key = key.replace(old, new)
        elif key.startswith(old):
            key = new + key[len(old):]
    return key


def _conv(conv: Any, what: str) -> nn.Conv2d:
    if type(conv) is not nn.Conv2d or conv.bias is not None or conv.dilation != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1] \
            or conv.kernel_size[0] % 2 == 0 or conv.padding != (conv.kernel_size[0] // 2,) * 2 or conv.stride[0] != conv.stride[1]:
        raise ValueError(f"from_torchvision: {what} is {conv!r}; compress takes square, odd, undilated, bias-free "
                         "convs padded by k // 2")
    return conv


def _bn(bn: Any, what: str) -> None:
    if type(bn) is not nn.BatchNorm2d or bn.eps != 1e-5 or not bn.affine or not bn.track_running_stats:
        raise ValueError(f"from_torchvision: {what} is {bn!r}; compress takes BatchNorm2d (eps 1e-5, affine, running stats)")


def from_torchvision(model: nn.Module) -> ResNet:
    """A compress :class:`~compress.models.ResNet` with ``model``'s weights computing its outputs.

    ``model`` is a ``torchvision.models.ResNet`` (any depth, width or groups; a stem conv of any odd
    size and stride, a max-pool or ``nn.Identity`` in its place). It is not changed; the result is on
    its device and dtype, in its training mode. Anything compress cannot represent exactly (dilated
    convs, another norm layer, a replaced classifier, a shortcut on a later block) is a ``ValueError``.
    """
    from torchvision.models import resnet as tv  # lazy: torchvision is only needed to convert its models

    if not isinstance(model, tv.ResNet):
        raise TypeError(f"from_torchvision() takes a torchvision ResNet, got {type(model).__module__}.{type(model).__qualname__}")
    stem = _conv(model.conv1, "conv1")
    _bn(model.bn1, "bn1")
    if isinstance(model.maxpool, nn.MaxPool2d):
        pool = model.maxpool
        if (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode) not in ((3, 2, 1, 1, False),):
            raise ValueError(f"from_torchvision: maxpool is {pool!r}; compress takes MaxPool2d(3, 2, 1) or nn.Identity()")
    elif not isinstance(model.maxpool, nn.Identity):
        raise ValueError(f"from_torchvision: maxpool is {model.maxpool!r}; compress takes MaxPool2d(3, 2, 1) or nn.Identity()")
    if type(model.fc) is not nn.Linear or not isinstance(model.avgpool, nn.AdaptiveAvgPool2d) or \
            model.avgpool.output_size not in (1, (1, 1)):
        raise ValueError("from_torchvision: compress takes a global average pool (AdaptiveAvgPool2d(1)) and an "
                         f"nn.Linear classifier, got {model.avgpool!r} and {type(model.fc).__name__}")
    stages = []
    for i in range(1, 5):
        layer = getattr(model, f"layer{i}")
        blocks, stride = [], 1
        for j, block in enumerate(layer):
            p = f"layer{i}.{j}"
            kind = type(block)
            if kind not in (tv.BasicBlock, tv.Bottleneck):
                raise ValueError(f"from_torchvision: {p} is a {kind.__name__}, not a torchvision BasicBlock or Bottleneck")
            convs = [_conv(block.conv1, f"{p}.conv1"), _conv(block.conv2, f"{p}.conv2")]
            for n in ("bn1", "bn2") + (("bn3",) if kind is tv.Bottleneck else ()):
                _bn(getattr(block, n), f"{p}.{n}")
            if kind is tv.Bottleneck:
                last = _conv(block.conv3, f"{p}.conv3")
                if last.kernel_size != (1, 1) or last.stride != (1, 1) or block.conv1.stride != (1, 1) or block.conv1.groups != 1:
                    raise ValueError(f"from_torchvision: {p} is not a torchvision bottleneck (1x1 convs around the strided one)")
                block_stride = block.conv2.stride[0]
                blocks.append(BlockConfig(convs[0].out_channels, (convs[0].kernel_size[0], convs[1].kernel_size[0]),
                                          mid2=convs[1].out_channels, groups=convs[1].groups))
            else:
                last = convs[1]
                if convs[1].stride != (1, 1) or any(c.groups != 1 for c in convs):
                    raise ValueError(f"from_torchvision: {p} is not a torchvision basic block (stride on conv1, no groups)")
                block_stride = block.conv1.stride[0]
                blocks.append(BlockConfig(convs[0].out_channels, (convs[0].kernel_size[0], convs[1].kernel_size[0])))
            if j == 0:
                stride, width = block_stride, last.out_channels
                projection = block.downsample is not None
            elif block_stride != 1 or block.downsample is not None:
                raise ValueError(f"from_torchvision: {p} has a stride or a downsample; compress gives them only to a stage's first block")
            if block.downsample is not None:
                ds = block.downsample
                if not (isinstance(ds, nn.Sequential) and len(ds) == 2 and _conv(ds[0], f"{p}.downsample.0").kernel_size == (1, 1)
                        and ds[0].stride == (block_stride, block_stride) and ds[0].groups == 1):
                    raise ValueError(f"from_torchvision: {p}.downsample is not a strided 1x1 conv + BN")
                _bn(ds[1], f"{p}.downsample.1")
        in_width = stages[-1].width if stages else stem.out_channels
        needed = stride != 1 or in_width != width  # compress derives a needed shortcut; True keeps an extra one
        stages.append(StageConfig(width, stride, tuple(blocks), projection=True if projection and not needed else None))
    config = ResNetConfig(
        stages=tuple(stages), stem_width=stem.out_channels, stem_kernel=stem.kernel_size[0], in_channels=stem.in_channels,
        num_classes=model.fc.out_features, stem_stride=stem.stride[0], stem_pool=isinstance(model.maxpool, nn.MaxPool2d),
    )
    if model.fc.in_features != stages[-1].width:
        raise ValueError(f"from_torchvision: fc takes {model.fc.in_features} features, the last stage has {stages[-1].width}")
    try:
        param = next(model.parameters())
    except StopIteration:  # pragma: no cover - a ResNet has parameters
        param = torch.empty(0)
    new = ResNet(config).to(device=param.device, dtype=param.dtype)
    new.load_state_dict(compress_names(model.state_dict()), strict=True)
    new.train(model.training)
    return new


def to_torchvision(model: ResNet) -> nn.Module:
    """A ``torchvision.models.ResNet`` with ``model``'s weights computing its outputs.

    Fits a compress ResNet of four stages whose blocks are all basic or all bottleneck, with conv
    shortcuts, no squeeze-and-excitation and no whitening layer; widths, depths, kernels and the stem
    may be anything compress allows (the modules are copied as they are). Otherwise ``ValueError``
    says what does not fit. ``model`` is not changed.
    """
    from torchvision.models import resnet as tv  # lazy: torchvision is only needed to convert to its models

    if not isinstance(model, ResNet):
        raise TypeError(f"to_torchvision() takes a compress ResNet, got {type(model).__name__}")
    cfg = model.config
    kinds = {b.bottleneck for s in cfg.stages for b in s.blocks}
    misfit = [why for bad, why in (
        (len(cfg.stages) != 4, f"{len(cfg.stages)} stages (torchvision has 4)"),
        (len(kinds) != 1, "basic and bottleneck blocks mixed"),
        (bool(cfg.stem_se or any(b.se for s in cfg.stages for b in s.blocks)), "squeeze-and-excitation"),
        (bool(cfg.whiten_kernel), "a whitening layer"),
        (any(s.shortcut == "pad" for s in cfg.stages), "zero-padding shortcuts"),
    ) if bad]
    if misfit:
        raise ValueError(f"to_torchvision: a torchvision ResNet has no place for {', '.join(misfit)}")
    block = tv.Bottleneck if kinds == {True} else tv.BasicBlock
    net = tv.ResNet(block, cfg.depths, num_classes=cfg.num_classes)
    net.conv1, net.bn1 = copy.deepcopy(model.conv1), copy.deepcopy(model.bn1)
    net.maxpool = copy.deepcopy(model.maxpool) if model.maxpool is not None else nn.Identity()
    for i, stage in enumerate(model.stages):
        for j, ours in enumerate(stage):
            theirs = getattr(net, f"layer{i + 1}")[j]
            for name in ("conv1", "bn1", "conv2", "bn2") + (("conv3", "bn3") if isinstance(ours, Bottleneck) else ()):
                setattr(theirs, name, copy.deepcopy(getattr(ours, name)))
            theirs.downsample = None if isinstance(ours.shortcut, nn.Identity) else copy.deepcopy(ours.shortcut)
    net.fc = copy.deepcopy(model.linear)
    net.train(model.training)
    return net


def torchvision_config(state: Mapping[str, torch.Tensor]) -> ResNetConfig:
    """The :class:`ResNetConfig` of a torchvision ResNet state dict (compress or torchvision names).

    A state dict does not say the stem's stride nor whether a max-pool follows it: a 7x7 stem is taken
    as torchvision's ImageNet stem (stride 2, max-pool), any other as the CIFAR adaptation (stride 1,
    none). Stages have strides 1, 2, 2, 2 as in every torchvision ResNet. Shapes that do not chain
    are left to ``load_state_dict`` to report.
    """
    state = compress_names(state)
    stem = state["conv1.weight"]
    stages = []
    for i in range(1, 5):
        ids = sorted({int(m.group(1)) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.conv1\.weight$", k))})
        if not ids:
            raise ValueError(f"no blocks for layer{i} (keys like 'layer{i}.0.conv1.weight')")
        blocks = []
        for j in ids:
            p = f"layer{i}.{j}"
            c1, c2 = state[f"{p}.conv1.weight"], state[f"{p}.conv2.weight"]
            if f"{p}.conv3.weight" in state:
                blocks.append(BlockConfig(c1.shape[0], (c1.shape[-1], c2.shape[-1]), mid2=c2.shape[0], groups=c1.shape[0] // c2.shape[1]))
                width = state[f"{p}.conv3.weight"].shape[0]
            else:
                blocks.append(BlockConfig(c1.shape[0], (c1.shape[-1], c2.shape[-1])))
                width = c2.shape[0]
        stride, in_width = 1 if i == 1 else 2, stages[-1].width if stages else stem.shape[0]
        extra = f"layer{i}.0.shortcut.0.weight" in state and stride == 1 and in_width == width
        stages.append(StageConfig(int(width), stride, tuple(blocks), projection=True if extra else None))
    k = int(stem.shape[-1])
    return ResNetConfig(stages=tuple(stages), stem_width=int(stem.shape[0]), stem_kernel=k, in_channels=int(stem.shape[1]),
                        num_classes=int(state["linear.weight"].shape[0]), stem_stride=2 if k == 7 else 1, stem_pool=k == 7)
