"""One FLOP convention: what ``count_flops`` counts is what ``prune(target_flops=...)`` predicts.

Pooling of every kind is counted, one FLOP per input element (fvcore alone counts adaptive average
pooling but not ``mean`` or ``avg_pool2d``), so a compress ResNet and the torchvision model of the same
architecture count alike, and pruning a
torchvision model to a FLOP or parameter target lands under it, with the cost model's prediction
equal to the count (``prune`` raises where they differ). The walk over torchvision models prunes a
few quick ones by default; the rest are ``slow`` (``-m slow``).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import compress
from compress.models import resnet18

SHAPE = (1, 3, 64, 64)
QUICK = ["resnet18", "mobilenet_v2", "resnet50"]
SLOW = ["resnext50_32x4d", "efficientnet_b0", "regnet_y_400mf", "mobilenet_v3_small", "wide_resnet50_2", "vgg11_bn"]


def cifar_resnet18() -> nn.Module:
    """A torchvision ResNet-18 adapted to CIFAR as the issue did: 3x3 stem, no max-pool, 10 classes."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def test_compress_and_torchvision_resnet18_count_alike() -> None:
    tv, ours = cifar_resnet18(), resnet18()
    assert compress.count_flops(tv, (1, 3, 32, 32)) == compress.count_flops(ours) == 556_659_712
    assert compress.count_params(tv) == compress.count_params(ours) == 11_173_962


def test_pooling_of_every_kind_counts_its_input_elements() -> None:
    pool = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.MaxPool1d(2))
    assert compress.count_flops(pool, (1, 3, 8, 8)) == 3 * 8 * 8 * 8 + 8 * 8 * 8 + 8  # conv, average pool, max pool

    class MeanHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3))

    assert compress.count_flops(MeanHead(), (1, 3, 8, 8)) == 3 * 8 * 8 * 8 + 8 * 8 * 8  # a pool written as mean


class PooledInForward(nn.Module):
    """Pooling in no module of its own (``mean`` and ``adaptive_avg_pool2d`` in forward), twice per image."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 + 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(a))
        return self.fc(torch.cat([a.mean((2, 3)), torch.nn.functional.adaptive_avg_pool2d(b, 1).flatten(1)], 1))


@pytest.mark.parametrize("make", [PooledInForward, lambda: compress.add_se(resnet18(), "blocks")], ids=["forward", "se"])
def test_the_cost_model_predicts_pooling_exactly(make, monkeypatch) -> None:
    from compress.transforms import _cost, _depgraph as dg

    model = make()
    shape = (1, 3, 32, 32)
    flops = compress.count_flops(model, shape)
    predicted: list = []
    original = _cost.CostModel.predict

    def spy(self, removed):
        predicted.append(original(self, removed))
        return predicted[-1]

    monkeypatch.setattr(_cost.CostModel, "predict", spy)
    pruned = compress.prune(model, target_flops=flops * 6 // 10, input_size=shape)  # raises if measured != predicted
    assert predicted and None not in predicted  # every plan was predicted by the cost model, none measured
    assert 0.5 * flops < compress.count_flops(pruned, shape) <= flops * 6 // 10
    pools = dg.pooling_costs(dg.trace(model.eval(), torch.zeros(shape)).graph)
    assert len(pools) == (2 if isinstance(model, PooledInForward) else 1 + 8)  # both heads; 8 SEs and the head


def test_issue_example_prunes_to_half_the_flops() -> None:
    tv = cifar_resnet18()
    flops = compress.count_flops(tv, (1, 3, 32, 32))
    pruned = compress.prune(tv, target_flops=flops // 2)  # raised "prune() bug: ... predicted" before
    assert 0.45 * flops < compress.count_flops(pruned, (1, 3, 32, 32)) <= flops // 2


def _walk(name: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10).eval()
    flops, params = compress.count_flops(model, SHAPE), compress.count_params(model)
    by_flops = compress.prune(model, target_flops=flops // 2, input_size=SHAPE)
    assert 0.4 * flops < compress.count_flops(by_flops, SHAPE) <= flops // 2
    by_params = compress.prune(model, target_params=params // 2, input_size=SHAPE)
    assert 0.4 * params < compress.count_params(by_params) <= params // 2
    assert by_params.eval()(torch.randn(SHAPE)).shape == (1, 10)


@pytest.mark.parametrize("name", QUICK)
def test_torchvision_models_prune_to_a_budget(name: str) -> None:
    _walk(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_torchvision_models_prune_to_a_budget_slow(name: str) -> None:
    _walk(name)


@pytest.mark.parametrize("what", ["flops", "params"])
def test_a_budget_at_or_above_the_size_says_so(what: str) -> None:
    model = torchvision.models.mobilenet_v2(num_classes=10)
    size = compress.count_flops(model, SHAPE) if what == "flops" else compress.count_params(model)
    with pytest.warns(UserWarning, match=f"target_{what}=.* is at or above the model's .*nothing was pruned"):
        same = compress.prune(model, **{f"target_{what}": size}, input_size=SHAPE)
    assert compress.count_params(same) == compress.count_params(model)
    with pytest.warns(UserWarning, match="nothing was pruned"):
        compress.prune(model, **{f"target_{what}": size + 1}, input_size=SHAPE, mode="sequential")


def test_summary_of_any_module() -> None:
    model = torchvision.models.mobilenet_v2(num_classes=10)
    table = compress.summary(model, SHAPE, print_table=False)
    parts = list(table.columns[0].cells)
    assert parts[:3] == ["features", "classifier", "total"] or parts[:2] == ["features", "classifier"]
    params = [int(c.replace(",", "")) for c in table.columns[2].cells if c]
    assert params[-1] == compress.count_params(model) == sum(params[:-1])
    mflops = float(list(table.columns[3].cells)[-1])
    assert mflops == pytest.approx(compress.count_flops(model, SHAPE) / 1e6, abs=0.01)
    with pytest.raises(TypeError, match="FLOPs depend on the input size"):
        compress.summary(model, print_table=False)
