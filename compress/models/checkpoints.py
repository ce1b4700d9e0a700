"""Import trained CIFAR ResNets published by others as compress :class:`~compress.models.ResNet`\\ s.

:func:`from_checkpoint` reads a checkpoint file (or a state dict), works out its layout, block counts,
widths and kernel sizes from the tensors, and returns a compress ResNet computing the same function,
carrying the input normalisation its training code used. Four layouts are understood:

``option_a``
    He et al.'s CIFAR ResNet-20/32/44/56/110 as in akamaster/pytorch_resnet_cifar10: ``conv1``,
    ``bn1``, ``layer1..3`` of basic blocks, ``linear``, and **no** shortcut parameters: where the
    shape changes the shortcut is ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``.
    That shortcut becomes a :class:`~compress.models.ZeroPadShortcut` (a frozen strided 1x1 conv with
    a 0/1 weight), which is exact and which torch-pruning can prune through. Normalisation: ImageNet
    statistics (akamaster's trainer).
``kuangliu``
    kuangliu/pytorch-cifar's CIFAR ResNet-18/34 (and any block counts and widths): ``conv1``, ``bn1``,
    ``layer1..N``, ``shortcut.0`` (1x1 conv) and ``shortcut.1`` (BN) where the shape changes,
    ``linear``. These are compress's own module names. Normalisation: kuangliu's CIFAR-10 statistics.
``report003``
    report 003's search networks (Nikunj-Gupta/Efficient_ResNets): ``conv1``, ``bn1``, optional
    ``seblock`` after the stem, ``residual_layers.<stage>.<block>`` kuangliu blocks (kernel ``k``,
    padding ``k // 2``) with 1x1 conv + BN shortcuts, ``linear``. Normalisation: kuangliu's statistics.

``torchvision``
    a torchvision ResNet's state dict (``resnet18`` ... ``resnet152``, wide ResNets, ResNeXt; basic or
    bottleneck blocks): ``conv1``, ``bn1``, ``layer1..4``, ``downsample.0``/``.1`` shortcuts, ``fc``,
    read by :func:`compress.models.convert.torchvision_config`. A state dict does not say how the stem
    strides: a 7x7 stem is taken as torchvision's (stride 2, then a max-pool), any other as the CIFAR
    adaptation (stride 1, no max-pool); convert the model itself with
    :func:`~compress.models.from_torchvision` where that guess is wrong. Normalisation: ImageNet
    statistics (torchvision's weights).

In the other layouts the stem is a stride-1 conv, the first stage has stride 1 and every later stage
stride 2, and the classifier reads the globally average-pooled last feature map. Keys may carry the
``module.`` prefix of ``nn.DataParallel``. Whatever cannot be represented exactly (an unknown key, a
missing one, a shortcut that is not 1x1, a classifier on a non-global pooled map, widths that do not
chain) raises :class:`CheckpointError` naming the key and its shape; nothing is loaded approximately.
Dropout before the classifier (report 003) acts in training only and is not kept.

Files are read with ``torch.load(weights_only=True)``; the only extra types allowed are numpy's
scalar reconstructor and its numeric dtypes (report 003's checkpoints hold numpy integers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..normalization import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from .convert import compress_names, torchvision_config
from .resnet import BlockConfig, ResNet, ResNetConfig, StageConfig, ZeroPadShortcut

__all__ = ["from_checkpoint", "read_checkpoint", "CheckpointError", "LAYOUTS", "LAYOUT_NORMALIZATION"]

Layout = Literal["auto", "option_a", "kuangliu", "report003", "torchvision"]

#: The layouts :func:`from_checkpoint` understands (besides ``"auto"``).
LAYOUTS = ("option_a", "kuangliu", "report003", "torchvision")

#: The input normalisation ``(mean, std)`` each layout's training code used.
LAYOUT_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "option_a": (IMAGENET_MEAN, IMAGENET_STD),  # akamaster/pytorch_resnet_cifar10, trainer.py
    "kuangliu": (CIFAR10_MEAN, CIFAR10_STD),  # kuangliu/pytorch-cifar, main.py
    "report003": (CIFAR10_MEAN, CIFAR10_STD),  # Nikunj-Gupta/Efficient_ResNets
    "torchvision": (IMAGENET_MEAN, IMAGENET_STD),  # torchvision's ImageNet weights
}

_STATE_KEYS = ("state_dict", "net", "model")  # where checkpoints keep their weights
_BN = ("weight", "bias", "running_mean", "running_var")


class CheckpointError(ValueError):
    """A checkpoint cannot be imported exactly; the message names the key (and shape) at fault."""


# --- reading --------------------------------------------------------------------------------------

def _numpy_safe_globals() -> list[Any]:
    """numpy's scalar reconstructor (under the name old pickles use) and its numeric dtype classes."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed: list[Any] = [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
                     "Float16", "Float32", "Float64"):
            cls = getattr(dtypes, f"{name}DType", None)
            if cls is not None:
                allowed.append(cls)
    return allowed


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, numpy scalars allowed (nothing else extra)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refused or file unreadable
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} cannot be read safely (weights_only): {first}") from e


