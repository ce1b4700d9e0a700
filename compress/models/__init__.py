"""Model definitions: one configurable CIFAR ResNet (see :mod:`compress.models.resnet`), and the import
of trained checkpoints published by others (:func:`from_checkpoint`, :mod:`compress.models.checkpoints`)."""

from .checkpoints import LAYOUTS, CheckpointError, from_checkpoint, read_checkpoint
from .resnet import (
    BasicBlock,
    BlockConfig,
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
]
