import pytest
import torch

import compress
from compress.models import BlockConfig, ResNet, ResNetConfig, StageConfig


def test_resnet18_baseline_count_and_flops(r18, x):
    assert compress.count_params(r18) == 11_173_962
    assert compress.count_flops(r18) == 556_659_712  # paper-specs: 556.65 M, BN included, less the final pool's 8,192
    assert r18(x).shape == (2, 10)


def test_count_flops_leaves_mode_alone(r18):
    r18.train()
    try:
        compress.count_flops(r18)
        assert r18.training
    finally:
        r18.eval()


def test_count_flops_needs_the_input_size_of_other_models(r18):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False))
    with pytest.raises(TypeError, match=r"pass example_input=\(N, C, H, W\) or a tensor for a Sequential"):
        compress.count_flops(net)
    # 4 output channels x 27 multiply-adds per output pixel
    assert compress.count_flops(net, (1, 3, 10, 10)) == 4 * 27 * 8 * 8
    assert compress.count_flops(net, (1, 3, 34, 34)) == 4 * 27 * 32 * 32
    assert compress.count_flops(net, example_input=torch.randn(2, 3, 10, 10)) == 2 * 4 * 27 * 8 * 8
    assert 3.99 * compress.count_flops(r18) < compress.count_flops(r18, (1, 3, 64, 64)) < 4 * compress.count_flops(r18)
    with pytest.raises(ValueError, match="positive ints"):
        compress.count_flops(net, (1, 3, 0, 10))
    with pytest.raises(TypeError, match="not both"):
        compress.count_flops(net, input_size=(1, 3, 10, 10), example_input=torch.randn(1, 3, 10, 10))
    with pytest.warns(DeprecationWarning, match="example_input"):  # the old name still counts the same
        assert compress.count_flops(net, input_size=(1, 3, 10, 10)) == 4 * 27 * 8 * 8


def test_example_input_is_one_helper_for_shapes_tensors_and_models(r18):
    from compress.metrics import example_input

    (zeros,) = example_input((2, 3, 8, 8))
    assert zeros.shape == (2, 3, 8, 8) and not zeros.any()
    a, b = example_input((1, 3, 4, 4), seed=0), example_input((1, 3, 4, 4), seed=0)
    assert torch.equal(a[0], b[0]) and a[0].abs().sum() > 0  # seeded random values, repeatable
    state = torch.get_rng_state()
    example_input((1, 3, 4, 4), seed=1)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is not touched
    x = torch.ones(1, 3, 4, 4)
    assert example_input(x)[0] is x and example_input((x, 3)) == (x, 3)
    assert example_input(r18)[0].shape == (1, 3, 32, 32)
    with pytest.raises(TypeError, match="for a Sequential"):
        example_input(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))
    for bad in (32, (1, 3, 0, 4), (1, 3, 4.0, 4), ()):
        with pytest.raises(ValueError, match="example_input must be a shape"):
            example_input(bad)


def test_count_flops_keeps_each_layers_mode(r18):
    r18.train()
    r18.bn1.eval()
    try:
        compress.count_flops(r18)
        assert r18.training and not r18.bn1.training and r18.layer1.training
    finally:
        r18.eval()


def test_config_round_trips_through_dict(r18):
    cfg = r18.config
    assert ResNetConfig.from_dict(cfg.to_dict()) == cfg
    assert ResNet(cfg).config == cfg
    assert r18.config_from_modules().replace(stages=tuple(
        s.__class__(s.width, s.stride, s.blocks, None) for s in r18.config_from_modules().stages
    )) == cfg


def test_config_rejects_missing_projection():
    with pytest.raises(ValueError, match="projection"):
        ResNetConfig(stages=(StageConfig(32, 2, (BlockConfig(32),), projection=False),), stem_width=16)


def test_summary_table_rows(r18):
    table = compress.summary(r18, print_table=False)
    assert table.title.endswith("FLOPs at 1x3x32x32")
    parts = list(table.columns[0].cells)
    assert parts == ["stem", "layer1", "layer2", "layer3", "layer4", "head", "total"]
    assert list(table.columns[-2].cells)[-1] == "11,173,962"


def test_summary_rejects_other_models():
    with pytest.raises(TypeError, match="ResNet"):
        compress.summary(torch.nn.Linear(2, 2))


def test_counting_flops_prints_no_warning_of_fvcore():
    # fvcore's import calls the deprecated torch.jit.script: a new user's first command must not show it
    import subprocess
    import sys

    code = "import compress; print(compress.count_flops(compress.resnet18()))"
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "556659712" and "FutureWarning" not in done.stderr
