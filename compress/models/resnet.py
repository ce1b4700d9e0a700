"""One configurable CIFAR ResNet that every compress transform produces.

A :class:`ResNet` is fully described by a :class:`ResNetConfig`: stem, stages, blocks (with their own
inner widths, kernel sizes and optional squeeze-and-excitation), and head. Because the config describes
every channel count, a model that was pruned channel by channel can be printed, saved and rebuilt
without replaying the transforms that made it.

Module names follow the CIFAR ResNet of kuangliu/pytorch-cifar: ``conv1``/``bn1`` (stem), ``se``
(optional SE after the stem), ``layer1`` ... ``layerN`` (stages, 1-based names), inside each block
``conv1``, ``bn1``, ``conv2``, ``bn2``, optional ``se`` and ``shortcut`` (1x1 conv + BN), and
``linear`` (classifier). Stage *indices* in the Python API are 0-based: stage 0 is ``layer1``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BlockConfig",
    "StageConfig",
    "ResNetConfig",
    "ResNet",
    "SqueezeExcite",
    "BasicBlock",
    "resnet18",
    "resnet_from_config",
]


@dataclass(frozen=True)
class BlockConfig:
    """One post-activation BasicBlock: conv(k1, stride) - BN - ReLU - conv(k2) - BN [- SE] + shortcut - ReLU.

    ``mid`` is the output width of the first conv; ``se`` is the hidden width of the block's
    squeeze-and-excitation module (0: none).
    """

    mid: int
    kernels: tuple[int, int] = (3, 3)
    se: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        _check_positive("block mid width", self.mid)
        if len(self.kernels) != 2 or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"block kernels must be two odd sizes >= 1, got {self.kernels}")
        if self.se < 0:
            raise ValueError(f"block se width must be >= 0, got {self.se}")


@dataclass(frozen=True)
class StageConfig:
    """A stage: ``blocks`` share one residual width ``width``; the first block applies ``stride``.

    ``projection`` says whether the first block has a 1x1 conv + BN shortcut. ``None`` means "where
    needed" (stride != 1 or the input width differs); ``True`` keeps one even where widths match.
    """

    width: int
    stride: int
    blocks: tuple[BlockConfig, ...]
    projection: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        _check_positive("stage width", self.width)
        _check_positive("stage stride", self.stride)
        if not self.blocks:
            raise ValueError("a stage needs at least one block")

    def needs_projection(self, in_width: int) -> bool:
        """Whether the first block of this stage has a conv shortcut when fed ``in_width`` channels."""
        needed = self.stride != 1 or in_width != self.width
        if self.projection is False and needed:
            raise ValueError(
                f"stage of width {self.width}, stride {self.stride} fed {in_width} channels needs a "
                "projection shortcut, but projection=False"
            )
        return bool(self.projection) or needed


@dataclass(frozen=True)
class ResNetConfig:
    """Everything needed to rebuild a :class:`ResNet`: stem, stages and head."""

    stages: tuple[StageConfig, ...]
    stem_width: int = 64
    stem_kernel: int = 3
    stem_se: int = 0
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("a ResNet needs at least one stage")
        _check_positive("stem width", self.stem_width)
        _check_positive("num_classes", self.num_classes)
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ValueError(f"stem kernel must be odd and >= 1, got {self.stem_kernel}")
        in_width = self.stem_width
        for stage in self.stages:
            stage.needs_projection(in_width)
            in_width = stage.width

    # convenient views -------------------------------------------------------------------------
    @property
    def widths(self) -> list[int]:
        """Residual width of each stage."""
        return [s.width for s in self.stages]

    @property
    def depths(self) -> list[int]:
        """Number of blocks in each stage."""
        return [len(s.blocks) for s in self.stages]

    @property
    def strides(self) -> list[int]:
        """Stride of each stage."""
        return [s.stride for s in self.stages]

    def replace(self, **changes: Any) -> "ResNetConfig":
        """A copy with the given fields changed (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-friendly dict; :meth:`from_dict` inverts it."""
        d = dataclasses.asdict(self)
        for s in d["stages"]:
            for b in s["blocks"]:
                b["kernels"] = list(b["kernels"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResNetConfig":
        """Rebuild a config written by :meth:`to_dict`."""
        d = dict(d)
        stages = []
        for s in d.pop("stages"):
            s = dict(s)
            blocks = tuple(BlockConfig(**{**b, "kernels": tuple(b["kernels"])}) for b in s.pop("blocks"))
            stages.append(StageConfig(blocks=blocks, **s))
        return cls(stages=tuple(stages), **d)

    @classmethod
    def uniform(
        cls,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        strides: Sequence[int] = (1, 2, 2, 2),
        *,
        stem_width: int | None = None,
        kernels: tuple[int, int] = (3, 3),
        **kwargs: Any,
    ) -> "ResNetConfig":
        """A ResNet whose blocks all have ``mid == width`` (the textbook shape)."""
        if not (len(widths) == len(depths) == len(strides)):
            raise ValueError("widths, depths and strides must have one entry per stage")
        stages = tuple(
            StageConfig(w, s, tuple(BlockConfig(w, kernels) for _ in range(d)))
            for w, d, s in zip(widths, depths, strides)
        )
        return cls(stages=stages, stem_width=stem_width if stem_width is not None else widths[0], **kwargs)

    def describe(self) -> str:
        """One line: stem, widths, depths, strides (e.g. for tables and logs)."""
        mids = ["/".join(str(b.mid) for b in s.blocks) for s in self.stages]
        extra = ""
        if self.stem_se:
            extra += f" stem-SE {self.stem_se}"
        if any(b.se for s in self.stages for b in s.blocks):
            extra += " block-SE"
        kernels = {b.kernels for s in self.stages for b in s.blocks}
        if kernels != {(3, 3)}:
            extra += " k=" + ",".join(f"{a}x{b}" for a, b in sorted(kernels))
        return (
            f"stem {self.stem_width}(k{self.stem_kernel}) widths {self.widths} depths {self.depths} "
            f"strides {self.strides} mids [{' | '.join(mids)}]{extra}"
        )


def _check_positive(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average, 1x1 conv (bias) - ReLU - 1x1 conv (bias) - sigmoid, rescale."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)  # as in report 003's code; fvcore counts it (one FLOP per input element)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class BasicBlock(nn.Module):
    """Post-activation residual block described by a :class:`BlockConfig`."""

    def __init__(self, in_width: int, width: int, stride: int, cfg: BlockConfig, projection: bool) -> None:
        super().__init__()
        k1, k2 = cfg.kernels
        self.conv1 = nn.Conv2d(in_width, cfg.mid, k1, stride, k1 // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.mid)
        self.conv2 = nn.Conv2d(cfg.mid, width, k2, 1, k2 // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.se = SqueezeExcite(width, cfg.se) if cfg.se else None
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_width, width, 1, stride, bias=False), nn.BatchNorm2d(width))
            if projection
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet built from (and described by) a :class:`ResNetConfig`.

    ``model.config`` always matches the modules, so ``ResNet(model.config)`` builds the same
    architecture. Transforms return new ``ResNet`` instances with updated configs.
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.conv1 = nn.Conv2d(c.in_channels, c.stem_width, c.stem_kernel, 1, c.stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        self.se = SqueezeExcite(c.stem_width, c.stem_se) if c.stem_se else None
        in_width = c.stem_width
        for i, stage in enumerate(c.stages):
            projection = stage.needs_projection(in_width)
            blocks = []
            for j, block in enumerate(stage.blocks):
                first = j == 0
                blocks.append(
                    BasicBlock(
                        in_width if first else stage.width,
                        stage.width,
                        stage.stride if first else 1,
                        block,
                        projection if first else False,
                    )
                )
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_width = stage.width
        self.linear = nn.Linear(in_width, c.num_classes)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The stage containers, in order (``layer1`` ... ``layerN``)."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.stages))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.se is not None:
            out = self.se(out)
        for stage in self.stages:
            out = stage(out)
        # Global average pool; `mean` equals the reports' avg_pool2d(4) on a 4x4 map and is not
        # counted as FLOPs by fvcore, matching the published multiply-add counts.
        out = out.mean((2, 3))
        return self.linear(out)

    def extra_repr(self) -> str:
        return self.config.describe()

    def config_from_modules(self) -> ResNetConfig:
        """Read the config back from the modules (after in-place channel pruning changed them)."""
        stages = []
        for old, stage in zip(self.config.stages, self.stages):
            blocks = []
            for block in stage:
                se = block.se.fc1.out_channels if block.se is not None else 0
                blocks.append(
                    BlockConfig(block.conv1.out_channels, (block.conv1.kernel_size[0], block.conv2.kernel_size[0]), se)
                )
            first = stage[0]
            has_proj = not isinstance(first.shortcut, nn.Identity)
            stages.append(StageConfig(first.conv2.out_channels, old.stride, tuple(blocks), projection=has_proj))
        return ResNetConfig(
            stages=tuple(stages),
            stem_width=self.conv1.out_channels,
            stem_kernel=self.conv1.kernel_size[0],
            stem_se=self.se.fc1.out_channels if self.se is not None else 0,
            in_channels=self.conv1.in_channels,
            num_classes=self.linear.out_features,
        )


def resnet_from_config(config: ResNetConfig | dict[str, Any]) -> ResNet:
    """Build a freshly initialised :class:`ResNet` from a config (or its ``to_dict()`` form)."""
    if isinstance(config, dict):
        config = ResNetConfig.from_dict(config)
    return ResNet(config)


def resnet18(num_classes: int = 10) -> ResNet:
    """The CIFAR ResNet-18 (3x3 stem, no max-pool): 11,173,962 trainable parameters for 10 classes."""
    return ResNet(ResNetConfig.uniform((64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2), num_classes=num_classes))
