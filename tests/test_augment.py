"""Batched uint8 augmentations: shapes, dtypes, per-image randomness, alignment with labels, mixup maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress.training.augment import (
    autoaugment, build_augment, cutout, grayscale, hflip, mixup, mixup_loss, normalize, random_crop, vflip,
)
from compress.training.config import AugmentStep


def _ids(n=60, size=8):
    """Image i is filled with 4 * (i + 1) (never 0, the padding/fill value): its id survives every step."""
    return (4 * (torch.arange(n) + 1)).to(torch.uint8)[:, None, None, None].expand(n, 3, size, size).contiguous()


def _pattern(n=32, size=8):
    """Distinct pixel values within each image (for checking crops and flips exactly)."""
    base = torch.arange(3 * size * size).reshape(3, size, size) % 251 + 1
    return (base[None] + torch.arange(n)[:, None, None, None] * 0).to(torch.uint8).contiguous()


def test_pipeline_keeps_shape_dtype_and_image_identity():
    torch.manual_seed(0)
    x = _ids()
    steps = [AugmentStep("random_crop", {"padding": 2}), AugmentStep("hflip", {"p": 0.5}),
             AugmentStep("vflip", {"p": 0.5}), AugmentStep("grayscale", {"p": 0.5}), AugmentStep("cutout", {"size": 3})]
    out = build_augment(steps)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # Every output image holds only its own id (plus zeros from padding/cutout; torchvision's luma
    # truncates v * 0.9999 to v - 1): order and labels stay aligned.
    for i, img in enumerate(out):
        v = 4 * (i + 1)
        assert set(img.unique().tolist()) <= {0, v - 1, v} and ((img == v) | (img == v - 1)).any()


def test_random_crop_is_a_shifted_window_with_varied_offsets():
    torch.manual_seed(1)
    x = _pattern()
    out = random_crop(x, padding=2)
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 5  # per-image randomness
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(random_crop(cl, 0), cl)


@pytest.mark.parametrize("fn,dim", [(hflip, 3), (vflip, 2)])
def test_flips(fn, dim):
    torch.manual_seed(2)
    x = _pattern()
    assert torch.equal(fn(x, p=0.0), x)
    assert torch.equal(fn(x, p=1.0), x.flip(dim))
    out = fn(x, p=0.5)
    flipped = torch.tensor([torch.equal(o, a.flip(dim - 1)) for o, a in zip(out, x)])
    same = torch.tensor([torch.equal(o, a) for o, a in zip(out, x)])
    assert bool((flipped | same).all()) and flipped.any() and same.any()


def test_grayscale_matches_torchvision_luma():
    from torchvision.transforms.v2 import functional as TF

    torch.manual_seed(3)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(grayscale(x, p=0.0), x)
    g = grayscale(x, p=1.0)
    assert torch.equal(g, TF.rgb_to_grayscale(x, num_output_channels=3))
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])


def test_cutout_fills_one_clipped_square():
    torch.manual_seed(4)
    x = torch.full((200, 3, 8, 8), 7, dtype=torch.uint8)
    out = cutout(x, size=4, fill=(1, 2, 3))
    hole = out[:, 0] == 1
    assert torch.equal(out[:, 1] == 2, hole) and torch.equal(out[:, 2] == 3, hole)
    assert bool(((out[:, 0] == 7) | hole).all())
    areas = hole.sum((1, 2))
    assert areas.max() == 16 and areas.min() >= 4  # clipped at borders, but the centre is inside
    for h in hole:  # the hole is a rectangle
        rows, cols = h.any(1).nonzero().flatten(), h.any(0).nonzero().flatten()
        assert h.sum() == len(rows) * len(cols)


def test_cutout_fill_is_normalisation_mean():
    mean = (0.5, 0.25, 0.0)
    fn = build_augment([AugmentStep("cutout", {"size": 32})], mean)
    out = fn(torch.full((2, 3, 8, 8), 200, dtype=torch.uint8))  # a 32 square covers all of an 8x8 image
    assert out[:, 0].eq(128).all() and out[:, 1].eq(64).all() and out[:, 2].eq(0).all()


def test_autoaugment_groups_control_randomness():
    x = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).expand(24, 3, 16, 16).contiguous()
    torch.manual_seed(5)
    per_image = autoaugment(x, group=1)
    assert per_image.shape == x.shape and per_image.dtype == torch.uint8
    assert len({tuple(img.flatten().tolist()) for img in per_image}) > 3  # images draw their own sub-policy
    one_group = autoaugment(x, group=24)
    assert all(torch.equal(img, one_group[0]) for img in one_group)  # one draw for the whole group
    torch.manual_seed(5)
    assert torch.equal(autoaugment(x, group=1), per_image)  # repeatable from the seed


def test_mixup_mixes_and_loss_is_the_weighted_sum():
    torch.manual_seed(6)
    x = torch.randn(8, 3, 4, 4)
    y = torch.randint(0, 5, (8,))
    mixed, y_a, y_b, lam = mixup(x, y, alpha=0.4)
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))
    assert torch.equal(y_a, y) and torch.equal(y_b, y.flip(0))
    logits = torch.randn(8, 5)
    by_hand = -(lam * logits.log_softmax(1)[torch.arange(8), y_a]
                + (1 - lam) * logits.log_softmax(1)[torch.arange(8), y_b]).mean()
    assert torch.allclose(mixup_loss(torch.nn.CrossEntropyLoss(), logits, y_a, y_b, lam), by_hand)


def test_normalize_matches_to_tensor_normalize():
    from torchvision.transforms import v2

    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    ref = v2.Normalize(mean, std)(x.float() / 255)
    assert torch.allclose(normalize(x, mean, std), ref, atol=1e-6)


def test_build_augment_rejects_unknown_params():
    with pytest.raises(ValueError, match="padding"):
        build_augment([AugmentStep("random_crop", {"pad": 4})])
