"""The trainer on the CPU with tiny models and synthetic data: learning, config mapping, resume, NaN, outputs."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

import compress
from compress.data import synthetic
from compress.training import (
    Lookahead, NonFiniteLossError, TrainConfig, TrainResult, build_optimizer, build_scheduler, train,
)
from compress.training import trainer as trainer_module
from compress.training.config import OptimizerConfig, ScheduleConfig


def tiny_net(num_classes: int = 10, bn: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if bn else nn.Identity(), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def cfg(**kw) -> TrainConfig:
    # fp32 unless a test asks for amp: most tests here check exact maths (bf16 has its own tests below)
    base = {"epochs": 3, "batch_size": 32, "optimizer": {"lr": 0.2}, "eval_batch_size": 128, "amp": "none",
            "augment": [{"name": "random_crop", "params": {"padding": 1}}, {"name": "hflip"}]}
    base.update(kw)
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def data():
    return synthetic(256, 128, size=8, seed=0)


def test_learns_toy_task_and_leaves_caller_model_alone(data, tmp_path):
    model = tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = train(model, data, cfg(epochs=5), out_dir=tmp_path, progress=False)
    assert isinstance(r, TrainResult)
    assert r.history[-1]["train_loss"] < 0.5 * r.history[0]["train_loss"]
    assert r.test_acc > 0.8 and r.test_acc == r.history[-1]["test_acc"] and r.selected_epoch == 5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert r.epochs_run == 5 and not r.stopped_early and r.device == "cpu" and r.images_per_s > 0
    rows = json.loads((tmp_path / "history.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s", "images_per_s"}
    loaded, meta = compress.load(tmp_path / "model.pt", model=tiny_net(), with_metadata=True)
    assert meta["test_acc"] == r.test_acc
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), r.model.state_dict().values()))
    assert "model" not in r.to_dict() and json.dumps(r.to_dict())


class _Stop(Exception):
    pass


def test_on_epoch_sees_the_history_and_can_stop_the_run(data, tmp_path):
    seen: list[list[int]] = []

    def stop_after_two(rows):
        seen.append([r["epoch"] for r in rows])
        rows[-1]["test_acc"] = -1.0  # a copy: the trainer's history is not touched
        if len(rows) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train(tiny_net(), data, cfg(epochs=4), out_dir=tmp_path, progress=False, on_epoch=stop_after_two)
    assert seen == [[1], [1, 2]]
    written = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in written] == [1, 2] and all(r["test_acc"] >= 0 for r in written)
    # the checkpoint of the stopping epoch was written first: a resume continues after it, and the
    # callback then sees the epochs from before the resume too
    later: list[list[int]] = []
    r = train(tiny_net(), data, cfg(epochs=4), out_dir=tmp_path, progress=False, resume=True,
              on_epoch=lambda rows: later.append([x["epoch"] for x in rows]))
    assert later == [[1, 2, 3], [1, 2, 3, 4]] and r.epochs_run == 4


def test_val_split_selects_epoch_by_val_acc(data):
    r = train(tiny_net(), data, cfg(epochs=4, val_split={"size": 64, "seed": 0}), progress=False)
    vals = [row["val_acc"] for row in r.history]
    best = vals.index(max(vals))
    assert r.selected_epoch == best + 1 and r.test_acc == r.history[best]["test_acc"] and r.val_acc == max(vals)


_FULL = dict(
    epochs=3,
    augment=[{"name": "random_crop", "params": {"padding": 2}}, {"name": "hflip", "params": {"p": 0.5}},
             {"name": "cutout", "params": {"size": 3}}],
    optimizer={"name": "sgd", "lr": 0.05, "nesterov": True},
    schedule={"name": "cosine", "warmup_epochs": 0.5, "interval": "step"},
    mixup={"alpha": 0.3}, label_smoothing=0.1, clip={"norm": 2.0}, lookahead={"k": 3, "alpha": 0.5, "buffers": True},
    ema=0.9, val_split={"size": 32, "seed": 1}, tta_flip=True,
)


def test_resume_after_kill_reproduces_uninterrupted_run(data, tmp_path, monkeypatch):
    full = train(tiny_net(), data, cfg(**_FULL), out_dir=tmp_path / "a", progress=False, max_steps_per_epoch=4)

    real_save = trainer_module._save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # the process is killed right after epoch 2's checkpoint

    monkeypatch.setattr(trainer_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), data, cfg(**_FULL), out_dir=tmp_path / "b", progress=False, max_steps_per_epoch=4)
    monkeypatch.setattr(trainer_module, "_save_checkpoint", real_save)
    torch.manual_seed(1234)  # disturb global RNG: resume must restore it
    resumed = train(tiny_net(), data, cfg(**_FULL), out_dir=tmp_path / "b", resume=True, progress=False,
                    max_steps_per_epoch=4)

    strip = lambda h: [{k: v for k, v in row.items() if k not in ("epoch_time_s", "images_per_s")} for row in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.test_acc == full.test_acc and resumed.selected_epoch == full.selected_epoch
    ck_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    ck_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(v, ck_b["model"][k]) for k, v in ck_a["model"].items())

    # A finished run returns its stored result without training (and writes model.pt if it is missing).
    (tmp_path / "b" / "model.pt").unlink()
    monkeypatch.setattr(trainer_module, "_save_checkpoint", lambda *a: pytest.fail("a finished run trained again"))
    again = train(tiny_net(), data, cfg(**_FULL), out_dir=tmp_path / "b", resume=True, progress=False,
                  max_steps_per_epoch=4)
    assert again.test_acc == full.test_acc and strip(again.history) == strip(full.history)
    assert torch.equal(compress.load(tmp_path / "b" / "model.pt", model=tiny_net()).state_dict()["5.weight"],
                       full.model.state_dict()["5.weight"])
    with pytest.raises(ValueError, match="different config"):
        train(tiny_net(), data, cfg(**{**_FULL, "seed": 5}), out_dir=tmp_path / "b", resume=True, progress=False)


def test_resume_mid_epoch_reproduces_uninterrupted_run(data, tmp_path, monkeypatch):
    # checkpoint_every_s=0: a checkpoint after every step; the run is killed in the middle of epoch 2
    # (after its 2nd of 4 steps) and resumed: same history, weights and final checkpoint as a run that
    # was never interrupted (mixup, EMA, Lookahead, per-step schedule and val split all carry their state).
    kw = dict(progress=False, max_steps_per_epoch=4)
    full = train(tiny_net(), data, cfg(**_FULL), out_dir=tmp_path / "a", checkpoint_every_s=None, **kw)

    real_save, saved_at = trainer_module._save_checkpoint, []

    def save_then_die(path, state):
        real_save(path, state)
        saved_at.append((state["epoch"], state["step"]))
        if (state["epoch"], state["step"]) == (1, 2):
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), data, cfg(**_FULL), out_dir=tmp_path / "b", checkpoint_every_s=0, **kw)
    assert saved_at == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]  # every step; epoch ends as before
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["partial"]["ranks"][0]["seen"] == 2 * 32 and not ck["finished"]
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())) == 1  # history.json: epoch ends only

    monkeypatch.setattr(trainer_module, "_save_checkpoint", real_save)
    torch.manual_seed(4321)  # disturb global RNG: resume must restore it
    resumed = train(tiny_net(), data, cfg(**_FULL), out_dir=tmp_path / "b", resume=True, checkpoint_every_s=0, **kw)

    strip = lambda h: [{k: v for k, v in row.items() if k not in ("epoch_time_s", "images_per_s")} for row in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    ck_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    ck_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(v, ck_b["model"][k]) for k, v in ck_a["model"].items())
    assert ck_b["epoch"] == 3 and ck_b["step"] == 0 and ck_b["finished"]


def test_mid_epoch_checkpoint_refuses_another_layout(data, tmp_path, monkeypatch):
    real_save = trainer_module._save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["step"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), data, cfg(), out_dir=tmp_path, checkpoint_every_s=0, progress=False, max_steps_per_epoch=4)
    monkeypatch.setattr(trainer_module, "_save_checkpoint", real_save)
    with pytest.raises(ValueError, match="middle of an epoch of 4 steps by 1 process"):
        train(tiny_net(), data.subset(32 * 3), cfg(), out_dir=tmp_path, resume=True, progress=False, max_steps_per_epoch=4)


class _BlowsUp(nn.Module):
    """A tiny net whose output becomes NaN from its ``after``-th training forward on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.net = tiny_net()
        self.after, self.calls = after, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                out = out * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    steps = 4  # per epoch; NaN appears in epoch 3
    with pytest.raises(NonFiniteLossError, match="epoch 3") as e:
        train(_BlowsUp(2 * steps + 2), data, cfg(epochs=5), out_dir=tmp_path, progress=False, max_steps_per_epoch=steps)
    assert "last good checkpoint" in str(e.value)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and all(torch.isfinite(v.float()).all() for v in ck["model"].values())
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2


