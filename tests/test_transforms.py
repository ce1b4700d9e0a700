"""Structural transforms: counts, shapes, composition, weight carry-over, no mutation, bad input."""

import pytest
import torch
from torch import nn

import compress
from compress import add_se, insert_stage, redistribute_blocks, remove_stage, scale_width, set_kernels
from compress.transforms import compose, transform

from conftest import assert_unchanged, snapshot

# The report models of ../shared/docs/paper-specs.md, built from ResNet-18 (recipes pin the same counts).
# FLOPs count every pooling op: the final pool (4,096 on a 256 x 4 x 4 map) and 003's stem SE's (64 x 32 x 32).
REPORT_MODELS = {
    "000": (lambda m: redistribute_blocks(scale_width(m, 0.5), [4, 6, 8, 2]), 4_903_210, 367_131_136),
    "001": (
        lambda m: redistribute_blocks(
            set_kernels(scale_width(insert_stage(m, 1, 64, 2, 1), [1, 1, 1, 1, 1, 0.5]), (5, 3)), [2, 2, 1, 1, 1]
        ),
        4_662_346,
        794_950_144,
    ),
    "002b": (lambda m: remove_stage(m, 3, fold_stride=True), 2_777_674, 321_567_232),
    "003": (lambda m: add_se(redistribute_blocks(remove_stage(m, 3), [4, 4, 3]), "stem", 16), 4_697_742, 800_771_072),
    "004": (lambda m: redistribute_blocks(scale_width(remove_stage(m, 3), 0.25), [11, 11, 11]), 1_050_202, 155_382_400),
}


@pytest.mark.parametrize("name", REPORT_MODELS)
def test_report_models_exact_counts(name, r18, x):
    build, params, flops = REPORT_MODELS[name]
    snap = snapshot(r18)
    m = build(r18)
    assert compress.count_params(m) == params
    assert compress.count_flops(m) == flops
    assert m(x).shape == (2, 10)
    assert_unchanged(r18, snap)
    assert isinstance(m, compress.ResNet) and compress.ResNet(m.config).config == m.config


def test_se_in_every_block_count(r18):
    m = add_se(redistribute_blocks(remove_stage(r18, 3), [4, 4, 3]), "blocks", 16)
    assert compress.count_params(m) == 4_733_610  # paper-specs: "4,733,610 with an SE in every block"


def test_remove_stage_variants(r18, x):
    m = remove_stage(r18, -1)
    assert m.config.widths == [64, 128, 256] and m.linear.in_features == 256
    assert m(x).shape == (2, 10)
    m = remove_stage(r18, 3, fold_stride=True)
    assert m.config.strides == [1, 2, 4]
    # the final map stays 4x4, as in report 002b
    feats = m.layer3(m.layer2(m.layer1(m.bn1(m.conv1(x)))))
    assert feats.shape[-2:] == (4, 4)
    m = remove_stage(r18, 1)  # middle stage: layer3 now takes 64 channels
    assert m.config.widths == [64, 256, 512] and m.layer2[0].conv1.in_channels == 64
    assert m(x).shape == (2, 10)
    # untouched stages keep their weights; the stage after the gap keeps what still fits
    assert torch.equal(m.layer3[1].conv1.weight, r18.layer4[1].conv1.weight)
    assert torch.equal(m.layer2[0].conv2.weight, r18.layer3[0].conv2.weight)


def test_insert_stage(r18, x):
    m = insert_stage(r18, 1, 64, 2, 1)
    assert m.config.widths == [64, 64, 128, 256, 512] and m.config.depths == [2] * 5
    assert isinstance(m.layer2[0].shortcut, nn.Identity)
    assert m(x).shape == (2, 10)
    assert torch.equal(m.layer3[0].conv1.weight, r18.layer2[0].conv1.weight)
    m = insert_stage(r18, 4, 128, 1, 2)  # at the end: new classifier input
    assert m.linear.in_features == 128 and m(x).shape == (2, 10)
    assert compress.count_params(m) == 11_173_962 - 5_130 + (512 * 128 * 9 + 128 * 128 * 9 + 512 * 128 + 6 * 128) + 1_290


def test_scale_width_keeps_largest_l1_channels(r18, x):
    import copy

    m0 = copy.deepcopy(r18)
    strong = torch.randperm(512, generator=torch.Generator().manual_seed(0))[:256].sort().values
    with torch.no_grad():
        m0.layer4[0].conv1.weight[strong] *= 10  # these filters have by far the largest L1 norm
    m = scale_width(m0, 0.5)
    assert m.config.widths == [32, 64, 128, 256] and m.config.stem_width == 32
    assert m(x).shape == (2, 10)
    kept_bn = m.layer4[0].bn1.weight  # BN params are untouched by the input-side pruning
    assert torch.equal(kept_bn, m0.layer4[0].bn1.weight[strong])


