"""Test-time augmentation: a classifier's logits averaged over mirrored and shifted copies of a batch.

Shared by :func:`compress.evaluate` and the trainer's evaluations (``TrainConfig.tta``).
"""

from __future__ import annotations

from typing import Callable

import torch

from .normalization import memory_format_of

__all__ = ["TTA_LEVELS", "tta_logits"]

#: Test-time augmentation levels (``TrainConfig.tta``), in order of cost: 1, 2 and 6 forward passes per image.
TTA_LEVELS = ("none", "mirror", "mirror_translate")


def tta_logits(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, level: str = "none") -> torch.Tensor:
    """``net``'s logits for the (normalised, float) batch ``x`` under test-time augmentation ``level``.

    ``none``: one pass. ``mirror``: the mean of the logits of each image and its mirror image.
    ``mirror_translate``: half that, plus half the mean of the same on the two copies shifted by one
    pixel (up-left and down-right, reflect-padded): 6 passes.
    """
    if level == "none":
        return net(x)
    if level not in ("mirror", "mirror_translate"):
        raise ValueError(f"unknown test-time augmentation {level!r}; known: {', '.join(TTA_LEVELS)}")

    def mirror(v: torch.Tensor) -> torch.Tensor:
        return (net(v) + net(v.flip(3))) / 2

    out = mirror(x)
    if level == "mirror_translate":
        h, w = x.shape[2], x.shape[3]
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]
        out = out / 2 + sum(mirror(v.contiguous(memory_format=memory_format_of(x))) for v in shifted) / 4
    return out
