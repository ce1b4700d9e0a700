"""Parameter and FLOP counts, and a per-stage summary table.

FLOP convention (fvcore): one fused multiply-add counts as one FLOP; convolutions, linear layers and
batch norms (in eval mode: 2 per element with affine) are counted; ReLU, pooling by ``mean``, sigmoid
and elementwise products are not. For the CIFAR ResNet-18 on a 1x3x32x32 input this gives
556,651,520 (555.42 M of it conv + linear), the number quoted by the reports.

FLOPs depend on the input size, so it is part of every count: give ``input_size`` (a zero tensor of
that shape is traced) or ``example_input``. Only a compress :class:`~compress.models.ResNet` (the CIFAR
family) has a default, :data:`CIFAR_INPUT` (1x3x32x32); any other model without one is an error.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_flops", "flops_by_module", "summary", "CIFAR_INPUT"]

CIFAR_INPUT = (1, 3, 32, 32)
"""The input size FLOPs of a compress ResNet are counted at unless told otherwise: one CIFAR image."""


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``, plus the frozen weights of any
    patch-whitening layer (:class:`~compress.models.WhiteningConv`): computed from data rather than
    trained, they are still weights the model stores (a :class:`~compress.models.ZeroPadShortcut`'s
    fixed 0/1 selection is not counted)."""
    from .models.resnet import WhiteningConv

    stored = {id(p) for m in model.modules() if isinstance(m, WhiteningConv) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if p.requires_grad or id(p) in stored)


