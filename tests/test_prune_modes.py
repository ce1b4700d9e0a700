"""compress.prune's ranking modes, steps, budgets and Torch-Pruning argument names, checked against
Torch-Pruning's own MetaPruner where both define the same thing."""

import pytest
import torch
import torch_pruning as tp
from torch import nn

import compress
from compress import prune
from compress.transforms import _depgraph as dg
from compress.transforms._cost import CostModel, measure

from test_prune_correctness import build


@pytest.fixture(scope="module")
def r20():
    """A CIFAR ResNet-20 (16/32/64 wide, 3 blocks per stage, projection shortcuts)."""
    torch.manual_seed(0)
    return compress.models.ResNet(compress.ResNetConfig.uniform((16, 32, 64), (3, 3, 3), (1, 2, 2))).eval()


def widths(m):
    return [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)]


def torch_pruning(model, **kwargs):
    net = __import__("copy").deepcopy(model)
    tp.pruner.MetaPruner(net, torch.zeros(1, 3, 32, 32), importance=tp.importance.GroupMagnitudeImportance(p=1),
                         ignored_layers=[net.linear], **kwargs).step()
    return net


def assert_same(a, b):
    assert widths(a) == widths(b)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("kwargs, theirs", [
    (dict(ratios=0.3), dict(pruning_ratio=0.3)),
    (dict(ratios=0.3, ranking="global"), dict(pruning_ratio=0.3, global_pruning=True)),
    (dict(ratios=0.3, ranking="isomorphic"), dict(pruning_ratio=0.3, global_pruning=True, isomorphic=True)),
    (dict(ratios=0.5, round_to=4), dict(pruning_ratio=0.5, round_to=4)),
], ids=["local", "global", "isomorphic", "round_to"])
def test_same_model_as_torch_pruning(r20, kwargs, theirs):
    ours = prune(r20, **kwargs)
    assert_same(ours, torch_pruning(r20, **theirs))
    assert widths(ours) != widths(r20)


def test_local_widths_follow_torch_pruning_rounding(r20):
    m = prune(r20, 0.3)  # int(n * (1 - r)): 16 -> 11, 32 -> 22, 64 -> 44
    assert m.config.widths == [11, 22, 44] and m.config.stem_width == 11
    assert prune(r20, 0.5, round_to=8).config.widths == [8, 16, 32]  # 8, 16, 32: rounded down


def test_global_ranking_removes_the_ratio_of_all_channels(r20):
    m = prune(r20, 0.4, ranking="global")
    before, after = widths(r20), widths(m)
    # 10 groups: 3 residual streams + 9 inner convs; 16*4 + 32*4 + 64*4 = 448 channels, keep int(448*0.6) = 268
    inner = [b.mid for s in m.config.stages for b in s.blocks]
    assert sum(inner) + sum(m.config.widths) == 268
    assert len(set(inner)) > 3 and after != before
    capped = prune(r20, 0.4, ranking="global", max_ratio=0.5)
    for s_old, s_new in zip(r20.config.stages, capped.config.stages):
        assert s_new.width >= s_old.width // 2 and all(b.mid >= s_old.width // 2 for b in s_new.blocks)


def test_global_ranking_per_mapping_key(r20):
    m = prune(r20, {"layer1": 0.5, "layer3": 0.25}, ranking="global")
    stage1 = [b.mid for b in m.config.stages[0].blocks]
    stage3 = [b.mid for b in m.config.stages[2].blocks]
    # each key's layers are ranked together; the residual streams are shared with other stages'
    # shortcuts and keep the key of their first member
    assert sum(stage1) + m.config.widths[0] == int(16 * 4 * 0.5)
    assert sum(stage3) + m.config.widths[2] == int(64 * 4 * 0.75)
    assert m.config.widths[1] == 32 and [b.mid for b in m.config.stages[1].blocks] == [32, 32, 32]


def units(m):
    return sum(b.mid for s in m.config.stages for b in s.blocks) + sum(m.config.widths)


def test_steps_end_at_the_same_widths_and_rescore(r20):
    one = prune(r20, 0.5)
    three = prune(r20, 0.5, steps=3)
    assert widths(one) == widths(three)
    g_one, g_three = prune(r20, 0.5, ranking="global"), prune(r20, 0.5, ranking="global", steps=3)
    assert units(g_one) == units(g_three) == 448 // 2
    assert widths(g_one) != widths(g_three)  # rescored between steps: other channels go