def test_early_stopping_on_train_loss(data):
    # lr 0: the loss never improves, so the run stops after `patience` epochs without improvement.
    r = train(tiny_net(), data, cfg(epochs=10, optimizer={"lr": 0.0, "weight_decay": 0.0},
                                    early_stopping={"metric": "train_loss", "patience": 2, "min_delta": 0.01}),
              progress=False, max_steps_per_epoch=2)
    assert r.stopped_early and r.epochs_run == 3
    with pytest.raises(ValueError, match="validation split"):
        train(tiny_net(), data, cfg(early_stopping={"metric": "val_acc"}), progress=False)


def test_clip_by_value_bounds_each_update(data):
    def max_change(clip):
        model = tiny_net()
        c = cfg(epochs=1, optimizer={"lr": 1.0, "momentum": 0.0, "weight_decay": 0.0}, augment=[],
                schedule={"name": "constant"}, clip=clip)
        r = train(model, data, c, progress=False, max_steps_per_epoch=1)
        return max((a - b).abs().max().item() for (n, a), b in zip(model.named_parameters(), r.model.parameters()))

    assert max_change({"value": 1e-3}) <= 1e-3 + 1e-7
    assert max_change(None) > 1e-2


def test_lookahead_matches_its_definition():
    w0 = torch.tensor([1.0, -2.0])
    p = nn.Parameter(w0.clone())
    la = Lookahead(torch.optim.SGD([p], lr=0.1), k=2, alpha=0.5)
    grads = [torch.tensor([1.0, 0.5]), torch.tensor([-2.0, 1.0]), torch.tensor([0.5, 0.5])]
    for g in grads:
        p.grad = g.clone()
        la.step()
    fast = w0 - 0.1 * grads[0] - 0.1 * grads[1]  # two fast steps
    slow = w0 + 0.5 * (fast - w0)  # k=2: slow moves half way, fast is reset to it
    expected = slow - 0.1 * grads[2]  # one more fast step from the slow weights
    assert torch.allclose(p.detach(), expected) and torch.allclose(la.slow[0], slow)
    state = la.state_dict()
    q = nn.Parameter(torch.zeros(2))
    la2 = Lookahead(torch.optim.SGD([q], lr=0.1), k=2, alpha=0.5)
    la2.load_state_dict(state)
    assert la2.steps == 3 and torch.equal(la2.slow[0], la.slow[0])


