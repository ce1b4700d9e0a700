"""Sparse learning before the cut (compress.prune_trained, compress.transforms.prune.sparse.Regularizer)
and the trainer's after_backward hook: tiny ResNets, synthetic data, CPU, seconds."""

from __future__ import annotations

import json

import pytest
import torch
import torch_pruning as tp
from torch import nn

import compress
from compress.data import synthetic
from compress.models import ResNet, ResNetConfig
from compress.training.prune_trained import SparseConfig, prune_trained
from compress.training import TrainConfig, train
from compress.transforms.prune import engine
from compress.transforms.prune.sparse import Regularizer

from conftest import SHARED_WEIGHTS, assert_unchanged, needs_shared, snapshot

SIZE = (1, 3, 16, 16)
CUT = compress.PruneConfig.trained(input_size=SIZE)
#: plain SGD (no momentum, no weight decay) so that what moves the weights is the loss and the regulariser
PLAIN = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}}


def tiny() -> ResNet:
    torch.manual_seed(0)
    return ResNet(ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))


@pytest.fixture(scope="module")
def data():
    return synthetic(256, 64, size=16, seed=0)


def group_norms(model: nn.Module, config: compress.PruneConfig = CUT) -> dict[str, torch.Tensor]:
    """Per channel of every group prune may cut: the group's L2 norm (all its coupled layers)."""
    s = engine.setup(model, config)
    state = engine.start(s)
    targets = engine.target_groups(s, state)
    imp = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    return {g.key: imp(g.tp_group).detach() for g in state.groups if g.key in targets}


def test_the_regulariser_drives_the_targeted_groups_norms_down(data):
    model = tiny()
    before = group_norms(model)
    plain = train(model, data, PLAIN, device="cpu", progress=False, max_steps_per_epoch=4)
    reg = Regularizer(CUT, reg=0.5)
    sparse = train(model, data, PLAIN, device="cpu", progress=False, max_steps_per_epoch=4, after_backward=reg)
    assert reg.steps == 8 and sorted(reg.groups) == sorted(before) == ["layer1.0.conv1", "layer2.0.conv1"]
    without, with_reg = group_norms(plain.model), group_norms(sparse.model)
    for key, b in before.items():
        weak = b <= b.median()  # the weaker half of the group's channels
        # without the regulariser the norms hardly move; with it the weak channels lose most of theirs
        assert (without[key][weak] / b[weak]).mean() > 0.8
        assert (with_reg[key][weak] / b[weak]).mean() < 0.5 * (without[key][weak] / b[weak]).mean()
        assert with_reg[key].sum() < without[key].sum()
    # the groups prune leaves alone (residual streams, the classifier) are not regularised: their
    # weights stay where training without the regulariser puts them, within the training noise
    a, b = dict(plain.model.named_parameters()), dict(sparse.model.named_parameters())
    assert torch.allclose(a["linear.weight"], b["linear.weight"], atol=0.05)


def test_the_cut_after_sparse_learning_removes_the_channels_the_regulariser_shrank_most(data):
    model = tiny()
    before = group_norms(model)
    local = CUT.replace(ranking="local")
    budget = compress.count_flops(model, SIZE) * 3 // 4
    pruned, result = prune_trained(model, data, target_flops=budget, prune_config=local, device="cpu", progress=False,
                                   sparse=SparseConfig(epochs=2, reg=0.5, train=PLAIN), max_steps_per_epoch=4)
    after = group_norms(result.sparse.model)
    regularised = dict(result.sparse.model.named_modules())
    cut = dict(pruned.named_modules())
    for key in before:
        full, kept = regularised[key].weight, cut[key].weight
        removed = [i for i in range(full.shape[0]) if not any(torch.equal(full[i], k) for k in kept)]
        assert 0 < len(removed) < full.shape[0]
        shrink = after[key] / before[key]
        # exactly the channels the regulariser shrank most are gone (and they are the weakest after it)
        assert sorted(removed) == sorted(torch.argsort(shrink)[:len(removed)].tolist())
        assert sorted(removed) == sorted(torch.argsort(after[key])[:len(removed)].tolist())


