"""PruneConfig: presets against the old trained= flag, the planner without a model, the one budget search
for both budget kinds, Torch-Pruning's names as a converter, and the errors for bad overrides."""

import dataclasses

import pytest
import torch
from torch import nn

import compress
from compress import PruneConfig, prune, recipes
from compress.transforms.prune import TRAINED
from compress.transforms.prune.plan import Planner, Slot, kept_channels
from compress.transforms.prune.search import smallest_ratio
from compress.transforms._depgraph import PruneError


from test_prune_modes import r20, widths  # noqa: F401 - r20 is a fixture (a CIFAR ResNet-20)


def assert_same(a, b):
    assert widths(a) == widths(b)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


# --- presets against the deprecated flag ---------------------------------------------------------------

def test_trained_preset_is_what_the_old_flag_did(r20):
    assert PruneConfig.trained() == PruneConfig(**TRAINED)
    assert PruneConfig.trained() == PruneConfig(ranking="global", importance="l2", keep_residual=True)
    budget = compress.count_flops(r20) // 2
    with pytest.warns(DeprecationWarning, match=r"PruneConfig\.trained\(\)"):
        old = prune(r20, target_flops=budget, trained=True)
    new = prune(r20, PruneConfig.trained(), target_flops=budget)
    assert_same(new, old)
    assert_same(prune(r20, PruneConfig.trained(target_flops=budget)), old)
    assert_same(prune(r20, target_flops=budget, preset="trained"), old)
    assert widths(new) != widths(prune(r20, target_flops=budget))  # the preset changes something


def test_trained_preset_in_sequential_mode_ranks_per_layer(r20):
    with pytest.warns(DeprecationWarning):
        old = prune(r20, 0.3, trained=True, mode="sequential")
    assert PruneConfig.trained(mode="sequential").ranking == "local"
    assert_same(prune(r20, 0.3, preset="trained", mode="sequential"), old)


def test_overrides_replace_config_fields_and_the_input_config_is_unchanged(r20):
    base = PruneConfig.trained()
    assert_same(prune(r20, base, ratios=0.5, ranking="local", keep_residual=False), prune(r20, 0.5, importance="l2"))
    assert base == PruneConfig.trained() and base.ratios is None
    assert base.replace(steps=2).steps == 2 and base.steps == 1


def test_untrained_default_is_the_plain_config(r20):
    assert PruneConfig.preset("untrained") == PruneConfig()
    assert_same(prune(r20, PruneConfig(ratios=0.5)), prune(r20, 0.5))


