"""Evaluate a classifier on a labelled image set: accuracy, loss and per-class accuracy.

:func:`evaluate` normalises with what the model carries (see
:func:`~compress.models.input_normalization`), else with the trainer's default (kuangliu's CIFAR-10
statistics), unless ``mean``/``std`` are given. It runs in eval mode, in float32 unless ``amp`` asks
for autocast, on a copy of the model (the caller's model is not moved or changed)::

    import compress
    from compress.data import cifar10
    model = compress.models.from_checkpoint("../shared/weights/resnet20-12fca82f.th")
    result = compress.evaluate(model, cifar10("/tmp/cifar10.npz"))
    result.accuracy, result.loss, result.per_class["cat"]
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from .data import ImageData
from .devices import check_device
from .models.resnet import input_normalization
from .normalization import CIFAR10_MEAN, CIFAR10_STD, normalize
from .tta import TTA_LEVELS, tta_logits

__all__ = ["evaluate", "EvalResult"]


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured. ``accuracy`` and the per-class values are in 0..1.

    ``per_class`` maps each class name to its accuracy (``None`` for a class with no images);
    ``mean``/``std`` are the normalisation that was applied.
    """

    accuracy: float
    loss: float
    correct: int
    total: int
    per_class: dict[str, float | None]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def _split(data: Any, split: str) -> tuple[torch.Tensor, torch.Tensor, Sequence[str] | None]:
    if isinstance(data, ImageData):
        if split not in ("test", "val", "train"):
            raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if x is None:
            raise ValueError(f"the data has no {split} split (carve one with ImageData.with_val_split)")
        return x, y, data.classes
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return data[0], data[1], None
    raise TypeError(f"evaluate() takes an ImageData or an (images, labels) pair of tensors, got {type(data).__name__}")


def evaluate(
    model: nn.Module,
    data: ImageData | tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    split: Literal["test", "val", "train"] = "test",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    amp: Literal["bf16", "fp16"] | None = None,
    tta_flip: bool = False,
    tta: Literal["none", "mirror", "mirror_translate"] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Top-1 accuracy, mean cross-entropy and per-class accuracy of ``model`` on ``data``.

    ``data`` is an :class:`~compress.data.ImageData` (its ``split``, the test set by default) or an
    ``(images, labels)`` pair: uint8 NCHW images and integer labels. ``device=None`` uses CUDA when
    available. ``mean``/``std`` override the normalisation the model carries. ``amp`` evaluates under
    autocast in that dtype (default float32). ``tta`` is the test-time augmentation, as the trainer's
    ``TrainConfig.tta``: ``none``, ``mirror`` (the logits of each image and its mirror image averaged)
    or ``mirror_translate`` (6 passes); ``tta_flip=True`` is the older spelling of ``tta="mirror"`` (so
    ``amp="bf16", tta_flip=True`` measures what a time-budgeted CPU run reported). ``progress`` shows a
    rich progress bar.

    Raises ``ValueError`` for an unknown or absent device, images whose channels differ from the
    normalisation's, and a model whose outputs are not finite (no accuracy is made up from NaN logits).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"evaluate() takes an nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if not isinstance(tta_flip, bool):
        raise TypeError(f"tta_flip must be True or False, got {tta_flip!r}")
    if tta is not None and tta not in TTA_LEVELS:
        raise ValueError(f"tta must be one of {', '.join(TTA_LEVELS)}, got {tta!r}")
    if tta_flip and tta not in (None, "mirror"):
        raise ValueError(f"tta_flip=True means tta='mirror'; give one of them, not tta={tta!r} as well")
    level = tta or ("mirror" if tta_flip else "none")
    if amp not in (None, "bf16", "fp16"):
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    x, y, classes = _split(data, split)
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"images must be uint8 NCHW (as compress.data gives them), got {x.dtype} {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise ValueError(f"labels must be {x.shape[0]} integers, got {y.dtype} {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"no images to evaluate: the {split if isinstance(data, ImageData) else 'given'} split is empty")
    if mean is None:
        stats = input_normalization(model)
        if stats is None:  # the trainer's default (TrainConfig.normalize)
            stats = (CIFAR10_MEAN, CIFAR10_STD)
        mean, std = stats
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != len(std):
        raise ValueError(f"mean and std must have one value per channel each, got {len(mean)} and {len(std)}")
    if x.shape[1] != len(mean):
        raise ValueError(f"the images have {x.shape[1]} channel(s) but the normalisation has {len(mean)} "
                         f"(mean {mean}): this model takes {len(mean)}-channel images")

    dev = check_device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = copy.deepcopy(model).to(dev).eval()
    m = torch.tensor(mean, device=dev)
    s = torch.tensor(std, device=dev)
    n_classes = None
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    hits = counts = None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    bar = _bar(progress, -(-x.shape[0] // batch_size))
    try:
        with torch.inference_mode():
            for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True).long()
                with torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext():
                    xb = normalize(xb, m, s)
                    out = tta_logits(net, xb, level)
                out = out.float()
                if not bool(torch.isfinite(out).all()):
                    raise ValueError("the model's outputs are NaN or infinite (its weights may have diverged): "
                                     "no accuracy can be measured")
                if n_classes is None:
                    n_classes = out.shape[1]
                    hits = torch.zeros(n_classes, dtype=torch.int64, device=dev)
                    counts = torch.zeros(n_classes, dtype=torch.int64, device=dev)
                if int(yb.max()) >= n_classes or int(yb.min()) < 0:
                    raise ValueError(f"labels must be in 0..{n_classes - 1} (the model has {n_classes} outputs), "
                                     f"got {int(yb.min())}..{int(yb.max())}")
                loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
                right = out.argmax(1) == yb
                hits += torch.bincount(yb[right], minlength=n_classes)
                counts += torch.bincount(yb, minlength=n_classes)
                if bar is not None:
                    bar[0].advance(bar[1])
    finally:
        if bar is not None:
            bar[0].stop()
    total = int(x.shape[0])
    if total == 0:
        raise ValueError("no images to evaluate")
    names = list(classes) if classes is not None and len(classes) == n_classes else [str(i) for i in range(n_classes)]
    per_class = {
        name: (int(h) / int(c) if int(c) else None) for name, h, c in zip(names, hits.tolist(), counts.tolist())
    }
    correct = int(hits.sum())
    return EvalResult(correct / total, float(loss_sum) / total, correct, total, per_class, mean, std)


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    p = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 TextColumn("ETA"), TimeRemainingColumn(), transient=True)
    task = p.add_task("eval", total=total)
    p.start()
    return p, task
