"""torchvision ResNets as compress ResNets (``from_torchvision``) and back (``to_torchvision``).

Every conversion is checked on random inputs in eval mode, with random batch-norm statistics so that
a misplaced layer would show; the transforms run on a converted ResNet-50 at a tiny input.
"""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

import compress
import compress.transforms as T
from compress.models import ResNet, ResNetConfig, from_checkpoint, from_torchvision, to_torchvision

TOL = dict(atol=1e-4, rtol=1e-4)


def _randomised(name: str, cifar: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10)
    if cifar:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def r50() -> ResNet:
    return from_torchvision(_randomised("resnet50"))


def _same(a: nn.Module, b: nn.Module, shape: tuple[int, ...] = (2, 3, 64, 64)) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), **TOL)


@pytest.mark.parametrize("name,cifar", [("resnet18", False), ("resnet18", True), ("resnet34", False),
                                        ("resnet50", False), ("resnext50_32x4d", False), ("wide_resnet50_2", True)])
def test_from_torchvision_computes_the_same_outputs(name: str, cifar: bool) -> None:
    tv = _randomised(name, cifar)
    before = {k: v.clone() for k, v in tv.state_dict().items()}
    ours = from_torchvision(tv)
    assert isinstance(ours, ResNet)
    _same(tv, ours, (2, 3, 32, 32) if cifar else (2, 3, 64, 64))
    assert compress.count_params(ours) == compress.count_params(tv)
    assert compress.count_flops(ours, (1, 3, 64, 64)) == compress.count_flops(tv, (1, 3, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in tv.state_dict().items())  # the input is untouched
    back = to_torchvision(ours)
    assert isinstance(back, torchvision.models.ResNet)
    _same(tv, back)


def test_config_fields_round_trip_and_default_dicts_are_unchanged(r50: ResNet, tmp_path) -> None:
    cfg = r50.config
    assert (cfg.stem_kernel, cfg.stem_stride, cfg.stem_pool) == (7, 2, True)
    assert cfg.stages[0].blocks[0].mid2 == 64 and cfg.stages[0].width == 256
    assert ResNetConfig.from_dict(cfg.to_dict()) == cfg
    plain = compress.resnet18().config.to_dict()
    assert not {"stem_stride", "stem_pool"} & set(plain)
    assert not {"mid2", "groups"} & set(plain["stages"][0]["blocks"][0])
    x = from_torchvision(_randomised("resnext50_32x4d"))
    assert x.config.stages[0].blocks[0].groups == 32
    path = compress.save(x, os.path.join(tmp_path, "x.pt"), example_input=(1, 3, 32, 32))
    back = compress.load(path)
    assert back.config == x.config
    _same(x, back)


def test_bad_configs_say_so() -> None:
    with pytest.raises(ValueError, match="groups > 1 need a bottleneck"):
        compress.models.BlockConfig(64, groups=2)
    with pytest.raises(ValueError, match="multiples of its 32 groups"):
        compress.models.BlockConfig(100, (1, 3), mid2=128, groups=32)
    with pytest.raises(TypeError, match="takes a torchvision ResNet"):
        from_torchvision(compress.resnet18())
    with pytest.raises(ValueError, match="no place for squeeze-and-excitation"):
        to_torchvision(T.add_se(compress.resnet18()))


TRANSFORMS = {
    "remove_stage": lambda m: T.remove_stage(m, -1),
    "insert_stage": lambda m: T.insert_stage(m, 1, 64, 1),
    "scale_width": lambda m: T.scale_width(m, 0.5),
    "redistribute_blocks": lambda m: T.redistribute_blocks(m, [1, 1, 2, 1]),
    "set_kernels": lambda m: T.set_kernels(m, (1, 5)),
    "add_se": lambda m: T.add_se(m),
    "prune": lambda m: compress.prune(m, 0.3),
    "prune_flops": lambda m: compress.prune(m, target_flops=compress.count_flops(m) // 2),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transforms_on_a_converted_resnet50(r50: ResNet, name: str) -> None:
    new = TRANSFORMS[name](r50)
    assert isinstance(new, ResNet)
    assert new.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    fresh = ResNet(new.config)
    assert compress.count_params(new) == compress.count_params(fresh)
    assert [tuple(p.shape) for p in new.parameters()] == [tuple(p.shape) for p in fresh.parameters()]


def test_pruned_resnet50_goes_back_to_torchvision(r50: ResNet) -> None:
    pruned = compress.prune(r50, 0.3)
    back = to_torchvision(pruned)
    _same(pruned, back)
    assert compress.summary(pruned, print_table=False).row_count > 4


@pytest.mark.parametrize("name,cifar", [("resnet50", False), ("resnet18", True)])
def test_from_checkpoint_reads_a_torchvision_state_dict(name: str, cifar: bool) -> None:
    tv = _randomised(name, cifar)
    model, meta = from_checkpoint(tv.state_dict(), with_metadata=True)
    assert meta["layout"] == "torchvision"
    assert model.config.input_mean == compress.normalization.IMAGENET_MEAN
    _same(tv, model, (2, 3, 32, 32))


def test_a_converted_resnet_exports(tmp_path) -> None:
    model = T.remove_stage(from_torchvision(_randomised("resnet18", cifar=True)), -1)
    result = compress.export(model, os.path.join(tmp_path, "r.onnx"))
    assert os.path.getsize(result.path) > 0


def test_a_transform_given_a_torchvision_resnet_points_to_the_converter() -> None:
    with pytest.raises(TypeError, match=r"compress\.models\.from_torchvision\(model\)"):
        T.remove_stage(torchvision.models.resnet18(), -1)