def _lrs(sched_cfg: dict, epochs: int, steps: int = 1, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    sched = build_scheduler(opt, ScheduleConfig(**sched_cfg), epochs, steps)
    out = []
    for _ in range(epochs * (steps if sched_cfg.get("interval") == "step" else 1)):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules():
    assert _lrs({"name": "cosine"}, 4) == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)])
    assert _lrs({"name": "step", "step_size": 2, "gamma": 0.1}, 5) == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert _lrs({"name": "cosine_restarts", "t_0": 2, "eta_min": 0.0}, 4) == pytest.approx([1, 0.5, 1, 0.5])
    warm = _lrs({"name": "cosine", "warmup_epochs": 1, "interval": "step"}, 3, steps=4)
    assert warm[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert warm[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])
    one = _lrs({"name": "onecycle", "pct_start": 0.25, "interval": "step"}, 2, steps=10)  # runs to the end
    assert max(one) == pytest.approx(1.0) and one[0] == pytest.approx(1 / 25) and one[-1] < 1e-3
    short = _lrs({"name": "onecycle", "pct_start": 0.25, "interval": "step"}, 2, steps=2)  # 1-step warm-up in torch
    assert len(short) == 4 and max(short) == pytest.approx(1.0)
    assert _lrs({"name": "constant"}, 3) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "opt,cls,check",
    [
        ({"name": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-4}, torch.optim.SGD,
         {"momentum": 0.8, "nesterov": True, "weight_decay": 1e-4}),
        ({"name": "adam", "lr": 1e-3, "betas": (0.8, 0.9), "eps": 1e-6}, torch.optim.Adam, {"betas": (0.8, 0.9), "eps": 1e-6}),
        ({"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}, torch.optim.AdamW, {"weight_decay": 0.05}),
        ({"name": "rmsprop", "lr": 1e-2, "alpha": 0.9, "momentum": 0.5}, torch.optim.RMSprop, {"alpha": 0.9, "momentum": 0.5}),
    ],
)
def test_optimizers_get_all_their_args(opt, cls, check):
    o = build_optimizer([nn.Parameter(torch.zeros(1))], OptimizerConfig(**opt))
    assert type(o) is cls and o.param_groups[0]["lr"] == opt["lr"]
    for k, v in check.items():
        assert o.param_groups[0][k] == v


def test_resnet_with_every_augmentation_runs(tmp_path):
    d = synthetic(64, 32, size=16, seed=1)
    model = compress.models.ResNet(compress.models.ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))
    c = cfg(epochs=1, batch_size=16, augment=[
        {"name": "random_crop"}, {"name": "hflip"}, {"name": "vflip", "params": {"p": 0.1}},
        {"name": "grayscale", "params": {"p": 0.2}}, {"name": "autoaugment", "params": {"group": 4}},
        {"name": "cutout", "params": {"size": 4}}])
    r = train(model, d, c, out_dir=tmp_path, progress=True, max_steps_per_epoch=2)
    assert math.isfinite(r.history[0]["train_loss"])
    assert compress.load(tmp_path / "model.pt").config == model.config


