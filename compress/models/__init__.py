"""Model definitions: one configurable CIFAR ResNet (see :mod:`compress.models.resnet`), and the import
of trained checkpoints published by others (:func:`from_checkpoint`, :mod:`compress.models.checkpoints`)
and of torchvision ResNets (:func:`from_torchvision`, :func:`to_torchvision`, :mod:`compress.models.convert`)."""

from .convert import from_torchvision, to_torchvision
from .checkpoints import LAYOUTS, CheckpointError, from_checkpoint, read_checkpoint
from .resnet import (
    BasicBlock,
    BlockConfig,
    Bottleneck,
    ResNet,
    ResNetConfig,
    SqueezeExcite,
    StageConfig,
    WhiteningConv,
    ZeroPadShortcut,
    input_normalization,
    resnet18,
    resnet_from_config,
    with_normalization,
)

__all__ = [
    "BasicBlock",
    "BlockConfig",
    "Bottleneck",
    "ResNet",
    "ResNetConfig",
    "SqueezeExcite",
    "StageConfig",
    "ZeroPadShortcut",
    "WhiteningConv",
    "resnet18",
    "resnet_from_config",
    "input_normalization",
    "with_normalization",
    "from_checkpoint",
    "read_checkpoint",
    "CheckpointError",
    "LAYOUTS",
    "from_torchvision",
    "to_torchvision",
]
