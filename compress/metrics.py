"""Parameter and FLOP counts, and a per-stage summary table.

FLOP convention (fvcore's, with every kind of pooling counted alike): one fused multiply-add counts
as one FLOP; convolutions, linear layers and batch norms (in eval mode: 2 per element with affine) are
counted, and pooling of every kind (max, average, adaptive; and ``mean``, a global average pool) costs
one FLOP per input element, the rule fvcore applies to adaptive average pooling; ReLU, sigmoid and
elementwise products are not counted. fvcore alone counts adaptive average pooling but not ``mean`` or
``avg_pool2d``, so the same network written either way got two numbers; with all pooling counted, a
compress ResNet and the torchvision model of the same architecture count alike, and the pruning cost
model (:mod:`compress.transforms._cost`), which uses the same count, predicts exactly what is measured.
For the CIFAR ResNet-18 on a 1x3x32x32 input this gives 556,659,712 (555.42 M of it conv + linear,
8,192 the final average pool). The reports quote 556.65 M: their code pools with ``avg_pool2d``, which
fvcore does not count.

FLOPs depend on the input size, so it is part of every count: give ``example_input``, a shape (a zero
tensor of it is traced) or the input itself. Only a compress :class:`~compress.models.ResNet` (the CIFAR
family) has a default, :data:`CIFAR_INPUT` (1x3x32x32); any other model without one is an error.
:func:`example_input` is the one place that turns what a caller gives into the inputs a model is run
on; :func:`compress.save`'s check and :func:`compress.measure_latency` build theirs with it too.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from .models.resnet import ResNet, WhiteningConv

__all__ = ["count_params", "count_flops", "flops_by_module", "summary", "example_input", "CIFAR_INPUT"]

CIFAR_INPUT = (1, 3, 32, 32)
"""The input size FLOPs of a compress ResNet are counted at unless told otherwise: one CIFAR image."""


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``, plus the frozen weights of any
    patch-whitening layer (:class:`~compress.models.WhiteningConv`): computed from data rather than
    trained, they are still weights the model stores (a :class:`~compress.models.ZeroPadShortcut`'s
    fixed 0/1 selection is not counted)."""
    stored = {id(p) for m in model.modules() if isinstance(m, WhiteningConv) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if p.requires_grad or id(p) in stored)


def example_input(
    model_or_shape: nn.Module | Sequence[int] | torch.Tensor | Sequence[torch.Tensor],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """The positional inputs to run a model on, as a tuple, from what a caller gives:

    - a shape such as ``(1, 3, 224, 224)``: a tensor of it, zeros, or with ``seed`` standard-normal
      values from a private generator seeded with it (the caller's RNG state is not touched);
    - a tensor, or a tuple or list of positional inputs with a tensor among them: those, unchanged
      (any other object is one input: ``(obj,)``);
    - a model: its default input, zeros of :data:`CIFAR_INPUT` on the model's device for a compress
      ResNet; any other model has none (``TypeError``: a count at a guessed size would be silently wrong).

    ``device`` and ``dtype`` (default CPU, float32) apply to the tensors built here.
    """
    if torch.is_tensor(model_or_shape):
        return (model_or_shape,)
    if isinstance(model_or_shape, nn.Module):
        if not isinstance(model_or_shape, ResNet):
            raise TypeError(
                f"pass example_input=(N, C, H, W) or a tensor for a {type(model_or_shape).__name__} "
                f"(only a compress ResNet defaults to CIFAR's {'x'.join(map(str, CIFAR_INPUT))})"
            )
        return example_input(CIFAR_INPUT, device=next(model_or_shape.parameters()).device, dtype=dtype, seed=seed)
    if isinstance(model_or_shape, (tuple, list)) and any(torch.is_tensor(t) for t in model_or_shape):
        return tuple(model_or_shape)  # positional inputs (not all need be tensors)
    if not isinstance(model_or_shape, (tuple, list, torch.Size, int, float, str, bytes)) and model_or_shape is not None:
        return (model_or_shape,)  # one input of another kind, e.g. a dict the model takes
    if not isinstance(model_or_shape, (tuple, list, torch.Size)) or not model_or_shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in model_or_shape
    ):
        raise ValueError("example_input must be a shape of positive ints such as (1, 3, 224, 224), a tensor or "
                         f"a tuple of tensors, got {model_or_shape!r}")
    if seed is None:
        return (torch.zeros(*model_or_shape, device=device, dtype=dtype),)
    x = torch.randn(*model_or_shape, generator=torch.Generator().manual_seed(seed))
    return (x.to(device=device, dtype=dtype) if device is not None or dtype is not None else x,)


