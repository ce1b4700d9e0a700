"""compress.prune never returns a silently wrong model.

Each pruned model is compared with a *masked* copy of the original: the channels that pruning removed
are zeroed in the original (at the output of every layer that produces them). Where no normalisation
sits between a removed channel and its consumers, removing a channel must equal zeroing it, so the two
models must agree on every protected output. Which channels were removed is read off the pruned model
(every layer here has distinct bias values, so kept biases name the kept channels). Otherwise prune must
refuse with a ValueError naming the layer.
"""

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
import torchvision
from torch import nn

from compress import prune
from compress.transforms import prunable_layers

from conftest import assert_unchanged, snapshot

LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def distinct_biases(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every conv/linear bias distinct values (so kept channels can be identified)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LAYERS) and m.bias is not None:
                m.bias.copy_(torch.randperm(10 * m.bias.numel(), generator=g)[: m.bias.numel()].float() / 10 + 0.05)
    return model


def kept_channels(original: nn.Module, pruned: nn.Module) -> dict[str, list[int]]:
    """For every biased layer, which of the original's output channels the pruned model kept."""
    kept = {}
    new = dict(pruned.named_modules())
    for name, m in original.named_modules():
        if isinstance(m, LAYERS) and m.bias is not None:
            old_b, new_b = m.bias.detach().tolist(), new[name].bias.detach().tolist()
            kept[name] = [old_b.index(v) for v in new_b]
            assert kept[name] == sorted(kept[name]), f"{name}: channels reordered"
    return kept


def masked(original: nn.Module, kept: dict[str, list[int]]) -> list:
    """Hooks on ``original`` zeroing each layer's removed output channels; returns the handles."""
    handles = []
    modules = dict(original.named_modules())
    for name, idxs in kept.items():
        m = modules[name]
        n = m.bias.numel()
        gone = sorted(set(range(n)) - set(idxs))
        if not gone:
            continue
        dim = -1 if isinstance(m, nn.Linear) else 1

        def hook(mod, args, out, gone=gone, dim=dim):
            out = out.clone()
            out.index_fill_(dim % out.dim(), torch.tensor(gone), 0.0)
            return out

        handles.append(m.register_forward_hook(hook))
    return handles


def run(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def flat(out):
    if torch.is_tensor(out):
        return {"output": out}
    if isinstance(out, dict):
        return dict(out)
    return {str(i): o for i, o in enumerate(out)}


def check_pruned(original, inputs, **kwargs):
    """Prune; return "ok" if the result equals the masked original, or the refusal's message."""
    snap = snapshot(original)
    try:
        pruned = prune(original, inputs=inputs, **kwargs)
    except ValueError as e:
        assert_unchanged(original, snap)
        names = [n for n, _ in original.named_modules() if n]
        assert any(n in str(e) for n in names), f"refusal does not name a layer: {e}"
        return str(e)
    assert_unchanged(original, snap)
    for n, p in pruned.named_parameters():
        assert p.numel() > 0, f"{n} was pruned to shape {tuple(p.shape)}"
    with torch.no_grad():
        want_all = flat(run(original, inputs))
        got = flat(run(pruned, inputs))
        handles = masked(original, kept_channels(original, pruned))
        try:
            want = flat(run(original, inputs))
        finally:
            for h in handles:
                h.remove()
    protected = kwargs.get("outputs", "all")
    for key, w in want.items():
        if protected != "all" and key not in map(str, protected):
            continue
        assert got[key].shape == want_all[key].shape, f"protected output {key} changed shape"
        torch.testing.assert_close(got[key], w, rtol=1e-4, atol=1e-5, msg=f"output {key} differs from the masked original")
    return "ok"


# --- the models -------------------------------------------------------------------------------------

class GroupedConv(nn.Module):
    """The issue's case: conv 3->64, then a groups=4 conv, no norm in between."""

    def __init__(self, groups=4, second_groups=1):
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)
        self.b = nn.Conv2d(64, 64, 3, padding=1, groups=groups)
        self.c = nn.Conv2d(64, 32, 1, groups=second_groups)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = F.relu(self.c(F.relu(self.b(F.relu(self.a(x))))))
        return self.head(x.mean((2, 3)))