def _plain(value: Any) -> Any:
    """numpy scalars and containers of them as plain Python values (for metadata)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    )


def _split(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a loaded checkpoint: a bare state dict or a dict holding one."""
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith("compress.model/"):
        raise CheckpointError(f"{where} was written by compress.save: read it with compress.load")
    if _is_state_dict(obj):
        return dict(obj), {}
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                meta = {k: _plain(v) for k, v in obj.items() if k != key and not torch.is_tensor(v)}
                return dict(obj[key]), meta
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise CheckpointError(
            f"{where}: no state dict found; expected a mapping of names to tensors, or a dict holding one "
            f"under {', '.join(map(repr, _STATE_KEYS))} (found keys {keys})"
        )
    raise CheckpointError(f"{where}: expected a state dict or a checkpoint dict, got {type(obj).__name__}")


# --- layout ---------------------------------------------------------------------------------------

def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _detect(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("residual_layers.") for k in state):
        return "report003"
    if any(re.match(r"layer\d+\.", k) for k in state) and ("fc.weight" in state or any(".downsample." in k for k in state)):
        return "torchvision"
    if any(re.match(r"layer\d+\.", k) for k in state):
        return "kuangliu" if any(".shortcut." in k for k in state) else "option_a"
    sample = ", ".join(list(state)[:4])
    raise CheckpointError(
        "cannot tell the checkpoint's layout: expected keys like 'layer1.0.conv1.weight' (option_a, kuangliu, "
        "torchvision) "
        f"or 'residual_layers.0.0.conv1.weight' (report003), got keys like {sample}"
    )


def _to_compress_names(state: dict[str, torch.Tensor], layout: str) -> dict[str, tuple[str, torch.Tensor]]:
    """compress module name -> (the checkpoint's own key, tensor)."""
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name = key
        if layout == "report003":
            m = re.match(r"residual_layers\.(\d+)\.(.*)", key)
            if m:
                name = f"layer{int(m.group(1)) + 1}.{m.group(2)}"
            elif key.startswith("seblock.conv1."):
                name = "se.fc1." + key[len("seblock.conv1."):]
            elif key.startswith("seblock.conv2."):
                name = "se.fc2." + key[len("seblock.conv2."):]
        elif key.startswith("residual_layers."):
            raise CheckpointError(f"key {key!r} belongs to the report003 layout, not {layout!r}")
        out[name] = (key, tensor)
    return out