def test_config_is_frozen_and_checked_when_made():
    cfg = PruneConfig(ratios=0.5, ignore="layer1")
    assert cfg.ignore == ("layer1",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ratios = 0.3
    with pytest.raises(ValueError, match="ranking must be one of"):
        PruneConfig(ranking="best")
    with pytest.raises(TypeError, match="either ratios or a budget"):
        PruneConfig(ratios=0.5, target_params=10)
    with pytest.raises(ValueError, match="unknown prune preset 'fresh'; presets: untrained, trained"):
        PruneConfig.preset("fresh")


# --- the deprecation and the unknown names -----------------------------------------------------------

def test_trained_flag_warns_and_still_works(r20):
    with pytest.warns(DeprecationWarning, match=r"deprecated: pass PruneConfig\.trained\(\)"):
        prune(r20, 0.25, trained=True)
    with pytest.raises(TypeError, match="trained must be True or False"):
        prune(r20, 0.25, trained="yes")


def test_unknown_override_names_the_accepted_ones(r20):
    with pytest.raises(TypeError) as e:
        prune(r20, 0.5, ratio=0.3)
    msg = str(e.value)
    assert "\n" not in msg and "'ratio'" in msg
    assert all(name in msg for name in ("ratios", "importance", "target_flops", "preset", "pruning_ratio"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'stepz'; accepted: ratios, importance"):
        PruneConfig().replace(stepz=2)
    with pytest.raises(TypeError, match="a PruneConfig or preset=, not both"):
        prune(r20, PruneConfig(ratios=0.5), preset="trained")
    with pytest.raises(TypeError, match="ratios twice"):
        prune(r20, 0.5, ratios=0.5)


# --- Torch-Pruning's vocabulary ------------------------------------------------------------------------

def test_from_torch_pruning_converts_to_compress_fields(r20):
    cfg = PruneConfig.from_torch_pruning(r20, pruning_ratio=0.3, global_pruning=True, max_pruning_ratio=0.5,
                                         iterative_steps=2, ignored_layers=[r20.layer3])
    assert cfg == PruneConfig(ratios=0.3, ranking="global", max_ratio=0.5, steps=2, ignore=("layer3",))
    assert PruneConfig.from_torch_pruning(r20, pruning_ratio=0.2, pruning_ratio_dict={r20.layer2: 0.5}).ratios == {
        "*": 0.2, "layer2": 0.5}
    assert_same(prune(r20, cfg), prune(r20, pruning_ratio=0.3, global_pruning=True, max_pruning_ratio=0.5,
                                       iterative_steps=2, ignored_layers=[r20.layer3]))
    with pytest.raises(TypeError, match="'prune_num_heads' is a Torch-Pruning option"):
        PruneConfig.from_torch_pruning(r20, prune_num_heads=True)


# --- the planner, without a model ----------------------------------------------------------------------

def test_planner_local_ratios_to_channel_counts():
    a = Slot("a", torch.tensor([0.5, 0.1, 0.9, 0.3]))
    b = Slot("b", torch.arange(10, dtype=torch.float))
    planner = Planner({"a": 4, "b": 10}, "local", 1.0, None)
    plan = planner.plan([a, b], {"a": (0.5, 0), "b": (0.3, 0)})
    assert plan == {"a": [1, 3], "b": [0, 1, 2]}  # the weakest go; int(n * (1 - r)) kept
    assert kept_channels([a, b], plan) == {"a": 2, "b": 7}
    rounded = Planner({"b": 10}, "local", 1.0, 4).plan([b], {"b": (0.3, 0)})
    assert kept_channels([b], rounded) == {"b": 4}  # 7 rounded down to a multiple of 4
    with pytest.raises(PruneError, match="a would keep no channel: ratio 0.9 of 4 channels"):
        planner.plan([a], {"a": (0.9, 0)})


def test_planner_global_ranking_takes_the_weakest_across_groups_within_max_ratio():
    strong = Slot("strong", torch.tensor([5.0, 6.0, 7.0, 8.0]))
    weak = Slot("weak", torch.tensor([0.1, 0.2, 0.3, 0.4]))
    planner = Planner({"strong": 4, "weak": 4}, "global", 1.0, None)
    plan = planner.plan([strong, weak], {"strong": (0.5, 0), "weak": (0.5, 0)})
    assert kept_channels([strong, weak], plan) == {"strong": 3, "weak": 1}  # never a group's last channel
    capped = Planner({"strong": 4, "weak": 4}, "global", 0.5, None)
    plan = capped.plan([strong, weak], {"strong": (0.5, 0), "weak": (0.5, 0)})
    assert kept_channels([strong, weak], plan) == {"strong": 2, "weak": 2}  # max_ratio 0.5: at most half of a group
    assert capped.fewest([strong, weak]) == {"strong": [0, 1], "weak": [0, 1]}


def test_planner_channel_groups_remove_whole_positions():
    g = Slot("g", torch.tensor([0.3, 0.1, 0.2, 0.4]), ch_groups=2)  # 4 units of 2 channels each
    plan = Planner({"g": 4}, "local", 1.0, None).plan([g], {"g": (0.5, 0)})
    assert plan == {"g": [1, 2]} and kept_channels([g], plan) == {"g": 4}


# --- one budget search for both kinds --------------------------------------------------------------------

def test_smallest_ratio_bisects_to_the_budget_and_reports_the_floor():
    def cost(r):  # 1000 params at ratio 0, shrinking with it; ratios above 0.8 empty a layer
        if r > 0.8:
            raise PruneError("empty")
        return f"model@{r:.3f}", int(1000 * (1 - r) ** 2)

    (result, c), floor = smallest_ratio(cost, 250, hi=1.0, tol=1e-4)
    assert c <= 250 and 0.49 < float(result.split("@")[1]) < 0.51
    best, floor = smallest_ratio(cost, 10, hi=1.0, tol=1e-4)
    assert best is None and floor[0] <= 0.8 and floor[1] == int(1000 * (1 - floor[0]) ** 2)


@pytest.mark.parametrize("kind", ["target_params", "target_flops"])
@pytest.mark.parametrize("mode", ["one-shot", "sequential"])
def test_both_budget_kinds_fit_in_both_modes(r20, kind, mode):
    count = compress.count_params if kind == "target_params" else compress.count_flops
    budget = count(r20) * 6 // 10
    m = prune(r20, PruneConfig(mode=mode), **{kind: budget})
    assert 0.8 * budget < count(m) <= budget


# --- recipes ---------------------------------------------------------------------------------------------

def _recipe(step):
    return {"name": "x", "source": "s", "model": [{"redistribute_blocks": {"blocks": [1, 1, 1, 1]}}, {"prune": step}],
            "train": {"epochs": 1}, "claims": {"params": 1}}


def test_recipe_prune_step_takes_a_preset_and_still_takes_trained():
    preset = recipes.from_mapping(_recipe({"ratios": 0.5, "preset": "trained"}))
    assert preset.model[1] == ("prune", {"ratios": 0.5, "preset": "trained"})
    torch.manual_seed(0)
    start = preset.initial_model()
    old = recipes.from_mapping(_recipe({"ratios": 0.5, "trained": True}))
    assert_same(preset.transform(start), old.transform(start))
    expected = prune(compress.redistribute_blocks(start, [1, 1, 1, 1]), PruneConfig.trained(ratios=0.5))
    assert_same(preset.transform(start), expected)


def test_recipe_prune_step_with_an_unknown_argument_fails_at_load():
    with pytest.raises(recipes.RecipeError, match="unknown argument 'ratio'; accepted arguments: ratios, importance"):
        recipes.from_mapping(_recipe({"ratio": 0.5}))
