"""compress.prune: channel counts, patterns, modes, importance criteria, budgets, bad input."""

import pytest
import torch
import torchvision
from torch import nn

import compress
from compress import prune
from compress.transforms import prunable_layers

from conftest import assert_unchanged, snapshot


def test_prune_half_every_conv_has_expected_channels(r18, x):
    snap = snapshot(r18)
    m = prune(r18, 0.5)
    assert_unchanged(r18, snap)
    assert isinstance(m, compress.ResNet) and m(x).shape == (2, 10)
    convs = {n: c for n, c in r18.named_modules() if isinstance(c, nn.Conv2d)}
    pruned = dict(m.named_modules())
    for name, conv in convs.items():
        new = pruned[name]
        assert new.out_channels == conv.out_channels // 2, name
        expected_in = conv.in_channels if name == "conv1" else conv.in_channels // 2
        assert new.in_channels == expected_in, name
        assert new.weight.shape == (new.out_channels, new.in_channels, *conv.kernel_size)
    assert m.linear.in_features == 256 and m.linear.out_features == 10
    assert m.config.widths == [32, 64, 128, 256]
    assert compress.count_params(compress.ResNet(m.config)) == compress.count_params(m)


def test_patterns_and_block_indices(r18):
    m = prune(r18, {"layer4.*.conv1": 0.5})
    assert [b.mid for b in m.config.stages[3].blocks] == [256, 256]
    assert m.config.widths == [64, 128, 256, 512]
    m = prune(r18, {"layer2": 0.25})  # a name covers the modules inside it
    assert m.config.widths[1] == 96 and [b.mid for b in m.config.stages[1].blocks] == [96, 96]
    m = prune(r18, {5: 0.5})  # 6th block = layer3.1: its convs, not the coupled residual stream
    assert m.config.stages[2].blocks[1].mid == 128
    # later keys override earlier ones
    m = prune(r18, {"*": 0.5, "layer4.1.conv1": 0.0})
    assert m.config.stages[3].blocks[1].mid == 512 and m.config.stages[3].blocks[0].mid == 256


def test_sequential_mode_compounds_like_report_002a(r18):
    ratios = {0: 0.1, 1: 0.1, 2: 0.2, 3: 0.2, 4: 0.2, 5: 0.2, 6: 0.3, 7: 0.3}
    m = prune(r18, ratios, mode="sequential")
    assert compress.count_params(m) == 4_493_525
    assert m.config.stem_width == 53 and m.config.widths == [53, 83, 164, 252]
    assert [s.blocks[0].mid for s in m.config.stages] == [58, 103, 205, 359]
    one_shot = prune(r18, ratios)  # each group pruned once: no compounding, a bigger model
    assert compress.count_params(one_shot) > 5_900_000


def test_round_to(r18):
    m = prune(r18, 0.3, round_to=8)
    widths = [m.config.stem_width, *m.config.widths] + [b.mid for s in m.config.stages for b in s.blocks]
    assert all(w % 8 == 0 for w in widths), widths


def test_ignore_keeps_layers_and_their_coupled_group(r18):
    m = prune(r18, 0.5, ignore=["layer1"])
    assert m.config.stem_width == 64 and m.config.widths[0] == 64  # coupled to layer1 through identities
    assert m.config.widths[1:] == [64, 128, 256]


def _toy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor"])
def test_importance_criteria_drop_the_weakest_channel(importance):
    net = _toy()
    with torch.no_grad():
        net[0].weight[2] *= 1e-3  # channel 2 is nearly dead: smallest norm, tiny gradients
        net[1].weight[2] = 1e-3   # and a tiny BN scale
        net[3].weight[:, 2] *= 1e-3
    data = (torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,)))
    m = prune(net, {"0": 0.25}, importance=importance, data=data, input_size=(1, 3, 8, 8))
    assert m[0].out_channels == 3
    kept = m[1].weight.detach()
    assert torch.equal(kept, net[1].weight.detach()[[0, 1, 3]])


def test_random_importance_runs_to_expected_width(r18):
    m = prune(r18, {"layer3.0.conv1": 0.5}, importance="random")
    assert m.config.stages[2].blocks[0].mid == 128


def test_budget_mode_params(r18):
    m = prune(r18, target_params=5_000_000)
    n = compress.count_params(m)
    assert 4_900_000 < n <= 5_000_000
    with pytest.warns(UserWarning, match="at or above the model's 11,173,962 params: nothing was pruned"):
        assert compress.count_params(prune(r18, target_params=20_000_000)) == 11_173_962