def _renamed(example: Any, input_size: Any, where: str) -> Any:
    """``example_input``, or the deprecated ``input_size`` it replaced (a ``DeprecationWarning``; both: ``TypeError``)."""
    if input_size is None:
        return example
    if example is not None:
        raise TypeError("give example_input or input_size (its old name), not both")
    warnings.warn(f"{where}(input_size=) is deprecated; pass the shape as example_input= (or positionally)",
                  DeprecationWarning, stacklevel=3)
    return input_size


def _flop_inputs(model: nn.Module, given: Any) -> tuple:
    """The inputs FLOPs are counted on: ``given`` (a shape: zeros on the model's device), or the model's default.

    Only a compress ResNet has a default (:data:`CIFAR_INPUT`); for other models a ``TypeError`` asks
    for the size, since a count at a guessed size would be silently wrong (a torchvision ResNet-18 has
    1,819,868,672 FLOPs at 224x224 and 37,641,728 at 32x32).
    """
    if given is None:
        try:
            return example_input(model)
        except TypeError as e:
            raise TypeError(f"FLOPs depend on the input size: {e}") from None
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    return example_input(given, device=device)


def count_flops(
    model: nn.Module, example_input: Any = None, *, input_size: Sequence[int] | None = None
) -> int:
    """FLOPs (fvcore multiply-adds, BN included) of one forward pass on ``example_input``.

    ``example_input`` is a shape such as ``(1, 3, 224, 224)`` (a zero tensor of it is traced), a tensor
    or a tuple of positional inputs (see :func:`example_input`). A compress ResNet defaults to one CIFAR
    image, ``(1, 3, 32, 32)``; any other model needs one (``TypeError`` otherwise). ``input_size`` is
    its old, deprecated name. The model is measured in eval mode and left in the mode it was in.
    """
    given = _renamed(example_input, input_size, "count_flops")
    return sum(flops_by_module(model, given, names=[""]).values())


def fvcore_flop_count() -> type:
    """fvcore's ``FlopCountAnalysis``, imported without the FutureWarning that fvcore's own import raises
    on current torch (its ``focal_loss`` module calls the deprecated ``torch.jit.script``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis  # lazy: fvcore's import is slow (~1 s) and only FLOP counts need it
    return FlopCountAnalysis


POOLING_OPS = tuple(f"aten::{kind}_pool{d}d" for kind in ("avg", "max", "adaptive_avg", "adaptive_max") for d in (1, 2, 3)) + (
    "aten::mean",)
"""The pooling ops compress counts at one FLOP per input element (fvcore counts only adaptive average pooling)."""

UNCOUNTED_OPS: tuple[str, ...] = ()
"""Deprecated and empty: compress counts pooling now (:data:`POOLING_OPS`)."""


def fvcore_by_module(model: nn.Module, inputs: tuple) -> dict[str, int]:
    """FLOPs per named module (``""``: the whole model) of ``model(*inputs)``, by fvcore under the compress
    convention (pooling counted), in eval mode and without gradients; every module's mode is restored."""
    FlopCountAnalysis = fvcore_flop_count()
    from fvcore.nn.jit_handles import elementwise_flop_counter  # lazy, as fvcore_flop_count (already imported there)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, inputs)
            per_input_element = elementwise_flop_counter(1, 0)  # fvcore's own rule for adaptive average pooling
            analysis.set_op_handle(**{op: per_input_element for op in POOLING_OPS})
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return {n: int(v) for n, v in analysis.by_module().items()}
    finally:
        for m, training in modes.items():
            m.training = training


def flops_by_module(
    model: nn.Module,
    example_input: Any = None,
    names: Sequence[str] | None = None,
    *,
    input_size: Sequence[int] | None = None,
) -> dict[str, int]:
    """FLOPs per named submodule (``""`` is the whole model) on ``example_input``; ``names`` picks which to return.

    The input is given as for :func:`count_flops` (a compress ResNet defaults to ``(1, 3, 32, 32)``;
    ``input_size`` is the old, deprecated name of ``example_input``).
    """
    inputs = _flop_inputs(model, _renamed(example_input, input_size, "flops_by_module"))
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
                                 f"{' '.join(str(e).split())[:200]}); give an example_input=(N, C, H, W) or a tensor "
                                 "that it takes") from e
    finally:
        for m, training in modes.items():
            m.training = training
    by_module = fvcore_by_module(model, inputs)
    if names is None:
        return dict(by_module)
    return {n: int(by_module.get(n, 0)) for n in names}