class Depthwise(nn.Module):
    """MobileNet-style: pointwise, depthwise (3x3, groups=C), pointwise, with a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.expand = nn.Conv2d(16, 48, 1)
        self.dw = nn.Conv2d(48, 48, 3, padding=1, groups=48)
        self.project = nn.Conv2d(48, 16, 1)
        self.head = nn.Conv2d(16, 7, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = self.project(F.relu(self.dw(F.relu(self.expand(x)))))
        return self.head(x + y).mean((2, 3))


class SplitConcat(nn.Module):
    """Split a conv's output three ways, process, concatenate, add a skip."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 24, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 12, 1)
        self.right = nn.Conv2d(8, 4, 1)
        self.fuse = nn.Conv2d(24, 16, 1)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.a(x))
        p, q, r = torch.split(x, [self.left.in_channels, self.mid.in_channels, self.right.in_channels], dim=1)
        y = torch.cat([F.relu(self.left(p)), F.relu(self.mid(q)), self.right(r)], dim=1)
        return self.head(F.relu(self.fuse(y)).mean((2, 3)))


class TwoHeads(nn.Module):
    """A trunk and two heads, returned as a dict (like torchvision's fcn with aux_loss)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.main = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 6, 1))
        self.aux = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 1))

    def forward(self, x):
        h = self.trunk[1](self.trunk[0](x))
        return {"out": self.main(self.trunk[3](self.trunk[2](h))), "aux": self.aux(h)}


class TwoInputs(nn.Module):
    """Two inputs, concatenated features, three outputs (Torch-Pruning's multiple-inputs test, with convs)."""

    def __init__(self):
        super().__init__()
        self.f1 = nn.Linear(12, 16)
        self.f2 = nn.Linear(6, 8)
        self.f3 = nn.Linear(24, 10)
        self.out = nn.Linear(10, 4)

    def forward(self, x1, x2):
        a, b = F.relu(self.f1(x1)), F.relu(self.f2(x2))
        return self.out(F.relu(self.f3(torch.cat([a, b], dim=1))))


class Transposed(nn.Module):
    """Encoder-decoder with a ConvTranspose2d (ungrouped) and a skip concatenation."""

    def __init__(self, up_groups=1):
        super().__init__()
        self.enc = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2, groups=up_groups)
        self.skip = nn.Conv2d(3, 8, 3, padding=1)
        self.dec = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        y = self.up(F.relu(self.mid(F.relu(self.enc(x)))))
        return self.dec(torch.cat([F.relu(y), F.relu(self.skip(x))], dim=1))


IMG = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
CASES = {
    "grouped": (lambda: GroupedConv(4), IMG),
    "grouped_then_grouped": (lambda: GroupedConv(4, second_groups=8), IMG),
    "depthwise": (Depthwise, IMG),
    "split_concat": (SplitConcat, IMG),
    "two_heads": (TwoHeads, IMG),
    "two_inputs": (TwoInputs, (torch.randn(2, 12), torch.randn(2, 6))),
    "transposed": (Transposed, IMG),
}


def build(name, seed=0):
    torch.manual_seed(seed)
    factory, inputs = CASES[name]
    return distinct_biases(factory().eval(), seed), inputs


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("kwargs", [
    dict(ratios=0.5, importance="random"),
    dict(ratios=0.3, importance="l1"),
    dict(ratios=0.5, importance="l2", ranking="global", max_ratio=0.8),
    dict(ratios=0.6, importance="random", steps=2),
], ids=["random-0.5", "l1-0.3", "global-0.5", "steps-0.6"])
def test_pruned_equals_masked_original(name, kwargs):
    outcomes = []
    for seed in range(3):
        model, inputs = build(name, seed)
        outcomes.append(check_pruned(model, inputs, **kwargs))
    # correct, or (random choices can empty a split piece) refused naming the layer; mostly correct
    assert all(o == "ok" or "would lose all" in o for o in outcomes), outcomes
    assert outcomes.count("ok") >= 2, outcomes


