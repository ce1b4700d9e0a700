"""The options the ``fast`` schedule is built from: decoupled per-1024 SGD, BatchNorm-bias learning rate,
frozen BatchNorm weights, the linear warm-up/decay schedule, Lookahead on a ramp, alternating flips,
reflect-padded translation and test-time augmentation levels. Each test can fail on a wrong formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.data import synthetic
from compress.models import ResNet, ResNetConfig
from compress.recipes import FAST_TRAIN
from compress.training import Lookahead, TrainConfig, build_optimizer, build_scheduler, train
from compress.training.augment import alternating_flip, build_augment, flip_phase, translate, tta_logits
from compress.training.config import AugmentStep, LookaheadConfig, OptimizerConfig, ScheduleConfig


def _pattern(n: int, size: int = 8) -> torch.Tensor:
    """Images whose pixels are all distinct within an image and whose first pixel names the image."""
    base = torch.arange(3 * size * size).reshape(1, 3, size, size) % 200 + 50
    return (base + torch.zeros(n, 1, 1, 1, dtype=torch.long)).to(torch.uint8)


# ---- alternating flip --------------------------------------------------------------------------
def test_alternating_flip_mirrors_each_image_in_exactly_every_other_epoch():
    n = 2000
    x = _pattern(n)
    index = torch.randperm(50_000)[:n]
    flipped = []
    for epoch in range(4):
        out = alternating_flip(x, index, epoch, seed=3)
        is_flipped = (out == x.flip(3)).flatten(1).all(1)
        assert bool(((out == x).flatten(1).all(1) | is_flipped).all())  # only ever the image or its mirror
        flipped.append(is_flipped)
    for a, b in zip(flipped, flipped[1:]):
        assert bool((a != b).all())  # every image changes orientation from one epoch to the next
    assert 0.45 < flipped[0].float().mean().item() < 0.55  # the phases are a fair split
    # the phase belongs to the image (its index), not to its place in the batch, and the seed changes it
    shuffled = torch.randperm(n)
    assert torch.equal(alternating_flip(x[shuffled], index[shuffled], 0, seed=3), alternating_flip(x, index, 0, seed=3)[shuffled])
    assert (flip_phase(index, 3) != flip_phase(index, 4)).float().mean() > 0.3


def test_alternating_flip_in_a_pipeline_needs_the_indices():
    aug = build_augment([AugmentStep("alternating_flip")])
    x = _pattern(10)
    with pytest.raises(ValueError, match="needs the batch's training-set indices"):
        aug(x)
    assert torch.equal(aug(x, torch.arange(10), 0), alternating_flip(x, torch.arange(10), 0))


# ---- translate ---------------------------------------------------------------------------------
def test_translate_is_a_reflect_padded_shift_of_at_most_the_given_pixels():
    torch.manual_seed(0)
    n, p = 300, 2
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)
    out = translate(x, p)
    padded = F.pad(x.float(), (p,) * 4, mode="reflect")
    shifts = set()
    for i in range(n):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8], out[i].float())]
        assert hits, f"image {i} is not a reflect-padded shift of at most {p} pixels"
        shifts.add(hits[0])
    assert len(shifts) == (2 * p + 1) ** 2  # every shift occurs
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_translate_refuses_a_shift_reflection_cannot_fill():
    with pytest.raises(ValueError, match="too far"):
        translate(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 4)


# ---- decoupled SGD -----------------------------------------------------------------------------
def _run(cfg: OptimizerConfig, batch: int, examples: int, grad: float = 0.0) -> float:
    """One weight (1.0) after ``examples`` examples in batches of ``batch``, with a constant gradient."""
    w = nn.Parameter(torch.ones(1))
    opt = build_optimizer([w], cfg, batch)
    for _ in range(examples // batch):
        opt.zero_grad()
        (w.sum() * grad).backward() if grad else (w.sum() * 0.0).backward()
        opt.step()
    return float(w.detach())


def test_decoupled_weight_decay_shrinks_weights_alike_for_two_batch_sizes():
    decoupled = OptimizerConfig(lr=1.0, momentum=0.0, weight_decay=0.01, decoupled=True)
    a, b = _run(decoupled, 256, 1024), _run(decoupled, 512, 1024)
    assert a == pytest.approx(0.99, abs=1e-4) and b == pytest.approx(0.99, abs=1e-4)  # 1% per 1024 examples
    assert abs(a - b) < 2e-5
    coupled = OptimizerConfig(lr=0.1, momentum=0.0, weight_decay=0.01)  # torch's own: the decay is per step
    assert abs(_run(coupled, 256, 1024) - _run(coupled, 512, 1024)) > 1e-3


def test_decoupled_step_size_does_not_depend_on_batch_size_or_momentum():
    # a constant gradient 1: after 1000 x 1024 examples the weight has moved lr per 1024 examples
    moves = [1.0 - _run(OptimizerConfig(lr=0.001, momentum=m, nesterov=True, weight_decay=0.0, decoupled=True), b,
                        1_024_000, grad=1.0)
             for b in (256, 1024) for m in (0.5, 0.9)]
    for move in moves:
        assert move == pytest.approx(1.0, rel=0.015)  # 1000 * 0.001, less momentum's warm-up (<= 10 steps)
    plain = [1.0 - _run(OptimizerConfig(lr=0.001, momentum=m, nesterov=True, weight_decay=0.0), 256, 102_400, grad=1.0)
             for m in (0.5, 0.9)]
    assert plain[1] > 4 * plain[0]  # torch's own SGD: momentum 0.9 moves 5x as far as 0.5


def test_decoupled_is_for_sgd_only():
    with pytest.raises(ValueError, match="decoupled"):
        OptimizerConfig(name="adam", decoupled=True)


def test_batchnorm_biases_get_their_own_learning_rate_and_frozen_weights_are_left_out():
    model = ResNet(ResNetConfig.uniform((8,), (1,), (1,)))
    model.conv1.weight.requires_grad_(False)
    opt = build_optimizer(model, OptimizerConfig(lr=0.1, weight_decay=1e-3, bias_lr_scale=16.0))
    rest, biases = opt.param_groups
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in biases["params"]} == bn_biases
    assert biases["lr"] == pytest.approx(1.6) and rest["lr"] == pytest.approx(0.1)
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(rest["lr"] * rest["weight_decay"])
    listed = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.conv1.weight) not in listed
    assert listed | {id(model.conv1.weight)} == {id(p) for p in model.parameters()}


# ---- schedule ----------------------------------------------------------------------------------
def test_linear_schedule_warms_up_then_decays_linearly():
    w = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([w], lr=2.0)
    sched = build_scheduler(opt, ScheduleConfig(name="linear", pct_start=0.2, start_factor=0.2, end_factor=0.1,
                                                interval="step"), epochs=10, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.4)  # 0.2 x the peak
    assert lrs[20] == pytest.approx(2.0) and max(lrs) == pytest.approx(2.0)
    assert lrs[10] == pytest.approx((0.4 + 2.0) / 2)
    assert lrs[60] == pytest.approx(2.0 + (0.2 - 2.0) * 40 / 80)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # end_factor x the peak after the last step


# ---- lookahead ramp ----------------------------------------------------------------------------
def test_lookahead_ramp_starts_as_plain_training_and_ends_at_alpha():
    w = nn.Parameter(torch.zeros(1))
    la = Lookahead(torch.optim.SGD([w], lr=1.0), k=5, alpha=0.25, ramp=3.0, total_steps=100)
    assert la.alpha_at(0) == 1.0 and la.alpha_at(100) == pytest.approx(0.25)
    assert la.alpha_at(50) == pytest.approx(1 - 0.75 * 0.125)
    for _ in range(5):  # at step 5 alpha is ~1: the slow weights jump to the fast ones
        la.zero_grad()
        (-w.sum()).backward()
        la.step()
    assert float(la.slow[0]) == pytest.approx(5.0, rel=1e-3)
    for _ in range(3):  # three fast steps past the last update; finish() makes one more
        la.zero_grad()
        (-w.sum()).backward()
        la.step()
    slow = float(la.slow[0])
    assert float(w.detach()) == pytest.approx(slow + 3)
    la.finish()
    assert float(w.detach()) == float(la.slow[0]) == pytest.approx(slow + la.alpha_at(8) * 3)


def test_lookahead_over_buffers_averages_and_resets_batchnorm_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=1.0))  # running mean = the last batch's mean
    cfg = LookaheadConfig(k=2, alpha=0.25, buffers=True)
    la = Lookahead.from_config(torch.optim.SGD(net.parameters(), lr=0.0), cfg, 10, net)  # lr 0: only the stats move
    start = net[1].running_mean.clone()
    batch = torch.randn(8, 3, 4, 4) + 3.0
    with torch.no_grad():
        batch_mean = net[0](batch).mean((0, 2, 3))
    for x in (torch.randn(8, 3, 4, 4), batch):
        net(x).sum().backward()
        la.step()
    expected = start + 0.25 * (batch_mean - start)  # at step 2: a quarter of the way, and the model reset to it
    assert torch.allclose(net[1].running_mean, expected, atol=1e-5) and torch.allclose(la.slow_buffers[0], expected, atol=1e-5)
    assert not torch.allclose(net[1].running_mean, batch_mean, atol=1e-3)
    plain = Lookahead.from_config(torch.optim.SGD(net.parameters(), lr=0.0), LookaheadConfig(k=2, alpha=0.25), 10, net)
    for x in (batch, batch):  # without buffers the statistics follow the fast weights only
        net(x).sum().backward()
        plain.step()
    assert plain.slow_buffers == [] and torch.allclose(net[1].running_mean, batch_mean, atol=1e-5)
    with pytest.raises(ValueError, match="buffers"):
        LookaheadConfig(buffers="yes")
    with pytest.raises(ValueError, match="needs the model"):
        Lookahead.from_config(torch.optim.SGD(net.parameters(), lr=0.0), cfg, 10)


# ---- TTA ---------------------------------------------------------------------------------------
class _Linear(nn.Module):
    """A fixed linear map of the pixels: no symmetry, so each view gives its own logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(10, 3 * 8 * 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.t()


def test_tta_levels_average_the_views_they_name():
    net, x = _Linear(), torch.randn(4, 3, 8, 8)
    assert torch.allclose(tta_logits(net, x, "none"), net(x))
    mirror = (net(x) + net(x.flip(3))) / 2
    assert torch.allclose(tta_logits(net, x, "mirror"), mirror)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [padded[:, :, :8, :8], padded[:, :, 2:, 2:]]
    shifted = sum((net(v) + net(v.flip(3))) / 2 for v in views) / 2
    assert torch.allclose(tta_logits(net, x, "mirror_translate"), mirror / 2 + shifted / 2, atol=1e-5)
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        tta_logits(net, x, "five_crop")


def test_tta_flip_is_the_older_spelling_of_tta_mirror():
    assert TrainConfig(tta_flip=True).tta_level == "mirror" and TrainConfig(tta_flip=True).tta_passes == 2
    assert TrainConfig(tta="mirror_translate").tta_passes == 6
    with pytest.raises(ValueError, match="tta_flip"):
        TrainConfig(tta_flip=True, tta="mirror_translate")


# ---- the trainer with them -----------------------------------------------------------------------
def _tiny() -> ResNet:
    return ResNet(ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))