def test_prune_trained_hits_the_flop_budget_rounded_and_leaves_its_input_alone(data):
    model = tiny()
    snap = snapshot(model)
    budget = compress.count_flops(model, SIZE) // 2
    pruned, result = prune_trained(model, data, target_flops=budget, prune_config=CUT.replace(round_to=4),
                                   sparse=SparseConfig(epochs=1), finetune=PLAIN, distill=True, device="cpu",
                                   progress=False, max_steps_per_epoch=2)
    assert_unchanged(model, snap)
    assert result.flops == compress.count_flops(pruned, SIZE) <= budget and result.speedup >= 2
    assert result.flops_before == compress.count_flops(model, SIZE) and result.params == compress.count_params(pruned)
    assert result.sparse.epochs_run == 1 and result.finetune.epochs_run == 2 and not pruned.training
    assert all(pruned.get_submodule(k).out_channels % 4 == 0 for k in result.regularized)
    assert result.to_dict()["speedup"] == result.speedup
    # the sparse phase ran without weight decay and without distillation, the fine-tuning with it
    assert result.sparse.history[0].get("lr") is not None and SparseConfig().train_config(
        TrainConfig.from_dict({**PLAIN, "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 1e-4}})).optimizer.weight_decay == 0


def test_growing_regularisation_grows_its_penalty(data):
    reg = Regularizer(CUT, method="growing_reg", reg=1e-3, delta_reg=1e-2, update_every=2)
    train(tiny(), data, PLAIN, device="cpu", progress=False, max_steps_per_epoch=3, after_backward=reg)
    penalties = [p for p in reg._pruner.group_reg.values()]
    assert reg.steps == 6 and all(p.max() > 1e-3 for p in penalties)  # 3 updates grew it past its start


class _Recorder:
    """An after_backward hook that remembers what it was given (and can zero the gradients)."""

    def __init__(self, zero: bool = False) -> None:
        self.nets: list[nn.Module] = []
        self.zero = zero

    def __call__(self, net: nn.Module) -> None:
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
        self.nets.append(net)
        if self.zero:
            for p in net.parameters():
                p.grad.zero_()


def test_after_backward_sees_the_real_model_under_ema_lookahead_and_distillation(data):
    model = tiny()
    hook = _Recorder()
    cfg = {**PLAIN, "ema": 0.9, "lookahead": {"k": 2, "alpha": 0.5}, "distill": {"temperature": 2.0}}
    train(model, data, cfg, device="cpu", progress=False, max_steps_per_epoch=3, teacher=model, after_backward=hook)
    assert len(hook.nets) == 6 and all(n is hook.nets[0] for n in hook.nets)
    assert type(hook.nets[0]) is ResNet and hook.nets[0] is not model
    # what the hook does to the gradients is what the optimizer applies: zeroed gradients, no change
    zeroed = train(model, data, PLAIN, device="cpu", progress=False, max_steps_per_epoch=2, after_backward=_Recorder(zero=True))
    moved = {k for k, v in zeroed.model.state_dict().items() if v.is_floating_point() and not torch.equal(v, model.state_dict()[k])}
    assert moved and all("running" in k for k in moved)  # only batch-norm statistics changed


def test_after_backward_runs_at_every_step_of_a_resumed_run(data, tmp_path):
    class Killed(Exception):
        pass

    def dies_after_3(net: nn.Module) -> None:
        calls.append(1)
        if len(calls) == 4:
            raise Killed

    calls: list[int] = []
    with pytest.raises(Killed):
        train(tiny(), data, PLAIN, out_dir=tmp_path, device="cpu", progress=False, max_steps_per_epoch=3,
              checkpoint_every_s=0, after_backward=dies_after_3)
    rest = _Recorder()
    result = train(tiny(), data, PLAIN, out_dir=tmp_path, resume=True, device="cpu", progress=False,
                   max_steps_per_epoch=3, checkpoint_every_s=0, after_backward=rest)
    assert len(calls) - 1 + len(rest.nets) == 6 and result.epochs_run == 2


@pytest.mark.parametrize("make, match", [
    (lambda: SparseConfig(method="lasso"), "method must be one of"),
    (lambda: SparseConfig(epochs=0), "sparse epochs must be a positive integer"),
    (lambda: SparseConfig(reg=-1.0), "reg must be a number >= 0"),
    (lambda: SparseConfig(update_every=0), "update_every must be a positive"),
    (lambda: SparseConfig(train={"epochs": 1, "nope": 1}), "nope"),
    (lambda: SparseConfig.from_dict({"epoch": 3}), "unknown key 'epoch'"),
    (lambda: Regularizer("trained"), "prune must be a PruneConfig"),
    (lambda: prune_trained(tiny(), synthetic(8, 8, size=16)), "needs a budget"),
    (lambda: prune_trained(tiny(), synthetic(8, 8, size=16), target_flops=10, distill=True), "give finetune= too"),
    (lambda: prune_trained(tiny(), synthetic(8, 8, size=16), target_flops=10, sparse={"epochs": 1}), "sparse must be a SparseConfig"),
    (lambda: prune_trained("model", synthetic(8, 8, size=16), target_flops=10), "takes an nn.Module"),
    (lambda: prune_trained(tiny(), synthetic(8, 8, size=16), target_flops=10, sparse=SparseConfig()), "needs a training setup"),
    (lambda: train(tiny(), synthetic(8, 8, size=16), PLAIN, after_backward=3), "after_backward must be a callable"),
    (lambda: Regularizer(CUT.replace(ignore=("layer1", "layer2")))(tiny()), "leaves no group to regularise"),
])
def test_bad_inputs_give_one_line_errors(make, match):
    with pytest.raises((TypeError, ValueError)) as e:
        make()
    assert match in str(e.value) and "\n" not in str(e.value)


# --- the recipe section -----------------------------------------------------------------------------
from compress import bench, recipes  # noqa: E402
from compress.recipes import RecipeError  # noqa: E402

from test_trained_recipes import _recipe, ckpt  # noqa: E402,F401 - the small checkpoint fixture


def test_a_recipe_sparse_section_learns_before_its_prune_step(ckpt):  # noqa: F811
    folder = ckpt.parent.parent / "recipes-sparse"
    start = compress.models.from_checkpoint(ckpt)
    budget = compress.count_flops(start) // 2
    step = [{"prune": {"target_flops": budget, "round_to": 4}}]
    r = recipes.load(_recipe(folder, ckpt, name="sparse", model=step, sparse={"epochs": 1, "reg": 0.5}))
    plain = recipes.load(_recipe(folder, ckpt, name="plain", model=step))
    assert r.sparse == SparseConfig(epochs=1, reg=0.5) and plain.sparse is None
    assert r.fingerprint() != plain.fingerprint()
    out = ckpt.parent.parent / "run-sparse"
    rows = bench.run([r], out, synthetic(64, 32), budget="fast", epochs=1, max_steps_per_epoch=2, device="cpu",
                     progress=False, log=lambda s: None)
    learned = out / "sparse" / "sparse"
    assert (learned / "checkpoint.pt").is_file() and json.loads((learned / "result.json").read_text())["epochs_run"] == 1
    row = rows[0]
    assert row["flops"] <= budget and row["epochs_run"] == 1 and row["accuracy_before"] is not None
    assert compress.load(out / "sparse" / "model.pt").config.widths == start.config.widths  # the trained preset: streams kept


@pytest.mark.parametrize("changes, match", [
    ({"weights": None, "fast": None, "train": {"epochs": 1}}, "give the recipe weights"),
    ({"model": [{"scale_width": {"factor": 0.5}}]}, "has none"),
    ({"sparse": {"epoch": 3}}, "unknown key 'epoch'"),
    ({"sparse": {"method": "lasso"}}, "method must be one of"),
])
def test_bad_sparse_sections_are_refused(ckpt, changes, match):  # noqa: F811
    with pytest.raises(RecipeError, match=match) as e:
        recipes.load(_recipe(ckpt.parent.parent / "recipes-bad", ckpt, **{"sparse": {"epochs": 1}, **changes}))
    assert "\n" not in str(e.value)


def test_a_finished_run_repeated_from_its_folder_gives_the_same_model_and_groups(data, tmp_path):
    kwargs = dict(target_flops=compress.count_flops(tiny(), SIZE) // 2, prune_config=CUT, device="cpu", progress=False,
                  sparse=SparseConfig(epochs=1, reg=0.1, train=PLAIN), finetune=PLAIN, max_steps_per_epoch=2,
                  out_dir=tmp_path)
    first, a = prune_trained(tiny(), data, **kwargs)
    again, b = prune_trained(tiny(), data, resume=True, **kwargs)  # both phases read back, nothing trained
    assert (tmp_path / "sparse" / "model.pt").is_file() and (tmp_path / "finetune" / "model.pt").is_file()
    assert a.regularized == b.regularized == ["layer1.0.conv1", "layer2.0.conv1"] and a.flops == b.flops
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())


@needs_shared
def test_the_published_resnet20_learns_sparsely_and_is_cut_past_2_13x():
    net = compress.models.from_checkpoint(SHARED_WEIGHTS["resnet20-12fca82f.th"]["path"])
    budget = int(compress.count_flops(net) / 2.13)
    pruned, result = prune_trained(net, synthetic(64, 16, seed=1), target_flops=budget,
                                   prune_config=compress.PruneConfig.trained(round_to=8),
                                   sparse=SparseConfig(epochs=1, train={**PLAIN, "batch_size": 32}), device="cpu",
                                   progress=False, max_steps_per_epoch=1)
    assert result.regularized == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]  # the blocks' inner convs
    assert result.flops == compress.count_flops(pruned) <= budget and result.speedup >= 2.13
    assert all(pruned.get_submodule(k).out_channels % 8 == 0 for k in result.regularized)


def test_under_fp16_the_hook_sees_unscaled_gradients(data, monkeypatch):
    from compress.training import trainer

    def biggest(record: list[float]):
        return lambda net: record.append(max(float(p.grad.abs().max()) for p in net.parameters() if p.grad is not None))

    plain, scaled = [], []
    train(tiny(), data, PLAIN, device="cpu", progress=False, max_steps_per_epoch=1, after_backward=biggest(plain))
    monkeypatch.setattr(trainer, "_AMP_ON_CPU", True)
    train(tiny(), data, {**PLAIN, "amp": "fp16"}, device="cpu", progress=False, max_steps_per_epoch=1,
          after_backward=biggest(scaled))
    assert len(scaled) == 2 and all(0.2 < s / p < 5 for s, p in zip(scaled, plain))  # not 65536 times larger