def _module_table(model: nn.Module, given: Any) -> Table:
    """The :func:`summary` table of any ``nn.Module``: one row per top-level submodule."""
    inputs = _flop_inputs(model, given)
    children = list(model.named_children())
    flops = flops_by_module(model, inputs, [n for n, _ in children] + [""])
    size = ", ".join("x".join(map(str, x.shape)) if torch.is_tensor(x) else type(x).__name__ for x in inputs)
    table = Table(title=f"{type(model).__name__}, FLOPs at {size}", title_justify="left")
    for col in ("part", "type", "params", "MFLOPs"):
        table.add_column(col, justify="right" if col in ("params", "MFLOPs") else "left",
                         min_width=10 if col == "params" else None, no_wrap=col != "type")
    for name, child in children:
        table.add_row(name, type(child).__name__, f"{count_params(child):,}", f"{flops[name] / 1e6:.2f}")
    rest = flops[""] - sum(flops[n] for n, _ in children)
    if rest:
        table.add_row("(rest)", "", "", f"{rest / 1e6:.2f}")
    table.add_section()
    table.add_row("total", "", f"{count_params(model):,}", f"{flops[''] / 1e6:.2f}")
    return table


def summary(
    model: nn.Module, example_input: Any = None, *, input_size: Sequence[int] | None = None,
    print_table: bool = True,
) -> Table:
    """A rich table of a model's params and FLOPs: for a :class:`~compress.models.ResNet`, per stage
    (width, blocks, stride, mids, kernels, SE); for any other ``nn.Module``, per top-level submodule
    (its name and type), with a ``(rest)`` row for FLOPs spent outside them.

    FLOPs are counted on ``example_input`` (one CIFAR image by default for a compress ResNet, required
    for any other model; ``input_size`` is its old, deprecated name), whose size the title states. Returns the ``rich.table.Table``; prints it too
    unless ``print_table=False``.
    """
    given = _renamed(example_input, input_size, "summary")
    if not isinstance(model, ResNet):
        table = _module_table(model, given)
        if print_table:
            Console().print(table)
        return table
    cfg = model.config
    names = ["whiten", "conv1", "bn1", "se", *[f"layer{i + 1}" for i in range(len(cfg.stages))], "linear", ""]
    inputs = _flop_inputs(model, given)
    flops = flops_by_module(model, inputs, names)
    size = ", ".join("x".join(map(str, x.shape)) for x in inputs)
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
    stem_flops = flops["conv1"] + flops["bn1"] + flops["se"]  # a stem max-pool costs no FLOPs
    table.add_row(
        "stem" + (" + max-pool" if cfg.stem_pool else ""), str(cfg.stem_width), "", str(cfg.stem_stride * (2 if cfg.stem_pool else 1)),
        "", f"{cfg.stem_kernel}x{cfg.stem_kernel}",
        str(cfg.stem_se or ""), f"{params_of(model.conv1, model.bn1, model.se):,}", mflops(stem_flops),
    )
    for i, (stage_cfg, stage) in enumerate(zip(cfg.stages, model.stages)):
        kernels = sorted({f"{a}x{b}" for a, b in (blk.kernels for blk in stage_cfg.blocks)})
        ses = {blk.se for blk in stage_cfg.blocks}
        table.add_row(
            f"layer{i + 1}", str(stage_cfg.width), str(len(stage_cfg.blocks)), str(stage_cfg.stride),
            "/".join(f"{b.mid}-{b.mid2}" if b.mid2 else str(b.mid) for b in stage_cfg.blocks), ",".join(kernels),
            "/".join(map(str, sorted(ses))) if ses != {0} else "",
            f"{params_of(stage):,}", mflops(flops[f"layer{i + 1}"]),
        )
    table.add_row("head", f"{cfg.num_classes}", "", "", "", "", "", f"{params_of(model.linear):,}", mflops(flops["linear"]))
    table.add_section()
    table.add_row("total", "", str(sum(cfg.depths)), "", "", "", "", f"{count_params(model):,}", mflops(flops[""]))
    if print_table:
        Console().print(table)
    return table
