"""Patch whitening in front of a compress ResNet's stem: a frozen conv computed from training images.

The idea is airbench's (Keller Jordan, github.com/KellerJordan/cifar10-airbench): the network's first
layer is a ``k x k`` convolution without padding whose filters whiten the image patches, that is the
eigenvectors of the patch covariance scaled by ``1 / sqrt(eigenvalue + eps)``, together with the same
filters negated, followed by a GELU. It is computed once from the training images and never trained.

:func:`whiten_stem` adds the layer (module ``whiten``, a :class:`~compress.models.WhiteningConv`) and
records it in the config (``whiten_kernel``), so it is saved, loaded, transformed and pruned with the
rest of the model; :func:`init_whitening` (re)computes its weights from images.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence, Union

import torch
from torch import nn

from ..data import ImageData
from ..models.resnet import ResNet, input_normalization
from ..normalization import CIFAR10_MEAN, CIFAR10_STD
from ._common import rebuild, require_resnet

__all__ = ["whiten_stem", "init_whitening", "whitening_weights"]

Images = Union[torch.Tensor, ImageData]
"""Training images: a uint8 NCHW tensor (``ImageData.train_x``), or an :class:`~compress.data.ImageData`
(its training split is used)."""

_CHUNK = 256  # images per step of the covariance sum (a 32x32 RGB chunk at k=2: 3 M patch values)


def whiten_stem(
    model: ResNet,
    images: Images | None = None,
    *,
    kernel: int = 2,
    eps: float = 5e-4,
    max_images: int = 5000,
) -> ResNet:
    """A copy of ``model`` with a frozen ``kernel x kernel`` patch-whitening conv in front of its stem.

    The new layer is ``Conv2d(C, 2 * C * kernel**2, kernel, padding=0, bias=False)`` (C: the model's
    input channels; 24 output channels for RGB at ``kernel=2``), followed by a GELU. Its filters are
    the eigenvectors of the covariance of the ``kernel x kernel`` patches of ``images`` (normalised as
    the model will see them: with the model's own :func:`~compress.models.input_normalization`, else
    CIFAR-10's mean and std; the first ``max_images`` images are used), largest eigenvalue first, each
    scaled by ``1 / sqrt(eigenvalue + eps)``, then the same filters negated. The weight is an
    ``nn.Parameter`` with ``requires_grad=False``: it never trains, but it is counted by
    :func:`~compress.count_params` and its FLOPs by :func:`~compress.count_flops`. Without padding the
    feature maps shrink by ``kernel - 1`` (31x31 for 32x32 images at ``kernel=2``).

    Every other weight is copied over unchanged except the stem conv's (``conv1``): its input channels
    change from C to the whitening width, so it is freshly initialised.

    ``images=None`` builds the structure only, with placeholder weights (each patch element and its
    negation; exact parameter and FLOP counts). This is what a recipe's ``whiten_stem: {kernel: 2}``
    step does, since recipes build models without data: the weights must then be computed from the
    training images with :func:`init_whitening` before training (``compress-bench`` does this).

    ``model`` is not changed. Raises ``TypeError`` for a model that is not a compress ResNet or images
    of the wrong type or dtype, ``ValueError`` for a model that is already whitened, images of the wrong
    shape or channel count, ``kernel < 1``, ``eps <= 0`` or ``max_images < 1``.
    """
    cfg = require_resnet(model, "whiten_stem").config
    if cfg.whiten_kernel:
        raise ValueError(f"whiten_stem: the model already has a {cfg.whiten_kernel}x{cfg.whiten_kernel} whitening layer "
                         "(module 'whiten'); recompute its weights with compress.transforms.whiten.init_whitening")
    _check_kernel(kernel)
    _check_options(eps, max_images)
    x = None if images is None else _check_images(images, cfg.in_channels, kernel)
    new = rebuild(model, cfg.replace(whiten_kernel=kernel), list(range(len(cfg.stages))))
    if x is not None:
        _set_weights(new, x, eps, max_images, None)
    return new


def init_whitening(
    model: ResNet,
    images: Images,
    *,
    eps: float = 5e-4,
    max_images: int = 5000,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> ResNet:
    """A copy of the whitened ``model`` whose whitening weights are (re)computed from ``images``.

    Everything else is copied unchanged; ``model`` is not changed. The images are normalised with the
    model's own :func:`~compress.models.input_normalization` if it carries one, else with
    ``normalization`` (``(mean, std)``, e.g. the training config's ``normalize``, which the trainer
    falls back to likewise), else with CIFAR-10's mean and std. See :func:`whiten_stem` for the
    computation; use this after building a whitened model without data (a recipe's ``whiten_stem``
    step). Raises ``ValueError`` for a model without a whitening layer.
    """
    cfg = require_resnet(model, "init_whitening").config
    if model.whiten is None:
        raise ValueError("init_whitening: the model has no whitening layer; add one with compress.whiten_stem(model, images)")
    _check_options(eps, max_images)
    x = _check_images(images, cfg.in_channels, cfg.whiten_kernel)
    if normalization is not None:
        _check_normalization(normalization, cfg.in_channels)
    new = copy.deepcopy(model)
    _set_weights(new, x, eps, max_images, normalization)
    return new


def whitening_weights(
    images: torch.Tensor, kernel: int, *, eps: float = 5e-4, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """The whitening filters for uint8 NCHW ``images`` normalised by ``(mean, std)``: a float32 tensor of
    shape ``(2 * C * kernel**2, C, kernel, kernel)``, the scaled eigenvectors then their negations.

    The (centred) patch covariance is summed in float64 over chunks of images, on the images' device.
    """
    c = images.shape[1]
    d = c * kernel * kernel
    device = images.device
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, c, 1, 1)
    total = torch.zeros(d, dtype=torch.float64, device=device)
    products = torch.zeros(d, d, dtype=torch.float64, device=device)
    n = 0
    for chunk in images.split(_CHUNK):
        z = ((chunk.float().div(255) - m) / s).double()
        # one row per patch, in the (channel, row, column) order of a conv weight; Tensor.unfold makes
        # views (F.unfold's im2col is ~50x slower on a CPU)
        patches = z.unfold(2, kernel, 1).unfold(3, kernel, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, d)
        total += patches.sum(0)
        products += patches.T @ patches
        n += patches.shape[0]
    mu = total / n
    cov = products / n - torch.outer(mu, mu)
    cov = (cov + cov.T) / 2
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps).unsqueeze(1)
    filters = filters.reshape(d, c, kernel, kernel)
    return torch.cat([filters, -filters]).float()


# --- checks and the shared step -------------------------------------------------------------------

def _set_weights(model: ResNet, images: torch.Tensor, eps: float, max_images: int,
                 normalization: tuple[Sequence[float], Sequence[float]] | None) -> None:
    mean, std = input_normalization(model) or normalization or (CIFAR10_MEAN, CIFAR10_STD)
    layer: nn.Conv2d = model.whiten
    w = whitening_weights(images[:max_images], layer.kernel_size[0], eps=eps, mean=mean, std=std)
    with torch.no_grad():
        layer.weight.copy_(w.to(device=layer.weight.device, dtype=layer.weight.dtype))


def _check_kernel(kernel: int) -> None:
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1:
        raise ValueError(f"whiten_stem: kernel must be a positive integer (the patch size), got {kernel!r}")


def _check_options(eps: float, max_images: int) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"whitening: eps must be a positive number (added to each eigenvalue), got {eps!r}")
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"whitening: max_images must be a positive integer, got {max_images!r}")


def _check_images(images: Images, channels: int, kernel: int) -> torch.Tensor:
    if isinstance(images, ImageData):
        images = images.train_x
    if not torch.is_tensor(images):
        raise TypeError(f"whitening: images must be a uint8 NCHW tensor (e.g. ImageData.train_x) or an ImageData, "
                        f"got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"whitening: images must be uint8 (0..255, as compress.data gives them), got {images.dtype}")
    shape = "x".join(map(str, images.shape))
    if images.dim() != 4:
        raise ValueError(f"whitening: images must be a 4-d NCHW batch, got shape {shape}")
    if images.shape[1] != channels:
        raise ValueError(f"whitening: the images have {images.shape[1]} channels (NCHW shape {shape}) but the model "
                         f"takes {channels}")
    if images.shape[0] == 0:
        raise ValueError("whitening: no images (a batch of 0)")
    if min(images.shape[2:]) < kernel:
        raise ValueError(f"whitening: images of {images.shape[2]}x{images.shape[3]} are smaller than the "
                         f"{kernel}x{kernel} patches")
    return images


def _check_normalization(normalization: object, channels: int) -> None:
    ok = isinstance(normalization, (tuple, list)) and len(normalization) == 2 and all(
        isinstance(v, (tuple, list)) and len(v) == channels and all(isinstance(a, (int, float)) for a in v)
        for v in normalization
    )
    if not ok or not all(a > 0 for a in normalization[1]):
        raise ValueError(f"init_whitening: normalization must be (mean, std) with {channels} numbers each "
                         f"(std positive), got {normalization!r}")