class _Reader:
    """Takes tensors out of a (compress-named) state dict, checking shapes and remembering what was used."""

    def __init__(self, named: dict[str, tuple[str, torch.Tensor]], layout: str) -> None:
        self.named = named
        self.layout = layout
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.named

    def key(self, name: str) -> str:
        return self.named[name][0] if name in self.named else name

    def get(self, name: str, ndim: int | None = None) -> torch.Tensor:
        if name not in self.named:
            raise CheckpointError(f"missing key {self._src(name)!r} (needed by the {self.layout} layout)")
        key, t = self.named[name]
        if ndim is not None and t.dim() != ndim:
            raise CheckpointError(f"{key!r} has shape {tuple(t.shape)}; expected a {ndim}-d tensor")
        self.used.add(name)
        return t

    def conv(self, name: str, out_ch: int | None = None, in_ch: int | None = None) -> tuple[int, int, int]:
        """(out, in, k) of a square, odd, bias-free conv; checks the expected channel counts."""
        w = self.get(f"{name}.weight", 4)
        o, i, kh, kw = w.shape
        key = self.key(f"{name}.weight")
        if kh != kw or kh % 2 == 0:
            raise CheckpointError(f"{key!r} has shape {tuple(w.shape)}: only square, odd kernels are supported")
        if (out_ch is not None and o != out_ch) or (in_ch is not None and i != in_ch):
            want = f"({out_ch if out_ch is not None else '*'}, {in_ch if in_ch is not None else '*'}, k, k)"
            raise CheckpointError(f"{key!r} has shape {tuple(w.shape)}, expected {want}: the widths do not chain")
        if self.has(f"{name}.bias"):
            raise CheckpointError(f"{self.key(name + '.bias')!r}: convs with a bias are not supported here")
        return int(o), int(i), int(kh)

    def bn(self, name: str, channels: int) -> None:
        for p in _BN:
            t = self.get(f"{name}.{p}")
            if tuple(t.shape) != (channels,):
                raise CheckpointError(f"{self.key(f'{name}.{p}')!r} has shape {tuple(t.shape)}, expected ({channels},)")
        if self.has(f"{name}.num_batches_tracked"):
            self.get(f"{name}.num_batches_tracked")

    def se(self, name: str, channels: int) -> int:
        """Hidden width of an SE module ``name`` (fc1, fc2: 1x1 convs with bias), or 0 if absent."""
        if not self.has(f"{name}.fc1.weight"):
            return 0
        w1, b1 = self.get(f"{name}.fc1.weight", 4), self.get(f"{name}.fc1.bias", 1)
        w2, b2 = self.get(f"{name}.fc2.weight", 4), self.get(f"{name}.fc2.bias", 1)
        hidden = w1.shape[0]
        if tuple(w1.shape) != (hidden, channels, 1, 1) or tuple(b1.shape) != (hidden,) or \
                tuple(w2.shape) != (channels, hidden, 1, 1) or tuple(b2.shape) != (channels,):
            raise CheckpointError(
                f"{self.key(name + '.fc1.weight')!r} / {self.key(name + '.fc2.weight')!r} have shapes "
                f"{tuple(w1.shape)} / {tuple(w2.shape)}: not a squeeze-and-excitation module on {channels} channels"
            )
        return int(hidden)

    def _src(self, name: str) -> str:
        if self.layout == "report003":
            m = re.match(r"layer(\d+)\.(.*)", name)
            if m:
                return f"residual_layers.{int(m.group(1)) - 1}.{m.group(2)}"
            name = name.replace("se.fc1.", "seblock.conv1.").replace("se.fc2.", "seblock.conv2.")
        return name


def _indices(names: Any, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for n in names if (m := re.match(pattern, n))})