def test_amp_code_paths_run_on_cpu(data, monkeypatch):
    # On CUDA config.amp turns on autocast (and a GradScaler for fp16); run that same path on the CPU.
    monkeypatch.setattr(trainer_module, "_AMP_ON_CPU", True)
    for amp in ("fp16", "bf16"):
        r = train(tiny_net(), data, cfg(epochs=3, amp=amp, lookahead={"k": 2}, clip={"value": 1.0, "norm": 5.0}),
                  progress=False, max_steps_per_epoch=4)
        assert all(math.isfinite(row["train_loss"]) for row in r.history)
        assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


class _LeftVsRight(nn.Module):
    """Fixed 'model': class 0 scores the left half's brightness, class 1 the right half's."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1) + 0 * self.unused


def test_tta_flip_averages_logits_with_the_mirror_image():
    x = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    y = torch.arange(8) % 2
    x[y == 0, :, :, :2] = 200  # class 0: bright left half; class 1: bright right half
    x[y == 1, :, :, 2:] = 200
    d = compress.data.ImageData(x, y, x.clone(), y.clone(), ("left", "right"))
    c = dict(epochs=1, batch_size=4, augment=[], optimizer={"lr": 0.0, "weight_decay": 0.0}, channels_last=False)
    assert train(_LeftVsRight(), d, cfg(**c), progress=False).test_acc == 1.0
    # With the mirror image averaged in, both classes score the same: argmax picks class 0 for all.
    assert train(_LeftVsRight(), d, cfg(**c, tta_flip=True), progress=False).test_acc == 0.5


def test_label_smoothing_reaches_the_training_loss(data):
    from compress.training.augment import normalize

    model = tiny_net(bn=False)
    c = cfg(epochs=1, augment=[], label_smoothing=0.2, optimizer={"lr": 0.0, "weight_decay": 0.0}, channels_last=False)
    r = train(model, data, c, progress=False)
    with torch.no_grad():
        x = normalize(data.train_x, c.normalize.mean, c.normalize.std)
        expected = torch.nn.functional.cross_entropy(model(x), data.train_y, label_smoothing=0.2).item()
        plain = torch.nn.functional.cross_entropy(model(x), data.train_y).item()
    assert r.history[0]["train_loss"] == pytest.approx(expected, rel=1e-5) and abs(expected - plain) > 1e-3


def test_ema_matches_its_definition():
    from compress.training import EMA

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randn(4, 2))  # moves BN running statistics and the integer batch counter
    ema.update_parameters(model)
    for k, v in model.state_dict().items():
        got = ema.module.state_dict()[k]
        if v.is_floating_point():
            assert torch.allclose(got, 0.9 * start[k] + 0.1 * v), k
        else:
            assert torch.equal(got, v), k
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_compile_matches_eager(tmp_path):
    # config.compile wraps the forward in torch.compile (inductor, here on the CPU); the run must match the
    # eager one and save the plain module (loadable with compress.load), not the compiled wrapper.
    data = synthetic(40, 16, seed=1)  # 40 = 2 full batches of 16 + a ragged one: the compiled graph sees two shapes
    model = compress.models.ResNet(compress.models.ResNetConfig.uniform((8,), (1,), (1,)))
    setup = dict(epochs=2, batch_size=16, amp="none", channels_last=False, augment=[])
    eager = train(model, data, cfg(**setup), progress=False, device="cpu")
    compiled = train(model, data, cfg(**setup, compile=True), progress=False, device="cpu", out_dir=tmp_path)
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)  # float reordering only
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-3)
    ea, co = eager.model.state_dict(), compiled.model.state_dict()
    assert list(ea) == list(co)
    assert all(torch.allclose(ea[k].float(), co[k].float(), rtol=1e-3, atol=1e-3) for k in ea)  # float reordering only
    saved = compress.load(tmp_path / "model.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(saved(x), compiled.model(x), atol=1e-6)


def test_autocast_dtype_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert trainer_module.autocast_dtype("bf16", cuda) is torch.bfloat16
    assert trainer_module.autocast_dtype("fp16", cuda) is torch.float16
    assert trainer_module.autocast_dtype("none", cuda) is None and trainer_module.autocast_dtype("none", cpu) is None
    assert trainer_module.autocast_dtype("fp16", cpu) is None  # fp16 autocast on the CPU is slow: fp32 instead
    native = trainer_module._cpu_has_bf16()
    assert trainer_module.autocast_dtype("bf16", cpu) is (torch.bfloat16 if native else None)


def test_cpu_bf16_fast_path_trains_like_fp32(data):
    # The CPU fast path (bf16 autocast + channels_last) learns the toy task as well as plain fp32.
    fast = train(tiny_net(), data, cfg(epochs=6, amp="bf16", channels_last=True), progress=False)
    plain = train(tiny_net(), data, cfg(epochs=6, amp="none", channels_last=False), progress=False)
    native = trainer_module._cpu_has_bf16()
    assert fast.precision == {"autocast": "bf16" if native else "none", "channels_last": True, "compile": False,
                              "threads": torch.get_num_threads()}
    assert plain.precision["autocast"] == "none" and plain.precision["channels_last"] is False
    if native:  # bf16 really ran: the weights differ from the fp32 run's
        assert any(not torch.equal(a, b) for a, b in zip(fast.model.state_dict().values(), plain.model.state_dict().values()))
    assert fast.history[-1]["train_loss"] == pytest.approx(plain.history[-1]["train_loss"], rel=0.15)
    assert abs(fast.test_acc - plain.test_acc) <= 0.05 and fast.test_acc > 0.8


def test_resume_accepts_a_checkpoint_written_before_a_config_field_existed(data, tmp_path):
    # A checkpoint from an older version lacks fields added to TrainConfig since (at their defaults).
    c = cfg(epochs=2)
    first = train(tiny_net(), data, c, out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["config"]["tta_flip"], state["config"]["eval_batch_size"]  # eval_batch_size differs from default
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="different config"):  # a missing non-default setting is a different run
        train(tiny_net(), data, c, out_dir=tmp_path, resume=True, progress=False)
    state["config"]["eval_batch_size"] = c.eval_batch_size
    torch.save(state, tmp_path / "checkpoint.pt")
    again = train(tiny_net(), data, c, out_dir=tmp_path, resume=True, progress=False)
    assert again.test_acc == first.test_acc and again.history == first.history


@pytest.mark.parametrize("every_s, expected", [(1e9, [1, 4, 1, 4]), (0.0, [1, 2, 3, 4] * 2)])
def test_progress_updates_after_the_first_step_and_by_time(data, monkeypatch, every_s, expected):
    # A CPU step can take 20 s: the bar shows numbers after step 1, then every 20 steps or every
    # _PROGRESS_EVERY_S seconds, whichever comes first (here: never by time, or always).
    monkeypatch.setattr(trainer_module, "_PROGRESS_EVERY_S", every_s)
    real, steps = trainer_module._Progress.update, []

    def spy(self, epoch, n_epochs, step, *rest):
        steps.append(step)
        return real(self, epoch, n_epochs, step, *rest)

    monkeypatch.setattr(trainer_module._Progress, "update", spy)
    train(tiny_net(), data, cfg(epochs=2), progress=True, max_steps_per_epoch=4)
    assert steps == expected


def test_eta_counts_down_from_the_time_per_step():
    from types import SimpleNamespace

    task = SimpleNamespace(total=100, completed=10, fields={"per_step": 20.0, "at": 50.0})
    assert trainer_module._eta_text(task, now=50.0) == "ETA 0:30:00"  # 90 steps x 20 s
    assert trainer_module._eta_text(task, now=65.0) == "ETA 0:29:45"  # counting down between updates
    assert trainer_module._eta_text(SimpleNamespace(total=100, completed=0, fields={"per_step": None}), 0) == "ETA -:--:--"


def test_the_training_bar_fits_one_line_of_80_columns():
    # It used to need about 120: at 80 columns the total was cut ("4501/1…") and the ETA wrapped.
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    bar = trainer_module._progress_bar(console)
    bar.add_task("epoch 12/50", total=50 * 391, completed=4501, stats="loss 1.2346 acc 0.543 1,248 img/s",
                 per_step=0.5, at=0.0)
    console.print(bar.get_renderable())
    lines = console.file.getvalue().rstrip().splitlines()
    assert len(lines) == 1 and "4501/19550" in lines[0] and "ETA " in lines[0], lines


def test_over_epochs_lays_the_schedule_over_a_shorter_run():
    paper = TrainConfig.from_dict({"epochs": 200, "schedule": {"name": "cosine", "t_max": 200, "warmup_epochs": 10}})
    short = paper.over_epochs(20)
    assert short.epochs == 20 and short.schedule.t_max == 20 and short.schedule.warmup_epochs == pytest.approx(1.0)
    lrs = _lrs(dataclasses.asdict(short.schedule), 20)
    assert lrs[0] == pytest.approx(1.0) and lrs[-1] < 0.05  # anneals to ~0 by the end, as the full run does
    assert paper.over_epochs(200) is paper and paper.schedule.t_max == 200  # the original is untouched
    steps = TrainConfig.from_dict({"epochs": 300, "schedule": {"name": "step", "step_size": 5, "gamma": 0.95}})
    s = steps.over_epochs(30).schedule
    assert s.step_size == 1 and s.gamma ** 30 == pytest.approx(0.95 ** 60)  # the same total decay
    restarts = TrainConfig.from_dict({"epochs": 150, "schedule": {"name": "cosine_restarts", "t_0": 50}})
    assert restarts.over_epochs(15).schedule.t_0 == 5
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        paper.over_epochs(0)


def test_with_overrides_replaces_only_what_is_given():
    c = cfg()
    o = c.with_overrides(batch_size=8, lr=0.05)
    assert (o.batch_size, o.optimizer.lr, o.seed) == (8, 0.05, c.seed) and o.optimizer.momentum == c.optimizer.momentum
    assert c.with_overrides() == c and c.with_overrides(seed=4).seed == 4
    with pytest.raises(ValueError, match="lr must be > 0"):
        c.with_overrides(lr=0.0)


def _all_json_is_strict(folder) -> list[str]:
    """Names of the JSON files in ``folder``; each must parse as strict JSON (no NaN or Infinity)."""
    def refuse(token):
        raise AssertionError(f"{token} in a JSON file")

    names = []
    for p in sorted(folder.rglob("*.json")):
        json.loads(p.read_text(), parse_constant=refuse)
        names.append(p.name)
    return names


def test_one_diverged_epoch_is_not_a_measurement(data, tmp_path):
    """lr 1e6 for one step: the training loss before the step is fine, the weights and test loss explode.
    The run raises and writes no history, result or model (it used to report the epoch's accuracy)."""
    with pytest.raises(NonFiniteLossError) as e:
        train(tiny_net(), data, cfg(epochs=1, optimizer={"lr": 1e6}), out_dir=tmp_path, progress=False,
              max_steps_per_epoch=1)
    msg = str(e.value)
    assert "training diverged: test loss is" in msg and "no checkpoint was written" in msg and "\n" not in msg
    assert not any((tmp_path / n).exists() for n in ("history.json", "result.json", "model.pt", "checkpoint.pt"))


class _EvalBlowsUp(nn.Module):
    """A tiny net whose *evaluation* output becomes NaN once it has trained ``after`` steps."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.net = tiny_net()
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.after = after

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
        elif int(self.calls) >= self.after:
            out = out * float("nan")
        return out


def test_guard_watches_the_test_loss_and_keeps_only_good_checkpoints(data, tmp_path):
    steps = 4
    with pytest.raises(NonFiniteLossError, match="test loss is nan in epoch 2") as e:
        train(_EvalBlowsUp(steps + 1), data, cfg(epochs=3), out_dir=tmp_path, progress=False, max_steps_per_epoch=steps)
    assert f"the last good checkpoint is kept at {tmp_path / 'checkpoint.pt'}" in str(e.value)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and all(math.isfinite(v) for v in ck["history"][0].values())
    assert _all_json_is_strict(tmp_path) == ["history.json"]
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1


class _HugeEvalLogits(nn.Module):
    """A tiny net with sane weights whose eval-mode logits are 1e6 times its training ones: what a deep
    network's few first steps look like in eval mode, before its BN running statistics catch up."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net()

    def forward(self, x):
        out = self.net(x)
        return out if self.training else out * 1e6


def test_a_huge_test_loss_with_sane_weights_is_a_measurement(data, tmp_path):
    """Not a divergence: six training steps of recipe 004's network measured a test loss of 1.4e9 with
    weights below 2, and the guard used to stop its time-budget probe ("training diverged: test loss is 8.4e+06")."""
    r = train(_HugeEvalLogits(), data, cfg(epochs=2), out_dir=tmp_path, progress=False, max_steps_per_epoch=2)
    assert all(row["test_loss"] > 1e4 for row in r.history) and r.history[-1]["train_loss"] < 10
    assert 0 <= r.test_acc <= 1 and (tmp_path / "result.json").exists()


class _WeightGoesNaN(nn.Module):
    """A tiny net with a weight that turns NaN on its ``after``-th training step without touching the output."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.net = tiny_net()
        self.unused = nn.Parameter(torch.zeros(3))
        self.after, self.calls = after, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.after:
                with torch.no_grad():
                    self.unused.fill_(float("nan"))
        return self.net(x)


def test_guard_watches_the_weights(data, tmp_path):
    with pytest.raises(NonFiniteLossError, match="weights became NaN or infinite in epoch 1"):
        train(_WeightGoesNaN(2), data, cfg(epochs=2, optimizer={"lr": 0.1, "weight_decay": 0.0}), out_dir=tmp_path,
              progress=False, max_steps_per_epoch=3)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "history.json").exists()


def test_inputs_are_checked_before_anything_runs(data, tmp_path):
    from compress.data import ImageData

    cases = [
        (dict(model=tiny_net(num_classes=5)), "the model predicts 5 classes but the data (synthetic) has 10"),
        (dict(data=data.subset(n_test=0)), "has no test images: an accuracy over no images is not a measurement"),
        (dict(data=data.subset(n_train=0)), "has no training images"),
        (dict(data=ImageData(data.train_x[:, :1], data.train_y, data.test_x[:, :1], data.test_y, data.classes)),
         "the images have 1 channel(s) but normalize.mean/std give 3"),
        (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
        (dict(max_steps_per_epoch=0), "max_steps_per_epoch must be an integer >= 1 or None, got 0"),
        (dict(config=cfg(val_split={"size": 256})), "val_split.size must be in 1..255"),
        (dict(model=nn.Sequential(nn.Flatten(), nn.Linear(5, 10))), "the model cannot take the data's 3x8x8 images"),
    ]
    for change, message in cases:
        kwargs = dict(model=tiny_net(), data=data, config=cfg(epochs=1), out_dir=tmp_path / "out", progress=False)
        kwargs.update(change)
        with pytest.raises(ValueError) as e:
            train(kwargs.pop("model"), kwargs.pop("data"), kwargs.pop("config"), **kwargs)
        assert message in str(e.value) and "\n" not in str(e.value), (message, str(e.value))
        assert not (tmp_path / "out").exists()


def test_mid_epoch_checkpoints_never_hold_a_diverged_state(data, tmp_path):
    # a checkpoint after every step: the one after the step whose weights went NaN must not be written
    with pytest.raises(NonFiniteLossError, match="weights became NaN or infinite in epoch 1") as e:
        train(_WeightGoesNaN(2), data, cfg(epochs=2, optimizer={"lr": 0.1, "weight_decay": 0.0}), out_dir=tmp_path,
              progress=False, max_steps_per_epoch=4, checkpoint_every_s=0)
    assert f"the last good checkpoint is kept at {tmp_path / 'checkpoint.pt'}" in str(e.value)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step"]) == (0, 1)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