def _flop_inputs(model: nn.Module, input_size: Sequence[int] | None = None, example_input: Any = None) -> tuple:
    """The inputs FLOPs are counted on: ``example_input``, a zero tensor of ``input_size``, or the default.

    Only a compress ResNet has a default (:data:`CIFAR_INPUT`); for other models a ``TypeError`` asks
    for the size, since a count at a guessed size would be silently wrong (a torchvision ResNet-18 has
    1,819,065,856 FLOPs at 224x224 and 37,625,344 at 32x32).
    """
    from .models.resnet import ResNet

    if example_input is not None:
        if input_size is not None:
            raise TypeError("give input_size or example_input, not both")
        return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if input_size is None:
        if not isinstance(model, ResNet):
            raise TypeError(
                f"FLOPs depend on the input size: pass input_size=(N, C, H, W) or example_input= for a "
                f"{type(model).__name__} (only a compress ResNet defaults to CIFAR's {'x'.join(map(str, CIFAR_INPUT))})"
            )
        input_size = CIFAR_INPUT
    if not isinstance(input_size, (tuple, list)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_size
    ):
        raise ValueError(f"input_size must be a sequence of positive ints such as (1, 3, 224, 224), got {input_size!r}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    return (torch.zeros(*input_size, device=device),)


def count_flops(model: nn.Module, input_size: Sequence[int] | None = None, *, example_input: Any = None) -> int:
    """FLOPs (fvcore multiply-adds, BN included) of one forward pass at ``input_size``, e.g. ``(1, 3, 224, 224)``.

    The count is for that input (a zero tensor of the shape is traced), or for ``example_input`` (a
    tensor or a tuple of positional inputs) if given instead. A compress ResNet defaults to one CIFAR
    image, ``(1, 3, 32, 32)``; any other model needs one of the two (``TypeError`` otherwise). The model
    is measured in eval mode and left in the mode it was in.
    """
    return sum(flops_by_module(model, input_size, names=[""], example_input=example_input).values())


def fvcore_flop_count() -> type:
    """fvcore's ``FlopCountAnalysis``, imported without the FutureWarning that fvcore's own import raises
    on current torch (its ``focal_loss`` module calls the deprecated ``torch.jit.script``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis
    return FlopCountAnalysis


def flops_by_module(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    *,
    example_input: Any = None,
) -> dict[str, int]:
    """FLOPs per named submodule (``""`` is the whole model) at ``input_size``; ``names`` picks which to return.

    The input is given as for :func:`count_flops` (a compress ResNet defaults to ``(1, 3, 32, 32)``).
    """
    FlopCountAnalysis = fvcore_flop_count()

    inputs = _flop_inputs(model, input_size, example_input)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:  # a plain forward first: an input the model cannot take is the caller's mistake, said in one line
                model(*inputs)
            except Exception as e:  # noqa: BLE001 - any failure here means "not an input for this model"
                shapes = ", ".join("x".join(map(str, x.shape)) if torch.is_tensor(x) else type(x).__name__ for x in inputs)
                raise ValueError(f"the {type(model).__name__} cannot run on an input of {shapes} ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:200]}); give input_size=(N, C, H, W) or example_input= "
                                 "that it takes") from e
            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_module = analysis.by_module()
    finally:
        for m, training in modes.items():
            m.training = training
    if names is None:
        return dict(by_module)
    return {n: int(by_module.get(n, 0)) for n in names}


def summary(model: nn.Module, input_size: Sequence[int] = CIFAR_INPUT, *, print_table: bool = True):
    """A rich table of a :class:`~compress.models.ResNet`: per stage width, blocks, stride, params, FLOPs.

    FLOPs are counted at ``input_size`` (one CIFAR image by default), which the title states.
    Returns the ``rich.table.Table``; prints it too unless ``print_table=False``.
    """
    from rich.console import Console
    from rich.table import Table

    from .models.resnet import ResNet

    if not isinstance(model, ResNet):
        raise TypeError(f"summary() needs a compress ResNet, got {type(model).__name__}")
    cfg = model.config
    names = ["whiten", "conv1", "bn1", "se", *[f"layer{i + 1}" for i in range(len(cfg.stages))], "linear", ""]
    flops = flops_by_module(model, input_size, names)
    size = "x".join(map(str, input_size))
    table = Table(title=f"{type(model).__name__}, {len(cfg.stages)} stages, FLOPs at {size}", title_justify="left")
    for col in ("part", "width", "blocks", "stride", "mids", "k", "SE", "params", "MFLOPs"):
        table.add_column(
            col,
            justify="right" if col in ("params", "MFLOPs", "width", "blocks", "stride") else "left",
            min_width=10 if col == "params" else None,
            no_wrap=col in ("params", "MFLOPs", "mids"),
        )

    def mflops(n: int) -> str:
        return f"{n / 1e6:.2f}"

    def params_of(*mods: nn.Module | None) -> int:
        return sum(count_params(m) for m in mods if m is not None)

    if model.whiten is not None:  # frozen patch whitening in front of the stem
        k = cfg.whiten_kernel
        table.add_row("whiten", str(cfg.whiten_width), "", "1", "", f"{k}x{k}", "", f"{params_of(model.whiten):,}",
                      mflops(flops["whiten"]))
    stem_flops = flops["conv1"] + flops["bn1"] + flops["se"]
    table.add_row(
        "stem", str(cfg.stem_width), "", "1", "", f"{cfg.stem_kernel}x{cfg.stem_kernel}",
        str(cfg.stem_se or ""), f"{params_of(model.conv1, model.bn1, model.se):,}", mflops(stem_flops),
    )
    for i, (stage_cfg, stage) in enumerate(zip(cfg.stages, model.stages)):
        kernels = sorted({f"{a}x{b}" for a, b in (blk.kernels for blk in stage_cfg.blocks)})
        ses = {blk.se for blk in stage_cfg.blocks}
        table.add_row(
            f"layer{i + 1}", str(stage_cfg.width), str(len(stage_cfg.blocks)), str(stage_cfg.stride),
            "/".join(str(b.mid) for b in stage_cfg.blocks), ",".join(kernels),
            "/".join(map(str, sorted(ses))) if ses != {0} else "",
            f"{params_of(stage):,}", mflops(flops[f"layer{i + 1}"]),
        )
    table.add_row("head", f"{cfg.num_classes}", "", "", "", "", "", f"{params_of(model.linear):,}", mflops(flops["linear"]))
    table.add_section()
    table.add_row("total", "", str(sum(cfg.depths)), "", "", "", "", f"{count_params(model):,}", mflops(flops[""]))
    if print_table:
        Console().print(table)
    return table
