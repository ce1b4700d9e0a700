import copy

import pytest
import torch

import compress


def test_save_load_round_trip_pruned_resnet(r18, x, tmp_path):
    m = compress.add_se(compress.prune(r18, {0: 0.1, 5: 0.3, "layer4": 0.25}, mode="sequential"), "blocks")
    m.eval()
    path = compress.save(m, tmp_path / "sub" / "m.pt", metadata={"recipe": "test"})
    back, meta = compress.load(path, with_metadata=True)
    assert type(back) is compress.ResNet and back.config == m.config
    assert meta == {"recipe": "test"}
    assert torch.equal(back(x), m(x))
    assert not back.training


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        compress.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a file written by compress.save"):
        compress.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a file written by compress.save"):
        compress.load(tmp_path / "other.pt")
    with pytest.raises(TypeError, match="nn.Module"):
        compress.save("model", tmp_path / "x.pt")


def test_save_checks_metadata_before_replacing_a_good_file(tmp_path):
    import datetime
    from pathlib import Path

    import numpy as np

    m = compress.models.ResNet(compress.ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))
    path = compress.save(m, tmp_path / "m.pt", metadata={"run": 1})
    before = path.read_bytes()
    for bad, what in (({"out": Path("runs/x")}, "PosixPath"), ({"when": datetime.datetime(2026, 1, 1)}, "datetime"),
                      ({"acc": np.zeros(3)}, "numpy.ndarray"), ({"nested": [{"p": Path("a")}]}, r"metadata\['nested'\]\[0\]\['p'\]")):
        with pytest.raises(TypeError, match=what):
            compress.save(m, path, metadata=bad)
        assert path.read_bytes() == before  # the good file is still there, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # and no temporary file is left
    # numpy scalars are numbers: stored as the Python number of the same value, and they load back
    compress.save(m, path, metadata={"acc": np.float32(0.5), "epochs": np.int64(3), "ok": np.bool_(True)})
    _, meta = compress.load(path, with_metadata=True)
    assert meta == {"acc": 0.5, "epochs": 3, "ok": True} and type(meta["acc"]) is float and type(meta["epochs"]) is int


# --- arbitrary models: every attribute a smaller layer depends on comes back --------------------------

class Net(torch.nn.Module):
    """Grouped/depthwise convs, BatchNorm, GroupNorm, LayerNorm and attention, all sized by ``width``."""

    def __init__(self, width: int = 16, heads: int = 4):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, width, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(width)
        self.grouped = torch.nn.Conv2d(width, width, 3, padding=1, groups=4)
        self.depthwise = torch.nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.gn = torch.nn.GroupNorm(4, width)
        self.ln = torch.nn.LayerNorm(width)
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = torch.nn.Linear(width, 10)
        self.width = width

    def forward(self, x):
        x = self.gn(self.depthwise(self.grouped(self.bn(self.stem(x)).relu())))
        tokens = self.ln(x.flatten(2).transpose(1, 2))
        tokens = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(tokens.reshape(-1, self.width).mean(0, keepdim=True))


def _randomize(model):
    torch.manual_seed(3)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
    return model.eval()


def test_smaller_layers_load_into_a_bigger_template(x, tmp_path):
    small = _randomize(Net(width=8, heads=2))
    path = compress.save(small, tmp_path / "net.pt")
    back = compress.load(path, model=Net(width=16, heads=4))
    assert torch.equal(back(x), small(x))
    assert (back.grouped.groups, back.depthwise.groups, back.depthwise.in_channels) == (4, 8, 8)
    assert back.ln.normalized_shape == (8,) and back.gn.num_channels == 8 and back.bn.num_features == 8
    assert (back.attn.embed_dim, back.attn.num_heads, back.attn.head_dim) == (8, 2, 4)