def test_torch_pruning_argument_names(r20):
    assert_same(prune(r20, pruning_ratio=0.3), prune(r20, 0.3))
    assert_same(prune(r20, pruning_ratio=0.3, global_pruning=True, max_pruning_ratio=0.5, iterative_steps=2),
                prune(r20, 0.3, ranking="global", max_ratio=0.5, steps=2))
    assert_same(prune(r20, pruning_ratio_dict={r20.layer1: 0.5}), prune(r20, {"layer1": 0.5}))
    assert_same(prune(r20, pruning_ratio=0.2, pruning_ratio_dict={(r20.layer2, r20.layer3): 0.5}),
                prune(r20, {"*": 0.2, "layer2": 0.5, "layer3": 0.5}))
    assert_same(prune(r20, pruning_ratio=0.3, ignored_layers=[r20.layer3]), prune(r20, 0.3, ignore=["layer3"]))
    assert_same(prune(r20, 0.3, example_inputs=torch.zeros(1, 3, 32, 32)), prune(r20, 0.3))
    with pytest.raises(TypeError, match="'prune_num_heads' is a Torch-Pruning option that compress.prune"):
        prune(r20, 0.3, prune_num_heads=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'ratio'.*pruning_ratio"):
        prune(r20, ratio=0.3)
    with pytest.raises(TypeError, match="not both"):
        prune(r20, 0.3, pruning_ratio=0.3)
    with pytest.raises(TypeError, match="not both"):
        prune(r20, 0.3, steps=2, iterative_steps=3)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(ratios=0.3, ranking="best"), ValueError, "ranking must be one of 'local', 'global', 'isomorphic'"),
    (dict(ratios=0.3, max_ratio=1.5), ValueError, r"outside \[0, 1\]"),
    (dict(ratios=0.3, steps=0), ValueError, "steps must be a positive integer"),
    (dict(ratios=0.3, mode="sequential", ranking="global"), ValueError, "sequential"),
    (dict(ratios=0.3, outputs=["logits"]), ValueError, "'logits' is not an output of the model; its outputs are output"),
    (dict(ratios=0.3, ignore=["layer9"]), ValueError, "ignore: 'layer9' matches no module"),
    (dict(ratios=0.3, fix=3), TypeError, "fix must be a callable"),
    (dict(ratios=0.3, num_heads={"conv9": 2}), ValueError, "num_heads: 'conv9' is not a layer"),
    (dict(ratios=0.3, unwrapped={"nope": 0}), ValueError, "unwrapped: 'nope' is not a parameter"),
    (dict(ratios=0.3, inputs=torch.zeros(1, 3, 32, 32), input_size=(1, 3, 32, 32)), TypeError, "not both"),
])
def test_bad_options(r20, kwargs, error, match):
    with pytest.raises(error, match=match):
        prune(r20, **kwargs)


@pytest.fixture(scope="module")
def r8():
    """A ResNet-8 (8/16/32 wide, one block per stage): cheap enough to prune many times."""
    torch.manual_seed(0)
    return compress.models.ResNet(compress.ResNetConfig.uniform((8, 16, 32), (1, 1, 1), (1, 2, 2))).eval()


@pytest.mark.parametrize("ranking", ["local", "global"])
@pytest.mark.parametrize("what", ["params", "flops"])
def test_budget_mode_in_both_rankings(r8, ranking, what):
    full = measure(r8, what, None, (1, 3, 32, 32))
    target = full // 2
    m = prune(r8, ranking=ranking, **{f"target_{what}": target})
    got = measure(m, what, None, (1, 3, 32, 32))
    assert 0.8 * target < got <= target
    stepped = prune(r8, ranking=ranking, steps=2, **{f"target_{what}": target})
    assert 0.8 * target < measure(stepped, what, None, (1, 3, 32, 32)) <= target


def test_budget_mode_global_keeps_more_channels_at_the_same_flops(r20):
    """Global ranking removes the cheapest channels first, so it keeps more channels at the same FLOPs."""
    target = compress.count_flops(r20) // 2
    local, glob = prune(r20, target_flops=target), prune(r20, target_flops=target, ranking="global")
    assert units(glob) > units(local)


def _plans(groups, seed):
    g = torch.Generator().manual_seed(seed)
    plan = {}
    for grp in groups:
        if grp.scores is not None:
            k = int(torch.randint(0, grp.units - 1, (1,), generator=g))
            plan[grp.key] = sorted(torch.randperm(grp.units, generator=g)[:k].tolist())
    return plan


