"""Model definitions: one configurable CIFAR ResNet (see :mod:`compress.models.resnet`)."""

from .resnet import (
    BasicBlock,
    BlockConfig,
    ResNet,
    ResNetConfig,
    SqueezeExcite,
    StageConfig,
    resnet18,
    resnet_from_config,
)

__all__ = [
    "BasicBlock",
    "BlockConfig",
    "ResNet",
    "ResNetConfig",
    "SqueezeExcite",
    "StageConfig",
    "resnet18",
    "resnet_from_config",
]
