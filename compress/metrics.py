"""Parameter and FLOP counts, and a per-stage summary table.

FLOP convention (fvcore): one fused multiply-add counts as one FLOP; convolutions, linear layers and
batch norms (in eval mode: 2 per element with affine) are counted; ReLU, pooling by ``mean``, sigmoid
and elementwise products are not. For the CIFAR ResNet-18 on a 1x3x32x32 input this gives
556,651,520 (555.42 M of it conv + linear), the number quoted by the reports.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_flops", "flops_by_module", "summary"]


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _flop_analysis(model: nn.Module, input_size: Sequence[int]):
    from fvcore.nn import FlopCountAnalysis

    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.zeros(*input_size, device=device)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


def count_flops(model: nn.Module, input_size: Sequence[int] = (1, 3, 32, 32)) -> int:
    """FLOPs (fvcore multiply-adds, BN included) of one forward pass on a tensor of ``input_size``.

    The model is measured in eval mode and left in the mode it was in.
    """
    return sum(flops_by_module(model, input_size, names=[""]).values())


def flops_by_module(
    model: nn.Module, input_size: Sequence[int] = (1, 3, 32, 32), names: Sequence[str] | None = None
) -> dict[str, int]:
    """FLOPs per named submodule (``""`` is the whole model); ``names`` picks which to return."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            by_module = _flop_analysis(model, input_size).by_module()
    finally:
        model.train(was_training)
    if names is None:
        return dict(by_module)
    return {n: int(by_module.get(n, 0)) for n in names}


def summary(model: nn.Module, input_size: Sequence[int] = (1, 3, 32, 32), *, print_table: bool = True):
    """A rich table of a :class:`~compress.models.ResNet`: per stage width, blocks, stride, params, FLOPs.

    Returns the ``rich.table.Table``; prints it too unless ``print_table=False``.
    """
    from rich.console import Console
    from rich.table import Table

    from .models.resnet import ResNet

    if not isinstance(model, ResNet):
        raise TypeError(f"summary() needs a compress ResNet, got {type(model).__name__}")
    cfg = model.config
    names = ["conv1", "bn1", "se", *[f"layer{i + 1}" for i in range(len(cfg.stages))], "linear", ""]
    flops = flops_by_module(model, input_size, names)
    table = Table(title=f"{type(model).__name__}, {len(cfg.stages)} stages", title_justify="left")
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