@pytest.mark.parametrize("name", ["resnet20", "grouped", "depthwise", "transposed", "norms"])
@pytest.mark.parametrize("what", ["params", "flops"])
def test_cost_model_predicts_the_real_counts(r20, name, what):
    """The budget search predicts params/FLOPs from shapes; the prediction equals the real count."""
    if name == "resnet20":
        model, inputs = r20, torch.zeros(1, 3, 32, 32)
    elif name == "norms":
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 12, 3),
                              nn.InstanceNorm2d(12, affine=True), nn.Flatten(), nn.LayerNorm(12 * 4 * 4),
                              nn.Linear(12 * 4 * 4, 5)).eval()
        inputs = torch.zeros(1, 3, 8, 8)
    else:
        model, inputs = build(name)
    import copy
    for seed in range(3):
        net = copy.deepcopy(model)
        traced = dg.trace(net, inputs)
        groups = dg.collect_groups(traced, ignored=[], protected=list(traced.outputs), num_heads={})
        groups = [g for g in groups if not g.reaches and not g.unsupported and g.units >= 2]
        dg.score_groups(groups, tp.importance.RandomImportance())
        plan = _plans(groups, seed)
        try:
            removed = dg.check_plan(traced, groups, plan)
        except dg.PruneError:
            continue  # random plans may break a grouped conv; not what this test is about
        predicted = CostModel(net, what, inputs, None, {}, dg.pooling_costs(traced.graph)).predict(removed)
        dg.apply_plan(traced, groups, plan)
        assert predicted == measure(net, what, inputs, None)


# --- trained networks: keep_residual and trained= -------------------------------------------------

def stream_widths(m):
    """Widths of the residual streams: the stem and each block's last conv (and shortcut conv)."""
    return [c.out_channels for n, c in m.named_modules()
            if isinstance(c, nn.Conv2d) and (n == "conv1" or n.endswith(".conv2") or ".shortcut" in n)]


def inner_widths(m):
    return [c.out_channels for n, c in m.named_modules() if isinstance(c, nn.Conv2d) and n.endswith(".conv1") and "." in n]


def test_keep_residual_prunes_only_inside_the_blocks(r20):
    pruned = prune(r20, 0.5, keep_residual=True)
    assert stream_widths(pruned) == stream_widths(r20)
    assert inner_widths(pruned) == [w // 2 for w in inner_widths(r20)]
    everything = prune(r20, 0.5)
    assert stream_widths(everything) == [w // 2 for w in stream_widths(r20)]
    # the same as ignoring the stream layers by name
    by_name = prune(r20, 0.5, ignore=("conv1", "layer*.*.conv2", "layer*.*.shortcut"))
    assert_same(pruned, by_name)


def test_keep_residual_finds_additions_in_any_model():
    class Plain(nn.Module):  # no addition: nothing is a residual stream
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3), nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(self.b(self.a(x).relu()).mean((2, 3)))

    class Residual(Plain):  # b's output is added to a's: a and b share one stream
        def forward(self, x):
            h = self.a(x).relu()
            return self.fc((h + nn.functional.pad(self.b(h), (1, 1, 1, 1))).mean((2, 3)))

    torch.manual_seed(0)
    plain, res = Plain().eval(), Residual().eval()
    assert widths(prune(plain, 0.5, keep_residual=True)) == [8, 8]
    res.load_state_dict(plain.state_dict())
    assert widths(prune(res, 0.5)) == [8, 8]
    assert widths(prune(res, 0.5, keep_residual=True)) == [16, 16]  # a and b are one stream: kept


def test_trained_defaults(r20):
    from compress.transforms.prune import TRAINED
    assert TRAINED == {"ranking": "global", "importance": "l2", "keep_residual": True}
    budget = compress.count_flops(r20) // 2
    with pytest.deprecated_call():  # the old flag: PruneConfig.trained() replaced it
        a = prune(r20, target_flops=budget, trained=True)
    assert_same(a, prune(r20, compress.PruneConfig.trained(), target_flops=budget))
    b = prune(r20, target_flops=budget, ranking="global", importance="l2", keep_residual=True)
    assert_same(a, b)
    assert stream_widths(a) == stream_widths(r20) and len(set(inner_widths(a))) > 1  # global: uneven widths
    # what is given explicitly wins over the preset
    c = prune(r20, 0.5, preset="trained", ranking="local", keep_residual=False)
    assert_same(c, prune(r20, 0.5, importance="l2"))
    # without trained=, the untrained defaults: local L1, streams pruned
    assert_same(prune(r20, 0.5), prune(r20, 0.5, ranking="local", importance="l1", keep_residual=False))


@pytest.mark.parametrize("kwargs, match", [
    ({"trained": "yes"}, "trained must be True or False"),
    ({"keep_residual": 1}, "keep_residual must be True or False"),
])
def test_trained_options_are_checked(r20, kwargs, match):
    with pytest.raises(TypeError, match=match):
        prune(r20, 0.5, **kwargs)