def test_budget_mode_flops():
    small = compress.models.ResNet(compress.ResNetConfig.uniform((16, 32), (1, 1), (1, 2)))
    full = compress.count_flops(small)
    m = prune(small, target_flops=full // 2)
    assert full // 2 * 0.85 < compress.count_flops(m) <= full // 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(ratios=1.5), ValueError, r"outside \[0, 1\)"),
        (dict(ratios=-0.1), ValueError, r"outside \[0, 1\)"),
        (dict(ratios="half"), TypeError, "float or a mapping"),
        (dict(ratios={"layer9.*": 0.5}), ValueError, "matches no prunable layer"),
        (dict(ratios={"linear": 0.5}), ValueError, "linear cannot be pruned: its channels are the model output"),
        (dict(ratios={8: 0.5}), ValueError, "8 residual blocks"),
        (dict(ratios={"layer1.0.conv2": 0.5, "layer1.1.conv2": 0.25}), ValueError, "different ratios"),
        (dict(ratios=0.5, importance="magic"), ValueError, "choose one of l1"),
        (dict(ratios=0.5, importance="taylor"), ValueError, "data"),
        (dict(ratios=0.5, mode="greedy"), ValueError, "one-shot"),
        (dict(ratios=0.5, round_to=0), ValueError, "round_to"),
        (dict(), TypeError, "needs ratios"),
        (dict(ratios=0.5, target_params=10), TypeError, "either ratios or a budget"),
        (dict(target_params=1000), ValueError, "no ratio reaches 1,000 params"),
        (dict(ratios={"conv1": 0.5}, ignore=["layer1"]), ValueError, "conv1 cannot be pruned"),
    ],
)
def test_bad_input(kwargs, error, match, r18):
    snap = snapshot(r18)
    with pytest.raises(error, match=match):
        prune(r18, **kwargs)
    assert_unchanged(r18, snap)


def test_prunable_layers_excludes_classifier(r18):
    names = list(prunable_layers(r18))
    assert names[0] == "conv1" and "linear" not in names and "layer4.1.conv2" in names


@pytest.mark.parametrize("factory, out_dim", [(torchvision.models.resnet18, 512), (torchvision.models.resnet50, 2048)])
def test_prune_torchvision_resnets(factory, out_dim, x, tmp_path):
    torch.manual_seed(0)
    net = factory(num_classes=10).eval()
    snap = snapshot(net)
    m = prune(net, 0.5)
    assert_unchanged(net, snap)
    assert m(x).shape == (2, 10)
    assert m.fc.in_features == out_dim // 2 and m.fc.out_features == 10
    assert m.layer2[0].conv1.out_channels == net.layer2[0].conv1.out_channels // 2
    # load rebuilds it from the torchvision classes the file names, or from a template
    compress.save(m, tmp_path / "tv.pt")
    torch.testing.assert_close(compress.load(tmp_path / "tv.pt")(x), m.eval()(x))
    back = compress.load(tmp_path / "tv.pt", model=factory(num_classes=10))
    torch.testing.assert_close(back(x), m.eval()(x))


def test_prune_inside_a_wrapper_keeps_the_inner_config_true(tmp_path):
    """nn.DataParallel (or any `.module` wrapper) around a compress ResNet: the inner config describes the
    pruned widths, so summary, save/load and later surgery see the pruned model."""
    torch.manual_seed(0)
    inner = compress.models.ResNet(compress.ResNetConfig.uniform((16, 32, 64, 128), (1, 1, 1, 1), (1, 2, 2, 2)))
    pruned = compress.prune(nn.DataParallel(inner), {"module.layer3.*": 0.5}).eval()
    assert pruned.module.config.widths == [16, 32, 32, 128] == pruned.module.config_from_modules().widths
    assert inner.config.widths == [16, 32, 64, 128]  # the input is untouched
    x = torch.randn(2, 3, 32, 32)
    back = compress.load(compress.save(pruned.module, tmp_path / "inner.pt"))
    assert torch.equal(back(x), pruned(x))
    back = compress.load(compress.save(pruned, tmp_path / "wrapped.pt"), model=nn.DataParallel(inner))
    assert back.module.config == pruned.module.config and torch.equal(back(x), pruned(x))
    # surgery after pruning carries the pruned weights over (a stale config silently re-initialised them)
    cut = compress.remove_stage(pruned.module, 3)
    assert torch.equal(cut.layer3[0].conv1.weight, pruned.module.layer3[0].conv1.weight)
