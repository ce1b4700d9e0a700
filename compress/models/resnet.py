"""One configurable CIFAR ResNet that every compress transform produces.

A :class:`ResNet` is fully described by a :class:`ResNetConfig`: stem, stages, blocks (with their own
inner widths, kernel sizes and optional squeeze-and-excitation), and head. Because the config describes
every channel count, a model that was pruned channel by channel can be printed, saved and rebuilt
without replaying the transforms that made it.

Module names follow the CIFAR ResNet of kuangliu/pytorch-cifar: ``whiten`` (an optional frozen
patch-whitening conv in front of the stem, :class:`WhiteningConv`), ``conv1``/``bn1`` (stem), ``se``
(optional SE after the stem), ``layer1`` ... ``layerN`` (stages, 1-based names), inside each block
``conv1``, ``bn1``, ``conv2``, ``bn2``, optional ``se`` and ``shortcut`` (1x1 conv + BN), and
``linear`` (classifier). Stage *indices* in the Python API are 0-based: stage 0 is ``layer1``.

A stage's shortcut is either a 1x1 conv + BN (``shortcut="conv"``, kuangliu and He et al.'s option B)
or He et al.'s parameter-free zero padding (``shortcut="pad"``, option A), held as a frozen strided
1x1 conv (:class:`ZeroPadShortcut`) so that torch-pruning's dependency graph follows it. A config may
also carry the input normalisation the network was trained with (``input_mean``/``input_std``), which
the trainer and :func:`compress.evaluate` then use.

Why this module is long: the config dataclasses and the modules built from them change together (a
new config field is a change to the module that reads it), so they stay side by side.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Sequence

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
    "Bottleneck",
    "ZeroPadShortcut",
    "WhiteningConv",
    "SHORTCUTS",
    "resnet18",
    "resnet_from_config",
    "input_normalization",
    "with_normalization",
]

#: Shortcut kinds of a stage's first block (see :class:`StageConfig`).
SHORTCUTS = ("conv", "pad")


@dataclass(frozen=True)
class BlockConfig:
    """One post-activation residual block.

    A basic block (``mid2 == 0``, the default): conv(k1, stride) - BN - ReLU - conv(k2) - BN [- SE]
    + shortcut - ReLU. A bottleneck block (``mid2 > 0``, torchvision's ``Bottleneck``, stride on the
    middle conv as in its ResNet v1.5): conv(k1) - BN - ReLU - conv(k2, stride, ``groups``) - BN - ReLU
    - conv(1x1) - BN [- SE] + shortcut - ReLU; a torchvision bottleneck has ``kernels=(1, 3)``.

    ``mid`` is the output width of the first conv, ``mid2`` that of a bottleneck's middle conv (0: a
    basic block); ``groups`` the groups of a bottleneck's middle conv (ResNeXt; its width per group is
    ``mid // groups``); ``se`` the hidden width of the block's squeeze-and-excitation module (0: none).
    """

    mid: int
    kernels: tuple[int, int] = (3, 3)
    se: int = 0
    mid2: int = 0
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        _check_positive("block mid width", self.mid)
        if len(self.kernels) != 2 or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"block kernels must be two odd sizes >= 1, got {self.kernels}")
        if self.se < 0:
            raise ValueError(f"block se width must be >= 0, got {self.se}")
        if isinstance(self.mid2, bool) or not isinstance(self.mid2, int) or self.mid2 < 0:
            raise ValueError(f"block mid2 must be an integer >= 0 (0: a basic block), got {self.mid2!r}")
        _check_positive("block groups", self.groups)
        if self.groups > 1 and not self.mid2:
            raise ValueError("block groups > 1 need a bottleneck block (mid2 > 0)")
        if self.mid % self.groups or self.mid2 % self.groups:
            raise ValueError(f"block widths {self.mid} and {self.mid2} must be multiples of its {self.groups} groups")

    @property
    def bottleneck(self) -> bool:
        """Whether this is a three-conv bottleneck block (``mid2 > 0``)."""
        return self.mid2 > 0


@dataclass(frozen=True)
class StageConfig:
    """A stage: ``blocks`` share one residual width ``width``; the first block applies ``stride``.

    ``projection`` says whether the first block has a shortcut module. ``None`` means "where needed"
    (stride != 1 or the input width differs); ``True`` keeps one even where widths match.
    ``shortcut`` says what that module is: ``"conv"``, a 1x1 conv + BN (trainable); ``"pad"``, He et
    al.'s option A, a :class:`ZeroPadShortcut` (no trainable parameters).
    """

    width: int
    stride: int
    blocks: tuple[BlockConfig, ...]
    projection: bool | None = None
    shortcut: Literal["conv", "pad"] = "conv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        _check_positive("stage width", self.width)
        _check_positive("stage stride", self.stride)
        if not self.blocks:
            raise ValueError("a stage needs at least one block")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"stage shortcut must be one of {', '.join(map(repr, SHORTCUTS))}, got {self.shortcut!r}")

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
    """Everything needed to rebuild a :class:`ResNet`: stem, stages and head.

    ``input_mean``/``input_std`` (one value per input channel, images scaled to [0, 1] first) are the
    normalisation the network expects, when known (e.g. imported by
    :func:`~compress.models.from_checkpoint`); ``None`` leaves it to the training config.

    ``stem_stride`` is the stem conv's stride and ``stem_pool`` adds a 3x3 stride-2 max-pool (padding 1)
    after the stem: ``stem_kernel=7, stem_stride=2, stem_pool=True`` is torchvision's ImageNet stem; the
    defaults (1, False) are the CIFAR stem.

    ``whiten_kernel`` (0: none) puts a frozen ``k x k`` patch-whitening conv (:class:`WhiteningConv`,
    ``2 * in_channels * k * k`` output channels, no padding, then a GELU) in front of the stem conv,
    which then takes :attr:`whiten_width` input channels (see :func:`compress.transforms.whiten_stem`).
    """

    stages: tuple[StageConfig, ...]
    stem_width: int = 64
    stem_kernel: int = 3
    stem_se: int = 0
    in_channels: int = 3
    num_classes: int = 10
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    whiten_kernel: int = 0
    stem_stride: int = 1
    stem_pool: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _check_normalization(self.input_mean, self.input_std, self.in_channels)
        if self.input_mean is not None:
            object.__setattr__(self, "input_mean", tuple(float(v) for v in self.input_mean))
            object.__setattr__(self, "input_std", tuple(float(v) for v in self.input_std))
        if not self.stages:
            raise ValueError("a ResNet needs at least one stage")
        _check_positive("stem width", self.stem_width)
        _check_positive("num_classes", self.num_classes)
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ValueError(f"stem kernel must be odd and >= 1, got {self.stem_kernel}")
        _check_positive("stem stride", self.stem_stride)
        if not isinstance(self.stem_pool, bool):
            raise ValueError(f"stem_pool must be True or False, got {self.stem_pool!r}")
        if isinstance(self.whiten_kernel, bool) or not isinstance(self.whiten_kernel, int) or self.whiten_kernel < 0:
            raise ValueError(f"whiten_kernel must be an integer >= 0 (0: no whitening layer), got {self.whiten_kernel!r}")
        in_width = self.stem_width
        for stage in self.stages:
            stage.needs_projection(in_width)
            in_width = stage.width
        _check_size(self)

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

    @property
    def whiten_width(self) -> int:
        """Output channels of the whitening layer: ``2 * in_channels * whiten_kernel ** 2`` (0: none)."""
        return 2 * self.in_channels * self.whiten_kernel**2

    @property
    def stem_in_channels(self) -> int:
        """Input channels of the stem conv: the whitening layer's width, else the image channels."""
        return self.whiten_width if self.whiten_kernel else self.in_channels

    def replace(self, **changes: Any) -> "ResNetConfig":
        """A copy with the given fields changed (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-friendly dict; :meth:`from_dict` inverts it.

        Fields added later are left out at their defaults (``whiten_kernel`` 0, ``stem_stride`` 1,
        ``stem_pool`` False, a block's ``mid2`` 0 and ``groups`` 1), so configs that do not use them
        give the same dict (and saved files and recipe fingerprints) as before the fields existed.
        """
        d = dataclasses.asdict(self)
        for key, default in (("whiten_kernel", 0), ("stem_stride", 1), ("stem_pool", False)):
            if d[key] == default:
                del d[key]
        for s in d["stages"]:
            for b in s["blocks"]:
                b["kernels"] = list(b["kernels"])
                for key, default in (("mid2", 0), ("groups", 1)):
                    if b[key] == default:
                        del b[key]
        for key in ("input_mean", "input_std"):
            if d[key] is not None:
                d[key] = list(d[key])
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
        """One line: stem, widths, depths, strides (e.g. for tables and logs); a whitening layer first, if any."""
        mids = ["/".join(f"{b.mid}-{b.mid2}" if b.mid2 else str(b.mid) for b in s.blocks) for s in self.stages]
        extra = ""
        if self.stem_se:
            extra += f" stem-SE {self.stem_se}"
        if any(b.se for s in self.stages for b in s.blocks):
            extra += " block-SE"
        kernels = {b.kernels for s in self.stages for b in s.blocks}
        if kernels != {(3, 3)}:
            extra += " k=" + ",".join(f"{a}x{b}" for a, b in sorted(kernels))
        if any(s.shortcut == "pad" for s in self.stages):
            extra += " zero-pad shortcuts"
        if any(b.bottleneck for s in self.stages for b in s.blocks):
            extra += " bottleneck"
        groups = {b.groups for s in self.stages for b in s.blocks}
        if groups != {1}:
            extra += " groups " + "/".join(map(str, sorted(groups)))
        stem = f"k{self.stem_kernel}" + (f" s{self.stem_stride}" if self.stem_stride != 1 else "") + (
            " maxpool" if self.stem_pool else "")
        whiten = f"whiten {self.whiten_width}(k{self.whiten_kernel}, frozen) " if self.whiten_kernel else ""
        return (
            f"{whiten}stem {self.stem_width}({stem}) widths {self.widths} depths {self.depths} "
            f"strides {self.strides} mids [{' | '.join(mids)}]{extra}"
        )