def test_grouped_conv_loses_the_same_positions_in_every_group():
    model, inputs = build("grouped")
    pruned = prune(model, 0.5, importance="random", inputs=inputs)
    assert pruned.b.groups == 4 and pruned.b.in_channels == 32 and pruned.b.out_channels == 32
    kept = kept_channels(model, pruned)
    positions = [[i - 16 * g for i in kept["a"] if 16 * g <= i < 16 * (g + 1)] for g in range(4)]
    assert all(p == positions[0] for p in positions) and len(positions[0]) == 8


def test_grouped_conv_matches_torch_pruning():
    """Same widths and bit-identical weights as Torch-Pruning's MetaPruner (L1, local)."""
    model, inputs = build("grouped")
    ours = prune(model, 0.5, inputs=inputs)
    theirs = build("grouped")[0]
    pruner = tp.pruner.MetaPruner(theirs, inputs, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[theirs.head])
    pruner.step()
    for (n, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), n


def test_global_ranking_matches_torch_pruning():
    """Global ranking equals MetaPruner(global_pruning=True) where no per-layer cap is reached."""
    model, inputs = build("depthwise")
    ours = prune(model, 0.3, ranking="global", inputs=inputs)
    theirs = build("depthwise")[0]
    tp.pruner.MetaPruner(theirs, inputs, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.3,
                         global_pruning=True, ignored_layers=[theirs.head]).step()
    widths = lambda m: [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    assert widths(ours) == widths(theirs) and widths(ours) != widths(model)
    for (n, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), n


def test_incompatible_grouping_is_refused_naming_the_layer():
    # a's 24 channels are split into 8 + 16 before a groups=4 conv that only sees the second part: the
    # positions one group loses cannot be the same in all groups of the consumer
    class Mismatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 24, 1)
            self.b = nn.Conv2d(16, 16, 1, groups=4)
            self.c = nn.Conv2d(8, 16, 1)

        def forward(self, x):
            p, q = torch.split(self.a(x), [8, 16], dim=1)
            return self.b(q) + self.c(p)

    torch.manual_seed(0)
    model = distinct_biases(Mismatch().eval())
    with pytest.raises(ValueError, match=r"\bb \(Conv2d\) \(groups=4\) would lose different input positions"):
        prune(model, {"a": 0.5}, inputs=IMG)
    out = check_pruned(model, IMG, ratios=0.5)  # a float skips nothing silently: refused or correct
    assert out == "ok" or "groups=4" in out


def test_grouped_transposed_conv_is_refused():
    model, inputs = build("transposed")
    torch.manual_seed(0)
    grouped = distinct_biases(Transposed(up_groups=2).eval())
    with pytest.raises(ValueError, match=r"mid cannot be pruned: up \(ConvTranspose2d\) is a grouped transposed conv"):
        prune(grouped, {"mid": 0.5}, inputs=inputs)
    assert check_pruned(model, inputs, ratios={"mid": 0.5, "up": 0.5}) == "ok"
    pruned = prune(model, {"up": 0.5}, inputs=inputs)
    assert pruned.up.out_channels == 4 and pruned.dec.in_channels == 12  # ConvTranspose2d outputs are pruned


def test_no_layer_is_pruned_to_zero_channels():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 2, 1)
            self.b = nn.Conv2d(2, 4, 1)

        def forward(self, x):
            return self.b(self.a(x))

    with pytest.raises(ValueError, match=r"a would keep no channel: ratio 0.6 of 2 channels"):
        prune(Tiny(), 0.6, inputs=IMG)
    with pytest.raises(ValueError, match=r"would keep no channel.*round_to=8"):
        prune(Tiny(), 0.2, round_to=8, inputs=IMG)


