"""compress.models.from_checkpoint: each layout imports to the same function as an independent reference
network, what cannot be represented is refused by name, files are read safely; the shared weights import."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress
from compress import weights as published
from compress.models import CheckpointError, ResNet, ZeroPadShortcut, from_checkpoint

from conftest import SHARED_WEIGHTS, needs_shared


# --- reference networks, written from the layouts' descriptions (not compress code) ---------------------
class RefBlock(nn.Module):
    """Post-activation basic block; shortcut 'A' (zero padding), 'B' (1x1 conv + BN) or identity."""

    def __init__(self, cin: int, cout: int, stride: int, option: str, k: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, k, 1, k // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.option, self.pad = None, cout // 4
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.option = option
            if option == "B":
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.option == "A":
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        else:
            short = self.shortcut(x)
        return F.relu(out + short)


class RefResNet(nn.Module):
    """Stem conv3x3 + BN + ReLU, stages (first stride 1, then 2), global average pool, linear."""

    def __init__(self, widths, depths, option: str, stem: int, names: str = "layer", k: int = 3, se: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.se = None
        if se:
            self.seblock = nn.Module()
            self.seblock.conv1 = nn.Conv2d(stem, max(1, stem // 16), 1)
            self.seblock.conv2 = nn.Conv2d(max(1, stem // 16), stem, 1)
        stages, cin = [], stem
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [RefBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1, option, k) for j in range(d)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.names = names
        if names == "layer":
            for i, s in enumerate(stages):
                self.add_module(f"layer{i + 1}", s)
        else:
            self.residual_layers = nn.ModuleList(stages)
        self.stages = stages
        self.linear = nn.Linear(cin, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if hasattr(self, "seblock"):
            s = torch.sigmoid(self.seblock.conv2(F.relu(self.seblock.conv1(F.adaptive_avg_pool2d(out, 1)))))
            out = out * s
        for s in self.stages:
            out = s(out)
        out = F.avg_pool2d(out, out.shape[-1]).flatten(1)
        return self.linear(out)


def _randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def _same_function(ref: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        a, b = ref.eval()(x), model.eval()(x)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.fixture
def xs():
    torch.manual_seed(3)
    return torch.randn(4, 3, 32, 32)


# --- the three layouts --------------------------------------------------------------------------------
def test_option_a_is_exact_and_prunable(xs, tmp_path):
    torch.manual_seed(0)
    ref = _randomize(RefResNet((8, 16, 32), (2, 2, 2), "A", 8))
    path = tmp_path / "r.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "best_prec1": 50.0}, path)
    model, meta = from_checkpoint(path, with_metadata=True)
    assert meta == {"best_prec1": 50.0, "layout": "option_a"}
    assert isinstance(model, ResNet) and not model.training
    assert [s.shortcut for s in model.config.stages] == ["conv", "pad", "pad"]
    assert model.config.stages[0].projection is None  # identity where the shape does not change
    assert model.config.input_mean == (0.485, 0.456, 0.406) and model.config.input_std == (0.229, 0.224, 0.225)
    assert compress.count_params(model) == sum(p.numel() for p in ref.parameters())  # the zero padding is free
    _same_function(ref, model, xs)
    # the shortcut is a frozen conv that torch-pruning prunes through; it stays frozen and the result saves
    small = compress.prune(model, 0.25)
    sc = small.layer2[0].shortcut[0]
    assert isinstance(sc, ZeroPadShortcut) and not sc.weight.requires_grad and sc.weight.shape[0] < 16
    assert compress.count_params(small) < compress.count_params(model)
    back = compress.load(compress.save(small, tmp_path / "s.pt"))
    assert back.config == small.config and back.config.input_mean == model.config.input_mean
    with torch.no_grad():
        assert torch.equal(back(xs), small.eval()(xs))


def test_zero_pad_shortcut_equals_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 9)
    sc = ZeroPadShortcut(6, 12, 2)
    assert torch.equal(sc(x), F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 3, 3)))
    assert [p.requires_grad for p in sc.parameters()] == [False]
    sc.weight = nn.Parameter(torch.zeros(12, 6, 1, 1))  # what torch-pruning does: the new weight is frozen too
    assert not sc.weight.requires_grad


def test_kuangliu_layout_small(xs, tmp_path):
    torch.manual_seed(1)
    ref = _randomize(RefResNet((8, 16, 16, 32), (1, 2, 1, 1), "B", 8))
    model = from_checkpoint(ref.state_dict())
    assert model.config.depths == [1, 2, 1, 1] and model.config.widths == [8, 16, 16, 32]
    assert [s.shortcut for s in model.config.stages] == ["conv"] * 4
    assert model.config.input_mean == (0.4914, 0.4822, 0.4465)
    assert compress.count_params(model) == sum(p.numel() for p in ref.parameters())
    _same_function(ref, model, xs)


@pytest.mark.parametrize("depths, params", [((2, 2, 2, 2), 11_173_962), ((3, 4, 6, 3), 21_282_122)])
def test_kuangliu_resnet18_and_34(depths, params):
    torch.manual_seed(2)
    ref = _randomize(RefResNet((64, 128, 256, 512), depths, "B", 64))
    model = from_checkpoint({"net": ref.state_dict(), "acc": 95.0, "epoch": 199}, layout="kuangliu")
    assert compress.count_params(model) == params
    assert model.config.depths == list(depths) and model.config.strides == [1, 2, 2, 2]
    _same_function(ref, model, torch.randn(1, 3, 32, 32))


def test_report003_layout_with_se_and_numpy_metadata(xs, tmp_path):
    torch.manual_seed(4)
    ref = _randomize(RefResNet((32, 64, 128), (2, 1, 1), "B", 32, names="residual_layers", se=True))
    path = tmp_path / "ckpt.pth"
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"net": state, "acc": 91.5, "epoch": 12, "config": {"num_blocks": [2, 1, 1],
                "total_params": np.int64(123), "drop": np.float64(0.4)}}, path)
    model, meta = from_checkpoint(path, with_metadata=True)
    assert meta["layout"] == "report003" and meta["config"]["total_params"] == 123
    assert type(meta["config"]["total_params"]) is int and type(meta["config"]["drop"]) is float
    assert model.config.stem_se == 2 and model.config.depths == [2, 1, 1]
    _same_function(ref, model, xs)


def test_report003_kernel_sizes_come_from_the_tensors(xs):
    torch.manual_seed(5)
    ref = _randomize(RefResNet((16, 32), (1, 1), "B", 16, names="residual_layers", k=5))
    model = from_checkpoint(ref.state_dict())
    assert {b.kernels for s in model.config.stages for b in s.blocks} == {(5, 5)}
    _same_function(ref, model, xs)


# --- refusals ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kl_state():
    torch.manual_seed(6)
    return RefResNet((8, 16), (1, 1), "B", 8).state_dict()


def test_unknown_key_is_named(kl_state):
    state = {**kl_state, "layer1.0.extra.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointError, match=r"unknown key 'layer1\.0\.extra\.weight' with shape \(3, 3\)"):
        from_checkpoint(state)


def test_missing_key_is_named(kl_state):
    state = {k: v for k, v in kl_state.items() if k != "layer2.0.bn2.running_var"}
    with pytest.raises(CheckpointError, match=r"missing key 'layer2\.0\.bn2\.running_var'"):
        from_checkpoint(state)


def test_classifier_on_a_non_global_pool_is_refused(kl_state):
    state = {**kl_state, "linear.weight": torch.zeros(10, 16 * 4 * 4)}
    with pytest.raises(CheckpointError, match=r"'linear\.weight' has shape \(10, 256\).*globally pooled"):
        from_checkpoint(state)


def test_shortcut_kernel_other_than_1x1_is_refused(kl_state):
    state = {**kl_state, "layer2.0.shortcut.0.weight": torch.zeros(16, 8, 3, 3)}
    with pytest.raises(CheckpointError, match=r"'layer2\.0\.shortcut\.0\.weight' has shape \(16, 8, 3, 3\).*1x1"):
        from_checkpoint(state)


def test_widths_that_do_not_chain_are_refused(kl_state):
    state = {**kl_state, "layer2.0.conv1.weight": torch.zeros(16, 5, 3, 3)}
    with pytest.raises(CheckpointError, match=r"'layer2\.0\.conv1\.weight' has shape \(16, 5, 3, 3\)"):
        from_checkpoint(state)


def test_wrong_explicit_layout(kl_state):
    with pytest.raises(CheckpointError, match="option_a shortcuts have no parameters"):
        from_checkpoint(kl_state, layout="option_a")
    with pytest.raises(CheckpointError, match="not 'report003'"):
        from_checkpoint(kl_state, layout="report003")
    no_shortcut = {k: v for k, v in kl_state.items() if ".shortcut." not in k}
    with pytest.raises(CheckpointError, match=r"missing key 'layer2\.0\.shortcut\.0\.weight'"):
        from_checkpoint(no_shortcut, layout="kuangliu")
    with pytest.raises(ValueError, match="unknown layout 'he'"):
        from_checkpoint(kl_state, layout="he")


def test_option_a_padding_must_be_the_layouts(kl_state):
    state = {k: v for k, v in RefResNet((8, 24), (1, 1), "A", 8).state_dict().items()}
    with pytest.raises(CheckpointError, match=r"'layer2\.0' goes from 8 to 24 channels.*not the option-A zero padding"):
        from_checkpoint(state)


def test_files_are_read_safely(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        from_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError):
        from_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="compress.load"):
        from_checkpoint(compress.save(compress.resnet18(), tmp_path / "m.pt"))
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no state dict found"):
        from_checkpoint(tmp_path / "odd.pth")


# --- the shared trained weights -----------------------------------------------------------------------
def test_published_weights_named():
    assert len(published.PUBLISHED) == 5 and all(len(e.sha256) == 64 for e in published.PUBLISHED.values())


@needs_shared
@pytest.mark.parametrize("name", sorted(SHARED_WEIGHTS))
def test_shared_weights_import_save_load_prune_evaluate(name, tmp_path, cifar10_test):
    """Each shared file: imported, saved, loaded, pruned to half its FLOPs, saved and loaded again, and
    evaluated on 250 real test images (the whole test set: tests/test_evaluate.py). One thread: tracing,
    budget search and small batches run several times faster so on a busy 2-core machine."""
    from compress.bench import torch_threads

    with torch_threads(1):
        _import_save_load_prune_evaluate(SHARED_WEIGHTS[name], name, tmp_path, cifar10_test)


def _import_save_load_prune_evaluate(info, name, tmp_path, cifar10_test):
    assert hashlib.sha256(info["path"].read_bytes()).hexdigest() == info["sha256"]
    model, meta = from_checkpoint(info["path"], with_metadata=True)
    assert compress.count_params(model) == info["params"]
    assert meta["layout"] == ("option_a" if name.startswith("resnet") else "report003")
    back = compress.load(compress.save(model, tmp_path / "m.pt"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert back.config.input_mean == model.config.input_mean is not None
    images = (cifar10_test[0][:250], cifar10_test[1][:250])
    trained = compress.evaluate(back, images, device="cpu", progress=False)
    assert trained.total == 250 and trained.accuracy > 0.85  # the model's own normalisation came along

    budget = compress.count_flops(back) // 2
    small = compress.prune(back, target_flops=budget)
    assert compress.count_flops(small) <= budget and compress.count_params(small) < info["params"]
    assert small.config.input_mean == model.config.input_mean
    again = compress.load(compress.save(small, tmp_path / "small.pt"))
    assert [s.shortcut for s in again.config.stages] == [s.shortcut for s in model.config.stages]
    pruned = compress.evaluate(small, images, device="cpu", progress=False)
    reloaded = compress.evaluate(again, images, device="cpu", progress=False)
    assert (reloaded.correct, reloaded.loss, reloaded.mean) == (pruned.correct, pruned.loss, pruned.mean)
    assert pruned.correct < trained.correct  # pruning without fine-tuning costs accuracy


def test_data_aware_pruning_through_a_frozen_shortcut(xs):
    torch.manual_seed(7)
    model = from_checkpoint(_randomize(RefResNet((8, 16), (1, 1), "A", 8)).state_dict())
    data = (xs, torch.tensor([0, 1, 2, 3]))
    small = compress.prune(model, 0.25, importance="taylor", data=data)
    assert compress.count_params(small) < compress.count_params(model)
    assert not small.layer2[0].shortcut[0].weight.requires_grad
    assert all(p.grad is None for p in small.parameters())