def test_scale_width_per_stage_and_grow(r18, x):
    m = scale_width(r18, [1, 1, 1, 1, 0.5])
    assert m.config.widths == [64, 128, 256, 256] and m.config.stem_width == 64
    assert torch.equal(m.layer2[1].conv2.weight, r18.layer2[1].conv2.weight)
    g = scale_width(r18, 1.5)
    assert g.config.widths == [96, 192, 384, 768]
    assert torch.equal(g.layer1[0].conv1.weight[:64, :64], r18.layer1[0].conv1.weight)
    assert g(x).shape == (2, 10)


def test_set_kernels_grow_keeps_function(r18, x):
    m = set_kernels(r18, (5, 5)).eval()
    assert m.layer1[0].conv1.kernel_size == (5, 5)
    torch.testing.assert_close(m(x), r18(x), rtol=1e-4, atol=1e-4)
    per_stage = set_kernels(r18, [(5, 3), (3, 3), (3, 3), (1, 3)])
    assert per_stage.layer1[0].conv1.kernel_size == (5, 5) and per_stage.layer4[1].conv1.kernel_size == (1, 1)
    assert per_stage(x).shape == (2, 10)


def test_redistribute_blocks_keeps_leading_blocks(r18):
    m = redistribute_blocks(r18, [1, 3, 2, 2])
    assert m.config.depths == [1, 3, 2, 2]
    assert torch.equal(m.layer1[0].conv1.weight, r18.layer1[0].conv1.weight)
    assert torch.equal(m.layer2[1].conv1.weight, r18.layer2[1].conv1.weight)
    assert m.layer2[2].conv1.weight.shape == r18.layer2[1].conv1.weight.shape
    assert compress.count_params(m) == 11_173_962 - 147_968 // 2 + 2 * 128 * 128 * 9 + 2 * 256


def test_add_se(r18, x):
    m = add_se(r18, "stem", 16)
    assert m.config.stem_se == 4 and compress.count_params(m) == 11_173_962 + 580
    b = add_se(r18, "blocks", reduction=8)
    assert b.layer4[1].se.fc1.out_channels == 64 and b(x).shape == (2, 10)


def test_composition_orders_agree(r18):
    a = redistribute_blocks(scale_width(r18, 0.5), [4, 6, 8, 2])
    b = scale_width(redistribute_blocks(r18, [4, 6, 8, 2]), 0.5)
    assert a.config == b.config
    c = compose(transform("scale_width", factor=0.5), transform("redistribute_blocks", blocks=[4, 6, 8, 2]))(r18)
    assert c.config == a.config and "scale_width(factor=0.5)" in repr(compose(transform("scale_width", factor=0.5)))
    # pruning composes with surgery either way round and the counts agree
    p1 = remove_stage(compress.prune(r18, 0.5), 3)
    p2 = compress.prune(remove_stage(r18, 3), 0.5)
    assert p1.config.widths == p2.config.widths == [32, 64, 128]
    assert compress.count_params(p1) == compress.count_params(p2)
    s = add_se(set_kernels(compress.prune(r18, 0.25), (5, 3)), "stem")
    assert s.config.stem_width == 48 and s.config.stem_se == 3


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: remove_stage(m, 4), ValueError, "out of range"),
        (lambda m: remove_stage(m, -5), ValueError, "out of range"),
        (lambda m: remove_stage(remove_stage(remove_stage(remove_stage(m, 0), 0), 0), 0), ValueError, "only stage"),
        (lambda m: insert_stage(m, 6, 64, 1, 1), ValueError, "out of range"),
        (lambda m: insert_stage(m, 0, 0, 1, 1), ValueError, "width"),
        (lambda m: scale_width(m, 0.001), ValueError, "rounds to zero"),
        (lambda m: scale_width(m, -1), ValueError, "positive"),
        (lambda m: scale_width(m, [1, 1]), ValueError, "the stem, then each"),
        (lambda m: redistribute_blocks(m, [2, 2]), ValueError, "one block count per stage"),
        (lambda m: redistribute_blocks(m, [2, 0, 2, 2]), ValueError, "positive"),
        (lambda m: set_kernels(m, (4, 3)), ValueError, "odd"),
        (lambda m: add_se(m, "head"), ValueError, "'stem' or 'blocks'"),
        (lambda m: add_se(add_se(m, "stem"), "stem"), ValueError, "already"),
        (lambda m: remove_stage(m, "1"), TypeError, "int"),
    ],
)
def test_bad_input_raises_and_leaves_model(call, error, match, r18):
    snap = snapshot(r18)
    with pytest.raises(error, match=match):
        call(r18)
    assert_unchanged(r18, snap)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: remove_stage(m, 0),
        lambda m: insert_stage(m, 0, 64, 1, 1),
        lambda m: scale_width(m, 0.5),
        lambda m: redistribute_blocks(m, [1, 1, 1, 1]),
        lambda m: set_kernels(m, (5, 3)),
        lambda m: add_se(m, "stem"),
    ],
)
def test_stage_transforms_reject_non_resnets(call):
    import torchvision

    with pytest.raises(TypeError, match=r"compress ResNets \(compress.models.ResNet\), got torchvision.models.resnet.ResNet;"):
        call(torchvision.models.resnet18(num_classes=10))


def test_unknown_transform_name():
    with pytest.raises(ValueError, match="known transforms: prune"):
        transform("shrink")