def test_torch_pruning_split_network_never_gets_empty_layers():
    """Torch-Pruning's test_split network (BN between, so only shapes are checked): an empty conv
    ([64, 0, 1, 1]) or empty outputs were possible before; now every layer keeps channels."""

    class Net(nn.Module):
        def __init__(self, d=16):
            super().__init__()
            self.block1 = nn.Sequential(nn.Conv2d(d, d, 1), nn.BatchNorm2d(d), nn.GELU(), nn.Conv2d(d, d * 4, 1), nn.BatchNorm2d(d * 4))
            self.block2_1 = nn.Sequential(nn.Conv2d(d, d, 1), nn.BatchNorm2d(d))
            self.block2_2 = nn.Sequential(nn.Conv2d(2 * d, d, 1), nn.BatchNorm2d(d))

        def forward(self, x):
            x = self.block1(x)
            c1, c2 = self.block2_1[0].in_channels, self.block2_2[0].in_channels
            x1, x2, x3 = torch.split(x, [c1, c1, c2], dim=1)
            return self.block2_1(x1), self.block2_1(x2), self.block2_2(x3)

    x = torch.randn(1, 16, 7, 7)
    for seed in range(5):
        torch.manual_seed(seed)
        net = Net().eval()
        for outputs in ("all", []):
            try:
                m = prune(net, 0.5, importance="random", inputs=x, outputs=outputs)
            except ValueError as e:
                assert "block" in str(e)
                continue
            assert all(p.numel() for p in m.parameters())
            outs = m(x)
            assert all(o.numel() for o in outs)
            if outputs == "all":
                assert [o.shape for o in outs] == [o.shape for o in net(x)]


def test_every_output_is_protected_by_default():
    model, inputs = build("two_heads")
    m = prune(model, 0.5, inputs=inputs)
    out = m(inputs)
    assert out["out"].shape[1] == 6 and out["aux"].shape[1] == 6
    assert m.trunk[0].out_channels == 8 and m.main[2].out_channels == 6
    assert "main.2" not in prunable_layers(model, inputs=inputs) and "aux.2" not in prunable_layers(model, inputs=inputs)
    only_main = prune(model, 0.5, inputs=inputs, outputs=["out"])  # the aux head may now shrink
    assert only_main(inputs)["out"].shape[1] == 6 and only_main(inputs)["aux"].shape[1] == 3
    with pytest.raises(ValueError, match=r"'seg' is not an output of the model; its outputs are out, aux"):
        prune(model, 0.5, inputs=inputs, outputs=["seg"])


def test_fcn_with_aux_head_keeps_both_heads_whole():
    """torchvision's FCN with aux_loss: both heads keep their 21 classes (the issue's out 21 -> 11)."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    torch.manual_seed(0)
    backbone = IntermediateLayerGetter(torchvision.models.resnet18(), {"layer4": "out", "layer3": "aux"})
    net = FCN(backbone, FCNHead(512, 21), FCNHead(256, 21)).eval()
    x = torch.randn(1, 3, 64, 64)
    m = prune(net, 0.5, inputs=x)
    out = m(x)
    assert out["out"].shape == (1, 21, 64, 64) and out["aux"].shape == (1, 21, 64, 64)
    assert m.classifier[0].out_channels == 64 and m.aux_classifier[0].out_channels == 32


def test_two_input_models_take_tuple_or_dict_inputs():
    model, (a, b) = build("two_inputs")
    by_tuple = prune(model, 0.5, inputs=(a, b))
    by_dict = prune(model, 0.5, inputs={"x1": a, "x2": b})
    assert by_tuple.f1.out_features == 8 and by_tuple.f3.in_features == 12 and by_tuple.out.out_features == 4
    for (n, p), (_, q) in zip(by_tuple.state_dict().items(), by_dict.state_dict().items()):
        assert torch.equal(p, q), n


def test_vit_heads_are_kept_whole_and_hidden_dim_is_fixed():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                               hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    m = prune(vit, 0.5, inputs=x)
    attn = m.encoder.layers[0].self_attention
    assert m.hidden_dim == 16 and attn.embed_dim == 16 and attn.num_heads == 4 and attn.head_dim == 4
    assert m(x).shape == (2, 10) and m.encoder.layers[0].mlp[0].out_features == 32


def test_fix_hook_runs_before_the_check_forward():
    class Stored(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Linear(8 * 64, 4)
            self.width = 8

        def forward(self, x):
            return self.b(self.a(x).reshape(x.shape[0], self.width * 64))

    with pytest.raises(ValueError, match="fails on the example inputs.*fix="):
        prune(Stored(), {"a": 0.5}, inputs=IMG)
    seen = []
    m = prune(Stored(), {"a": 0.5}, inputs=IMG, fix=lambda m: (seen.append(m.a.out_channels), setattr(m, "width", m.a.out_channels)))
    assert seen == [4] and m.width == 4 and m(IMG).shape == (2, 4)


def test_small_resnext_and_regnet_prune_and_run():
    """torchvision's ResNeXt / RegNetY blocks (grouped 3x3 convs), which raised 'INDICES element is out
    of DATA bounds' before; kept channels respect the groups."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    net = ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    m = prune(net, 0.5, inputs=x)
    conv = m.layer1[0].conv2
    assert conv.groups == 8 and conv.in_channels == conv.out_channels == 16 and m(x).shape == (1, 10)
    reg = torchvision.models.RegNet(torchvision.models.regnet.BlockParams.from_init_params(
        depth=3, w_0=24, w_a=24.48, w_m=2.54, group_width=8, se_ratio=0.25), num_classes=10).eval()
    pruned = prune(reg, 0.5, inputs=x)
    assert pruned(x).shape == (1, 10)
    grouped = [c for c in pruned.modules() if isinstance(c, nn.Conv2d) and 1 < c.groups < c.out_channels]
    assert grouped and all(c.in_channels % c.groups == 0 and c.out_channels % c.groups == 0 for c in grouped)