def test_template_is_not_changed_and_must_match(x, tmp_path):
    small = _randomize(Net(width=8, heads=2))
    path = compress.save(small, tmp_path / "net.pt")
    template = Net()
    before = {k: v.clone() for k, v in template.state_dict().items()}
    compress.load(path, model=template)
    assert template.ln.normalized_shape == (16,) and template.attn.num_heads == 4
    assert all(torch.equal(v, template.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="at layer '<model>': torch.nn.modules.container.Sequential in the template"):
        compress.load(path, model=torch.nn.Sequential())
    missing = Net()
    del missing.gn
    with pytest.raises(ValueError, match=r"it has no layer 'gn' \(torch.nn.modules.normalization.GroupNorm\)"):
        compress.load(path, model=missing)
    wrong = Net()
    wrong.bn = torch.nn.Identity()
    with pytest.raises(ValueError, match="at layer 'bn': torch.nn.modules.linear.Identity in the template"):
        compress.load(path, model=wrong)


def test_pruned_mnasnet_round_trips(tmp_path):
    """mnasnet refuses a state dict without its version (issue 15); depthwise convs on the way."""
    import torchvision

    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    pruned = compress.prune(torchvision.models.mnasnet0_5(num_classes=10), 0.3).eval()
    path = compress.save(pruned, tmp_path / "mnasnet.pt", example_input=x)
    back = compress.load(path, model=torchvision.models.mnasnet0_5(num_classes=10))
    assert torch.equal(back(x), pruned(x))


def test_save_refuses_what_it_cannot_store_and_keeps_the_old_file(tmp_path):
    path = compress.save(_randomize(Net(width=8, heads=2)), tmp_path / "net.pt")
    old = path.read_bytes()

    class Opaque:  # an object that is neither data nor code: a loaded model would take the template's
        pass

    odd = Net(width=8, heads=2)
    odd.attn.helper = Opaque()
    with pytest.raises(ValueError, match=r"cannot store attribute 'helper' of layer 'attn'.*nothing was written"):
        compress.save(odd, path)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]


def test_save_refuses_a_resnet_that_would_load_differently(r18, tmp_path):
    path = compress.save(r18, tmp_path / "m.pt")
    old = path.read_bytes()
    odd = copy.deepcopy(r18)
    odd.layer2[0].bn1.eps = 0.5  # not in the config, so load() would rebuild the default eps
    with pytest.raises(ValueError, match=r"refused to write .*m\.pt: layer 'layer2\.0\.bn1' \(BatchNorm2d\) gives different outputs"):
        compress.save(odd, path)
    stale = copy.deepcopy(r18)
    stale.linear = torch.nn.Linear(512, 100)  # the config still says 10 classes
    with pytest.raises(ValueError, match="does not load back.*size mismatch for linear.weight"):
        compress.save(stale, path)
    assert path.read_bytes() == old


def test_forward_hooks_are_code_the_template_must_have(x, tmp_path):
    model = _randomize(Net(width=8, heads=2))
    model.head.register_forward_hook(_double)
    path = compress.save(model, tmp_path / "net.pt")
    with pytest.raises(ValueError, match="forward hooks none in the template"):
        compress.load(path, model=Net())
    template = Net()
    template.head.register_forward_hook(_double)
    assert torch.equal(compress.load(path, model=template)(x), model(x))
    odd = Net()
    odd.head.register_forward_hook(Helper())
    with pytest.raises(ValueError, match="cannot store the forward hooks of layer 'head'"):
        compress.save(odd, tmp_path / "odd.pt")


def _double(module, inputs, output):
    return 2 * output


class Helper:
    def __call__(self, module, inputs, output):
        return output


def test_save_checks_on_a_guessed_or_given_input_and_leaves_the_model_alone(tmp_path):
    model = _randomize(Net(width=8, heads=2)).train()
    model.bn.eval()
    compress.save(model, tmp_path / "a.pt")
    compress.save(model, tmp_path / "b.pt", example_input=torch.randn(1, 3, 5, 7))
    assert model.training and not model.bn.training and model.stem.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(ValueError, match="does not run on example_input"):
        compress.save(model, tmp_path / "c.pt", example_input=torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="cannot guess an input for Embedding; pass example_input="):
        compress.save(torch.nn.Embedding(5, 3), tmp_path / "d.pt")
    back = compress.load(compress.save(torch.nn.Embedding(5, 3), tmp_path / "e.pt", example_input=torch.arange(5)),
                         model=torch.nn.Embedding(5, 3))
    assert back.weight.shape == (5, 3)
    assert not (tmp_path / "c.pt").exists() and not list(tmp_path.glob("*.tmp"))


def test_files_of_format_1_still_load(r18, x, tmp_path):
    torch.save({"format": "compress.model/1", "state_dict": r18.state_dict(), "metadata": {},
                "config": r18.config.to_dict()}, tmp_path / "old.pt")
    assert torch.equal(compress.load(tmp_path / "old.pt")(x), r18(x))
