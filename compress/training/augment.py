"""Batched augmentations on uint8 NCHW tensors, on whatever device the batch lives on.

Each function takes a batch and returns a new batch of the same shape and dtype; every image gets its
own random draw (from the global torch RNG of the batch's device, so ``torch.manual_seed`` makes them
repeatable and the trainer's checkpoints can restore them). :func:`build_augment` turns a recipe's
``augment:`` list (:class:`~compress.training.config.AugmentStep`) into one callable.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..normalization import memory_format_of, normalize  # noqa: F401 - normalize re-exported (its old home)
from ..tta import tta_logits  # noqa: F401 - re-exported (its old home)
from .config import AUGMENT_PARAMS, AugmentStep, check_step

__all__ = [
    "random_crop",
    "translate",
    "hflip",
    "alternating_flip",
    "vflip",
    "grayscale",
    "cutout",
    "autoaugment",
    "mixup",
    "normalize",
    "build_augment",
    "tta_logits",
]


def _coin(n: int, p: float, device: torch.device) -> torch.Tensor:
    """A bool per image, True with probability ``p``."""
    return torch.rand(n, device=device) < p


def random_crop(x: torch.Tensor, padding: int = 4, fill: int = 0) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the original size at a random offset per image.

    Same distribution as ``torchvision.transforms.RandomCrop(size, padding)``; vectorised as one gather.
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4, value=fill)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # n, h, 1
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # n, 1, w
    idx = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice move to the front: result is n, h, w, c.
    return padded[idx, :, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=memory_format_of(x))


def translate(x: torch.Tensor, pixels: int = 2) -> torch.Tensor:
    """Shift each image by a random (dy, dx) in ``[-pixels, pixels]``, filling the border by reflection.

    The same as reflect-padding by ``pixels`` and cropping back at a random offset (airbench's
    translation), done as one gather without materialising the padded batch.
    """
    if pixels <= 0:
        return x
    n, c, h, w = x.shape
    if pixels >= min(h, w):
        raise ValueError(f"translate: {pixels} pixels is too far for {h}x{w} images (reflection needs < {min(h, w)})")
    dy = torch.randint(-pixels, pixels + 1, (n, 1), device=x.device)
    dx = torch.randint(-pixels, pixels + 1, (n, 1), device=x.device)
    rows = _reflect(dy + torch.arange(h, device=x.device), h)[:, :, None]  # n, h, 1
    cols = _reflect(dx + torch.arange(w, device=x.device), w)[:, None, :]  # n, 1, w
    idx = torch.arange(n, device=x.device)[:, None, None]
    return x[idx, :, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=memory_format_of(x))


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside ``0..size-1`` mirrored at the border without repeating it (as ``F.pad(mode="reflect")``)."""
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    return torch.where(_coin(x.shape[0], p, x.device)[:, None, None, None], x.flip(3), x)


def alternating_flip(x: torch.Tensor, index: torch.Tensor, epoch: int, seed: int = 0) -> torch.Tensor:
    """Mirror each image in every other epoch: image ``index[i]`` is flipped in ``epoch`` when its own
    random phase bit (a hash of its index and ``seed``) differs from the epoch's parity.

    Each image is seen mirrored exactly half the time and never the same way twice in a row, which
    covers both orientations in fewer epochs than a fair coin per image (airbench's derandomised flip).
    """
    flip = flip_phase(index, seed) ^ (epoch % 2 == 1)
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