#: Limits checked before a network is built, so a small file cannot ask for an unbounded allocation.
MAX_BLOCKS = 2048
MAX_WEIGHTS = 2_000_000_000


def _check_size(cfg: "ResNetConfig") -> None:
    """Refuse a config with more than :data:`MAX_BLOCKS` blocks or about :data:`MAX_WEIGHTS` conv weights."""
    blocks = sum(len(s.blocks) for s in cfg.stages)
    if blocks > MAX_BLOCKS:
        raise ValueError(f"a ResNet of {blocks:.3g} blocks is more than the {MAX_BLOCKS:,} compress builds")
    weights, in_width = cfg.stem_width * cfg.in_channels * cfg.stem_kernel**2, cfg.stem_width
    for s in cfg.stages:
        for b in s.blocks:
            if b.bottleneck:
                weights += b.mid * in_width * b.kernels[0] ** 2 + b.mid2 * b.mid // b.groups * b.kernels[1] ** 2 + s.width * b.mid2
            else:
                weights += b.mid * in_width * b.kernels[0] ** 2 + s.width * b.mid * b.kernels[1] ** 2
            in_width = s.width
    if weights > MAX_WEIGHTS:
        about = f"{float(weights):.3g}" if weights < 10**300 else "more than 1e300"
        raise ValueError(f"a ResNet of about {about} conv weights is more than the {MAX_WEIGHTS:,} compress builds")