def test_frozen_batchnorm_weights_stay_at_one_while_the_biases_train():
    cfg = TrainConfig.from_dict({"epochs": 1, "batch_size": 64, "freeze_bn_weights": True})
    result = train(_tiny(), synthetic(256, 64, size=16), cfg, device="cpu", progress=False)
    bns = [m for m in result.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    assert any(m.bias.abs().max() > 0 for m in bns)


def test_the_fast_schedule_trains_and_records_its_tta_level():
    cfg = TrainConfig.from_dict({**FAST_TRAIN, "epochs": 2, "batch_size": 64})
    assert cfg.optimizer.decoupled and cfg.tta_level != "none"
    result = train(_tiny(), synthetic(512, 128, size=16), cfg, device="cpu", progress=False)
    assert result.tta == cfg.tta_level and result.to_dict()["tta"] == cfg.tta_level
    assert result.test_acc > 0.5  # synthetic data is learnt in a few steps
    assert math.isfinite(result.test_loss)


def test_new_fields_at_their_defaults_leave_config_dicts_as_they_were():
    d = TrainConfig().to_dict()
    for key in ("tta", "freeze_bn_weights"):
        assert key not in d
    assert "decoupled" not in d["optimizer"] and "bias_lr_scale" not in d["optimizer"]
    assert "start_factor" not in d["schedule"]
    assert TrainConfig.from_dict(d) == TrainConfig()
    assert TrainConfig(tta="mirror").to_dict()["tta"] == "mirror"


def test_tta_at_the_end_only_measures_the_returned_model_once(tmp_path):
    import compress

    data = synthetic(256, 96, size=16)
    cfg = TrainConfig.from_dict({"epochs": 2, "batch_size": 64, "amp": "none", "tta": "mirror_translate",
                                 "tta_epochs": "last"})
    result = train(_tiny(), data, cfg, device="cpu", progress=False, out_dir=tmp_path)
    last = result.history[-1]
    assert "test_acc_tta" in last and "test_acc_tta" not in result.history[0]
    assert result.test_acc == last["test_acc_tta"]
    again = compress.evaluate(result.model, data, tta="mirror_translate", progress=False)
    assert again.accuracy == pytest.approx(result.test_acc, abs=1e-9)
    plain = compress.evaluate(result.model, data, progress=False)
    assert plain.accuracy == pytest.approx(last["test_acc"], abs=1e-9)  # each epoch's own row is without TTA
    resumed = train(_tiny(), data, cfg, device="cpu", progress=False, out_dir=tmp_path, resume=True)
    assert resumed.test_acc == result.test_acc  # a finished run's stored result


def test_tta_at_the_end_measures_the_epoch_chosen_on_validation():
    import compress

    data = synthetic(320, 96, size=16)
    cfg = TrainConfig.from_dict({"epochs": 3, "batch_size": 64, "amp": "none", "tta": "mirror",
                                 "tta_epochs": "last", "val_split": {"size": 64}})
    result = train(_tiny(), data, cfg, device="cpu", progress=False)
    again = compress.evaluate(result.model, data, tta="mirror", progress=False)
    assert again.accuracy == pytest.approx(result.test_acc, abs=1e-9)
    assert result.test_acc == result.history[-1]["test_acc_tta"]