def flip_phase(index: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The phase bit of each training image index (True: flipped in even epochs), fixed by ``seed``."""
    h = (index.to(torch.int64) * 2654435761 + (seed % 2**32) * 40503) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 1).bool()


def vflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Flip each image upside-down with probability ``p``."""
    return torch.where(_coin(x.shape[0], p, x.device)[:, None, None, None], x.flip(2), x)


def grayscale(x: torch.Tensor, p: float = 0.1) -> torch.Tensor:
    """Replace each image by its luma (ITU-R 601-2, as PIL and torchvision) in all channels, with probability ``p``."""
    from torchvision.transforms.v2 import functional as TF  # lazy: torchvision's import is slow, and only this step needs it

    gray = TF.rgb_to_grayscale(x, num_output_channels=x.shape[1])
    return torch.where(_coin(x.shape[0], p, x.device)[:, None, None, None], gray, x)


def cutout(x: torch.Tensor, size: int = 16, fill: Sequence[int] | int = 0) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): a ``size`` square at a uniformly random centre, clipped at the borders.

    ``fill`` is a value per channel; the trainer passes the normalisation mean so that the hole is 0
    after normalisation, as in the paper's code (which cut out of normalised tensors).
    """
    n, c, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    lo = size // 2
    hole = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)
    fills = [int(fill)] * c if isinstance(fill, (int, float)) else [int(v) for v in fill]
    out = x.clone()
    for ch, value in enumerate(fills):  # Python scalars: no host-to-device copy, no sync
        out[:, ch].masked_fill_(hole, value)
    return out


def autoaugment(x: torch.Tensor, group: int = 1) -> torch.Tensor:
    """AutoAugment with the CIFAR-10 policy (``torchvision.transforms.v2.AutoAugment``).

    v2's AutoAugment draws one sub-policy per call for the whole tensor, so the batch is cut into
    groups of ``group`` consecutive images (the batch is already shuffled) and each group gets its own
    draw. ``group=1`` is exactly the per-image randomness of the PIL pipeline; larger groups launch
    fewer kernels (faster on a GPU) at the cost of images sharing a sub-policy within a group.
    """
    from torchvision.transforms import v2  # lazy: torchvision's import is slow, and only this step needs it

    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    return torch.cat([aa(chunk) for chunk in x.split(max(1, int(group)))]).contiguous(memory_format=memory_format_of(x))


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): ``lam ~ Beta(alpha, alpha)`` once per batch, each image mixed with the reversed batch.

    Returns ``(lam * x + (1 - lam) * x.flip(0), y, y.flip(0), lam)``; the loss is
    ``lam * CE(out, y) + (1 - lam) * CE(out, y.flip(0))`` (see :func:`mixup_loss`). ``x`` is float.
    ``lam`` is drawn on the CPU so it is the same on every device.
    """
    lam = float(torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample())
    return x * lam + x.flip(0) * (1.0 - lam), y, y.flip(0), lam


def mixup_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    out: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float,
) -> torch.Tensor:
    """``lam * criterion(out, y_a) + (1 - lam) * criterion(out, y_b)``."""
    return lam * criterion(out, y_a) + (1.0 - lam) * criterion(out, y_b)


_STEPS: dict[str, Callable[..., torch.Tensor]] = {
    "random_crop": random_crop,
    "translate": translate,
    "hflip": hflip,
    "alternating_flip": alternating_flip,
    "vflip": vflip,
    "grayscale": grayscale,
    "cutout": cutout,
    "autoaugment": autoaugment,
}
assert set(_STEPS) == set(AUGMENT_PARAMS), "augment.py and config.AUGMENT_PARAMS must list the same augmentations"




def build_augment(
    steps: Sequence[AugmentStep], mean: Sequence[float] = (0.0, 0.0, 0.0), seed: int = 0
) -> Callable[..., torch.Tensor]:
    """One function ``apply(batch, index=None, epoch=0)`` applying ``steps`` in order to a uint8 batch.

    ``index`` holds the batch's positions in the training set and ``epoch`` the 0-based epoch; the
    steps that depend on them (alternating_flip, with ``seed``) need them. Unknown names or params
    raise ValueError. ``mean`` (the normalisation mean, in [0, 1]) sets cutout's fill so the hole is 0
    after normalising.
    """
    calls: list[tuple[Callable[..., torch.Tensor], dict]] = []
    for step in steps:
        check_step(step.name, step.params)
        fn = _STEPS[step.name]
        kwargs = dict(step.params)
        if step.name == "cutout":
            kwargs["fill"] = [round(m * 255) for m in mean]
        calls.append((fn, kwargs))

    def apply(x: torch.Tensor, index: torch.Tensor | None = None, epoch: int = 0) -> torch.Tensor:
        for fn, kwargs in calls:
            if fn is alternating_flip:
                if index is None:
                    raise ValueError("alternating_flip needs the batch's training-set indices (index=)")
                x = fn(x, index, epoch, seed)
            else:
                x = fn(x, **kwargs)
        return x

    return apply