def _check_positive(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


def _check_normalization(mean: Any, std: Any, channels: int) -> None:
    if mean is None and std is None:
        return
    if mean is None or std is None:
        raise ValueError("input_mean and input_std must be given together (or both left None)")
    for what, values in (("input_mean", mean), ("input_std", std)):
        if not isinstance(values, (list, tuple)) or len(values) != channels or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise ValueError(f"{what} must be {channels} numbers (one per input channel), got {values!r}")
    if not all(v > 0 for v in std):
        raise ValueError(f"input_std must be positive, got {tuple(std)!r}")


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average, 1x1 conv (bias) - ReLU - 1x1 conv (bias) - sigmoid, rescale."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)  # as in report 003's code; one FLOP per input element (compress.metrics)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class ZeroPadShortcut(nn.Conv2d):
    """He et al.'s option-A shortcut as a frozen strided 1x1 conv: subsample, then zero-pad channels.

    The weight is 0/1: input channel ``c`` goes to output channel ``c + (out - in) // 2`` and the other
    outputs are zero, which is exactly ``F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, p, p))`` for an output
    of ``in + 2p`` channels (products with 0 and 1 are exact). Being a conv, it lets torch-pruning
    remove channels through it like through any other layer; pruning keeps a subset of its rows and
    columns, so it stays a fixed channel selection. Its weight never trains: it is created with
    ``requires_grad=False`` and every weight assigned later (torch-pruning assigns new ones) is frozen
    too, so :func:`~compress.count_params` does not count it.
    """

    def __init__(self, in_width: int, width: int, stride: int) -> None:
        super().__init__(in_width, width, 1, stride, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            offset = max(0, (width - in_width) // 2)
            for c in range(min(in_width, width - offset)):
                self.weight[c + offset, c] = 1.0

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight" and isinstance(value, nn.Parameter):
            value.requires_grad_(False)
        super().__setattr__(name, value)


class WhiteningConv(nn.Conv2d):
    """A frozen ``k x k`` patch-whitening convolution (the first layer of airbench's CIFAR-10 networks).

    ``2 * in_channels * k * k`` filters, no padding, no bias: the eigenvectors of the covariance of
    the (normalised) training images' ``k x k`` patches, each scaled by ``1 / sqrt(eigenvalue + eps)``,
    followed by the same filters negated (the :class:`ResNet` applies a GELU after it). The weights are
    computed from images (:func:`compress.transforms.whiten.init_whitening`), never trained: they are
    created with ``requires_grad=False``, and every weight assigned later is frozen too. Unlike the
    0/1 :class:`ZeroPadShortcut`, they are data that the model stores, so
    :func:`~compress.count_params` counts them. A fresh layer holds placeholder weights: the identity
    on each patch element and its negation (``gelu(x) - gelu(-x) == x``, so nothing is lost).
    """

    def __init__(self, in_channels: int, kernel: int) -> None:
        _check_positive("whitening kernel", kernel)
        d = in_channels * kernel * kernel
        super().__init__(in_channels, 2 * d, kernel, padding=0, bias=False)
        with torch.no_grad():
            eye = torch.eye(d).view(d, in_channels, kernel, kernel)
            self.weight.copy_(torch.cat([eye, -eye]))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight" and isinstance(value, nn.Parameter):
            value.requires_grad_(False)
        super().__setattr__(name, value)


class BasicBlock(nn.Module):
    """Post-activation residual block described by a :class:`BlockConfig`.

    ``projection`` gives the block a shortcut module: ``"conv"`` (1x1 conv + BN) or ``"pad"``
    (:class:`ZeroPadShortcut`); ``False`` (or ``None``) keeps the identity.
    """

    def __init__(
        self, in_width: int, width: int, stride: int, cfg: BlockConfig, projection: bool | str,
    ) -> None:
        super().__init__()
        k1, k2 = cfg.kernels
        self.conv1 = nn.Conv2d(in_width, cfg.mid, k1, stride, k1 // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.mid)
        self.conv2 = nn.Conv2d(cfg.mid, width, k2, 1, k2 // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.se = SqueezeExcite(width, cfg.se) if cfg.se else None
        self.shortcut = _shortcut(in_width, width, stride, projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """Post-activation bottleneck block described by a :class:`BlockConfig` with ``mid2 > 0``: the
    module names (``conv1``..``conv3``, ``bn1``..``bn3``) are torchvision's, the stride is on ``conv2``.

    ``projection`` is as for :class:`BasicBlock`.
    """

    def __init__(
        self, in_width: int, width: int, stride: int, cfg: BlockConfig, projection: bool | str,
    ) -> None:
        super().__init__()
        k1, k2 = cfg.kernels
        self.conv1 = nn.Conv2d(in_width, cfg.mid, k1, 1, k1 // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.mid)
        self.conv2 = nn.Conv2d(cfg.mid, cfg.mid2, k2, stride, k2 // 2, groups=cfg.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(cfg.mid2)
        self.conv3 = nn.Conv2d(cfg.mid2, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.se = SqueezeExcite(width, cfg.se) if cfg.se else None
        self.shortcut = _shortcut(in_width, width, stride, projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return F.relu(out + self.shortcut(x))


def _shortcut(in_width: int, width: int, stride: int, projection: bool | str) -> nn.Module:
    """A block's shortcut: ``"pad"`` a :class:`ZeroPadShortcut`, true a 1x1 conv + BN, else the identity."""
    if projection == "pad":
        return nn.Sequential(ZeroPadShortcut(in_width, width, stride))
    if projection:
        return nn.Sequential(nn.Conv2d(in_width, width, 1, stride, bias=False), nn.BatchNorm2d(width))
    return nn.Identity()


class ResNet(nn.Module):
    """A CIFAR-style ResNet built from (and described by) a :class:`ResNetConfig`.

    ``model.config`` always matches the modules, so ``ResNet(model.config)`` builds the same
    architecture. Transforms return new ``ResNet`` instances with updated configs.
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.whiten = WhiteningConv(c.in_channels, c.whiten_kernel) if c.whiten_kernel else None
        self.conv1 = nn.Conv2d(c.stem_in_channels, c.stem_width, c.stem_kernel, c.stem_stride, c.stem_kernel // 2,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        self.se = SqueezeExcite(c.stem_width, c.stem_se) if c.stem_se else None
        self.maxpool = nn.MaxPool2d(3, 2, 1) if c.stem_pool else None
        in_width = c.stem_width
        for i, stage in enumerate(c.stages):
            # False, or the kind of the first block's shortcut module ("conv" / "pad")
            projection = stage.needs_projection(in_width) and stage.shortcut
            blocks = []
            for j, block in enumerate(stage.blocks):
                first = j == 0
                blocks.append(
                    (Bottleneck if block.bottleneck else BasicBlock)(
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
        if self.whiten is not None:
            x = F.gelu(self.whiten(x))
        out = F.relu(self.bn1(self.conv1(x)))
        if self.se is not None:
            out = self.se(out)
        if self.maxpool is not None:
            out = self.maxpool(out)
        for stage in self.stages:
            out = stage(out)
        # Global average pool; `mean` equals the reports' avg_pool2d(4) on a 4x4 map. It counts one FLOP
        # per input element, as every kind of pooling does (compress.metrics).
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
                kernels = (block.conv1.kernel_size[0], block.conv2.kernel_size[0])
                if isinstance(block, Bottleneck):
                    blocks.append(BlockConfig(block.conv1.out_channels, kernels, se, block.conv2.out_channels, block.conv2.groups))
                else:
                    blocks.append(BlockConfig(block.conv1.out_channels, kernels, se))
            first = stage[0]
            has_proj = not isinstance(first.shortcut, nn.Identity)
            last = first.conv3 if isinstance(first, Bottleneck) else first.conv2
            stages.append(
                StageConfig(last.out_channels, old.stride, tuple(blocks), projection=has_proj, shortcut=old.shortcut)
            )
        return ResNetConfig(
            stages=tuple(stages),
            stem_width=self.conv1.out_channels,
            stem_kernel=self.conv1.kernel_size[0],
            stem_se=self.se.fc1.out_channels if self.se is not None else 0,
            in_channels=self.whiten.in_channels if self.whiten is not None else self.conv1.in_channels,
            num_classes=self.linear.out_features,
            input_mean=self.config.input_mean,
            input_std=self.config.input_std,
            whiten_kernel=self.whiten.kernel_size[0] if self.whiten is not None else 0,
            stem_stride=self.conv1.stride[0],
            stem_pool=self.maxpool is not None,
        )


def resnet_from_config(config: ResNetConfig | dict[str, Any]) -> ResNet:
    """Build a freshly initialised :class:`ResNet` from a config (or its ``to_dict()`` form)."""
    if isinstance(config, dict):
        config = ResNetConfig.from_dict(config)
    return ResNet(config)


def resnet18(num_classes: int = 10) -> ResNet:
    """The CIFAR ResNet-18 (3x3 stem, no max-pool): 11,173,962 trainable parameters for 10 classes."""
    return ResNet(ResNetConfig.uniform((64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2), num_classes=num_classes))


def input_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` that ``model`` carries (a compress ResNet whose config has them), else ``None``."""
    config = getattr(model, "config", None)
    if isinstance(config, ResNetConfig) and config.input_mean is not None:
        return config.input_mean, config.input_std
    return None


def with_normalization(
    model: ResNet, mean: Sequence[float] | None, std: Sequence[float] | None
) -> ResNet:
    """A copy of ``model`` carrying the input normalisation ``(mean, std)`` (``None, None``: none)."""
    if not isinstance(model, ResNet):
        raise TypeError(f"with_normalization() takes a compress ResNet, got {type(model).__name__}")
    new = copy.deepcopy(model)
    new.config = model.config.replace(
        input_mean=None if mean is None else tuple(mean), input_std=None if std is None else tuple(std)
    )
    return new