class FusedAttention(nn.Module):
    """timm-style self-attention (one fused qkv layer, heads reshaped out of it), no norm layers."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.embed = nn.Linear(6, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 5)
        self.heads, self.head_dim = heads, dim // heads

    def forward(self, x):
        x = self.embed(x)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * 0.25).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim))
        return self.head(x.mean(1))


def test_fused_attention_with_num_heads_equals_masked_original():
    """With num_heads the same head dims go in every head (Torch-Pruning's rule); zeroing them in the
    original gives the same outputs."""
    tokens = torch.randn(2, 7, 6, generator=torch.Generator().manual_seed(0))
    fix = lambda m: setattr(m, "head_dim", m.qkv.out_features // 3 // m.heads)  # noqa: E731
    for seed in range(2):
        torch.manual_seed(seed)
        model = distinct_biases(FusedAttention().eval(), seed)
        assert check_pruned(model, tokens, ratios=0.5, num_heads={"qkv": 4}, fix=fix) == "ok"
    pruned = prune(model, 0.5, inputs=tokens, num_heads={"qkv": 4}, fix=fix)
    assert pruned.qkv.out_features == 48 and pruned.head_dim == 4 and pruned.proj.in_features == 16
    theirs = __import__("copy").deepcopy(model)
    tp.pruner.MetaPruner(theirs, tokens, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.5,
                         num_heads={theirs.qkv: 4}, ignored_layers=[theirs.head]).step()
    for (n, a), (_, b) in zip(pruned.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), n


def test_unwrapped_parameters_follow_their_channels():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.scale = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)  # a per-channel scale outside any layer
            self.b = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(self.a(x) * self.scale)

    torch.manual_seed(0)
    model = distinct_biases(Scaled().eval())
    m = prune(model, {"a": 0.5}, inputs=IMG, unwrapped={"scale": 1})
    kept = kept_channels(model, m)["a"]
    assert m.scale.shape == (1, 4, 1, 1) and torch.equal(m.scale.detach(), model.scale.detach()[:, kept])
    assert check_pruned(model, IMG, ratios={"a": 0.5}, unwrapped={"scale": 1}) == "ok"
    by_alias = prune(model, {"a": 0.5}, inputs=IMG, unwrapped_parameters=[(model.scale, 1)])
    assert torch.equal(by_alias.scale, m.scale)