def _config(r: _Reader, layout: str) -> tuple[ResNetConfig, dict[int, int]]:
    """The ResNetConfig the tensors describe, and the zero-padding offset of each option-A stage."""
    stem_width, in_channels, stem_kernel = r.conv("conv1")
    r.bn("bn1", stem_width)
    stem_se = r.se("se", stem_width)
    stage_ids = _indices(r.named, r"layer(\d+)\.")
    if not stage_ids:
        raise CheckpointError(f"no residual stages found (keys like {r._src('layer1.0.conv1.weight')!r})")
    if stage_ids != list(range(1, len(stage_ids) + 1)):
        raise CheckpointError(f"stages must be numbered from the first on without gaps; found {r._src(f'layer{stage_ids[-1]}')!r}")
    stages, pads = [], {}
    in_width = stem_width
    for s in stage_ids:
        stride = 1 if s == 1 else 2
        block_ids = _indices(r.named, rf"layer{s}\.(\d+)\.")
        if block_ids != list(range(len(block_ids))):
            raise CheckpointError(f"blocks of {r._src(f'layer{s}')!r} must be numbered 0, 1, ... without gaps, found {block_ids}")
        blocks, width = [], None
        for j in block_ids:
            p = f"layer{s}.{j}"
            block_in = in_width if j == 0 else width
            mid, _, k1 = r.conv(f"{p}.conv1", in_ch=block_in)
            r.bn(f"{p}.bn1", mid)
            out, _, k2 = r.conv(f"{p}.conv2", out_ch=width, in_ch=mid)
            width = out
            r.bn(f"{p}.bn2", width)
            se = r.se(f"{p}.se", width)
            blocks.append(BlockConfig(mid, (k1, k2), se))
            if j > 0 and r.has(f"{p}.shortcut.0.weight"):
                raise CheckpointError(f"{r.key(p + '.shortcut.0.weight')!r}: compress gives only a stage's first block a shortcut")
        needed = stride != 1 or in_width != width
        first = f"layer{s}.0"
        if r.has(f"{first}.shortcut.0.weight"):
            if layout == "option_a":
                raise CheckpointError(f"{r.key(first + '.shortcut.0.weight')!r}: option_a shortcuts have no parameters")
            o, i, k = r.conv(f"{first}.shortcut.0", out_ch=width, in_ch=in_width)
            if k != 1:
                shape = tuple(r.get(f"{first}.shortcut.0.weight").shape)
                raise CheckpointError(f"{r.key(first + '.shortcut.0.weight')!r} has shape {shape}: only 1x1 shortcut convs are supported")
            r.bn(f"{first}.shortcut.1", width)
            stages.append(StageConfig(width, stride, tuple(blocks), projection=True, shortcut="conv"))
        elif needed and layout == "option_a":
            pad = width // 4
            if in_width + 2 * pad != width or stride != 2:
                raise CheckpointError(
                    f"{r._src(first)!r} goes from {in_width} to {width} channels at stride {stride}: not the "
                    f"option-A zero padding (x[:, :, ::2, ::2] padded by {pad} channels on each side)"
                )
            pads[s] = pad
            stages.append(StageConfig(width, stride, tuple(blocks), projection=True, shortcut="pad"))
        elif needed:
            raise CheckpointError(
                f"missing key {r._src(first + '.shortcut.0.weight')!r}: {r._src(first)!r} changes the shape "
                f"({in_width} -> {width} channels, stride {stride}) and the {layout} layout has a 1x1 conv shortcut there"
            )
        else:
            stages.append(StageConfig(width, stride, tuple(blocks)))
        in_width = width
    w = r.get("linear.weight", 2)
    b = r.get("linear.bias", 1)
    if w.shape[1] != in_width:
        raise CheckpointError(
            f"{r.key('linear.weight')!r} has shape {tuple(w.shape)}, but the last stage has {in_width} channels: "
            "the classifier does not read the globally pooled feature map, which compress cannot represent"
        )
    if tuple(b.shape) != (w.shape[0],):
        raise CheckpointError(f"{r.key('linear.bias')!r} has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
    unknown = [n for n in r.named if n not in r.used]
    if unknown:
        key, t = r.named[unknown[0]]
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise CheckpointError(f"unknown key {key!r} with shape {tuple(t.shape)}{more}: the {layout} layout has no such layer")
    mean, std = LAYOUT_NORMALIZATION[layout]
    config = ResNetConfig(
        stages=tuple(stages), stem_width=stem_width, stem_kernel=stem_kernel, stem_se=stem_se,
        in_channels=in_channels, num_classes=int(w.shape[0]), input_mean=mean, input_std=std,
    )
    return config, pads


# --- the entry point ------------------------------------------------------------------------------

def from_checkpoint(
    source: str | os.PathLike | Mapping[str, Any],
    layout: Layout = "auto",
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    with_metadata: bool = False,
) -> ResNet | tuple[ResNet, dict[str, Any]]:
    """A compress :class:`~compress.models.ResNet` (eval mode) computing what the checkpoint computes.

    ``source`` is a checkpoint file, a state dict, or a loaded checkpoint dict holding one under
    ``state_dict``, ``net`` or ``model``. ``layout`` is ``"auto"`` (told apart by the keys) or one of
    :data:`LAYOUTS`; see the module docstring. The model carries the normalisation of its layout's
    training code (:data:`LAYOUT_NORMALIZATION`) unless ``mean`` and ``std`` are given. With
    ``with_metadata=True`` returns ``(model, metadata)``: the checkpoint's other entries (e.g.
    ``best_prec1``, ``acc``, ``epoch``, ``config``) as plain Python values, plus ``layout``.
    Raises :class:`CheckpointError` for anything it cannot represent exactly.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose 'auto' or one of {', '.join(LAYOUTS)}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        obj = read_checkpoint(source)
    else:
        where = "the state dict"
        obj = source
    state, meta = _split(obj, where)
    state = _strip_prefix(state)
    found = _detect(state)
    if layout == "auto":
        layout = found  # type: ignore[assignment]
    elif (found == "report003") != (layout == "report003") or (found == "torchvision") != (layout == "torchvision"):
        raise CheckpointError(f"{where}: its keys are in the {found} layout, not {layout!r}")
    if layout == "torchvision":
        model = _from_torchvision_state(state, where)
        if mean is None:
            mean, std = LAYOUT_NORMALIZATION[layout]
        model.config = model.config.replace(input_mean=tuple(mean), input_std=tuple(std))
        model.eval()
        return (model, {**meta, "layout": layout}) if with_metadata else model
    try:
        reader = _Reader(_to_compress_names(state, layout), layout)
        config, pads = _config(reader, layout)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    if mean is not None:
        config = config.replace(input_mean=tuple(mean), input_std=tuple(std))
    model = ResNet(config)
    target = model.state_dict()
    values = {name: t for name, (_, t) in reader.named.items()}
    for name in target:
        if name in values:
            target[name] = values[name]
        elif not name.endswith("num_batches_tracked") and not _is_pad_weight(model, name):
            raise CheckpointError(f"{where}: internal error, no tensor for {name!r}")  # pragma: no cover
    for s, pad in pads.items():
        conv = getattr(model, f"layer{s}")[0].shortcut[0]
        assert isinstance(conv, ZeroPadShortcut)
        weight = torch.zeros_like(conv.weight)
        for c in range(conv.in_channels):
            weight[c + pad, c] = 1.0
        target[f"layer{s}.0.shortcut.0.weight"] = weight
    model.load_state_dict(target, strict=True)
    model.eval()
    if with_metadata:
        return model, {**meta, "layout": layout}
    return model


def _from_torchvision_state(state: dict[str, torch.Tensor], where: str) -> ResNet:
    """The compress ResNet a torchvision ResNet state dict describes, with its weights."""
    try:
        model = ResNet(torchvision_config(state))
        model.load_state_dict(compress_names(state), strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        first = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{where}: not a torchvision ResNet state dict compress can import ({first})") from None
    return model


def _is_pad_weight(model: nn.Module, name: str) -> bool:
    module_name = name.rsplit(".", 1)[0]
    return isinstance(model.get_submodule(module_name), ZeroPadShortcut)
