"""Input normalisation: the per-channel statistics compress knows, and uint8 images -> normalised floats.

Used by the trainer (:mod:`compress.training`), :func:`compress.evaluate`, the checkpoint importer
(:mod:`compress.models.checkpoints`) and the whitening transform; it sits below all of them.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "normalize", "memory_format_of"]

# kuangliu/pytorch-cifar's statistics (std is the well-known slightly-off one the reports used).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 images -> ``(x / 255 - mean) / std`` in ``dtype`` (keeps the memory format).

    Pass ``mean``/``std`` as tensors already on ``x``'s device in a loop: building them from Python
    lists copies host to device, which makes CUDA wait for all queued work.
    """
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return (x.to(dtype) / 255.0 - m) / s


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for a 4-d tensor stored channels-last (and not also contiguous), else ``contiguous_format``."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
