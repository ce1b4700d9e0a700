"""Distillation: Hinton's loss by its definition, weight 0 is the plain loss, the trainer's teacher path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from compress.data import synthetic
from compress.models import ResNetConfig, resnet_from_config
from compress.training import DistillConfig, TrainConfig, train
from compress.training import trainer as trainer_module
from compress.training.augment import normalize
from compress.training.distill import Distiller, distillation_loss


def test_weight_zero_is_exactly_the_plain_loss():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10) * 3
    plain = nn.functional.cross_entropy(s, torch.randint(0, 10, (8,)))
    assert torch.equal(distillation_loss(s, t, plain, 4.0, 0.0), plain)


def test_loss_matches_its_definition_by_hand():
    s = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    t = [[0.0, 3.0, 0.0], [1.0, -1.0, 2.0]]
    T, w, plain = 2.0, 0.25, 1.5

    def softmax(row):
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    kl = sum(sum(pt * math.log(pt / ps) for pt, ps in zip(softmax(tr), softmax(sr))) for sr, tr in zip(s, t)) / 2
    expected = (1 - w) * plain + w * T * T * kl
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(plain), T, w)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert kl > 0.1  # the case is not degenerate


def test_distill_config_is_checked_and_optional_in_dicts():
    cfg = TrainConfig.from_dict({"distill": {"temperature": 2, "weight": 0.5}})
    assert cfg.distill == DistillConfig(2.0, 0.5) and cfg.to_dict()["distill"] == {"temperature": 2.0, "weight": 0.5}
    assert "distill" not in TrainConfig().to_dict()  # configs written before distillation keep their fingerprints
    with pytest.raises(ValueError, match=r"train\.distill: weight must be in \[0, 1\], got 1\.5"):
        TrainConfig.from_dict({"distill": {"weight": 1.5}})
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        DistillConfig(temperature=0)


def test_teacher_input_is_renormalised():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.mean((2, 3))

    raw = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    s_stats, t_stats = ((0.5, 0.4, 0.3), (0.2, 0.3, 0.25)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    d = Distiller(Probe(), DistillConfig(), torch.device("cpu"), s_stats, t_stats)
    d(normalize(raw, *s_stats), torch.zeros(2, 3), torch.tensor(0.0))
    torch.testing.assert_close(seen[0], normalize(raw, *t_stats), rtol=0, atol=1e-5)


# --- in the trainer -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = resnet_from_config(ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))
    torch.manual_seed(1)
    teacher = resnet_from_config(ResNetConfig.uniform((8, 8), (1, 1), (1, 2))).eval()
    cfg = TrainConfig(epochs=1, batch_size=16, amp="none", channels_last=False, eval_batch_size=64)
    return model, teacher, cfg, synthetic(64, 32)


def _run(model, data, cfg, **kw):
    return train(model, data, cfg, max_steps_per_epoch=3, progress=False, device="cpu", **kw)


def _same(a, b):
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trainer_with_weight_zero_equals_plain_training(tiny):
    model, teacher, cfg, data = tiny
    plain = _run(model, data, cfg)
    _same(_run(model, data, dataclasses.replace(cfg, distill=DistillConfig(4.0, 0.0)), teacher=teacher), plain)
    distilled = _run(model, data, dataclasses.replace(cfg, distill=DistillConfig(4.0, 0.9)), teacher=teacher)
    assert distilled.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_teacher_runs_in_eval_mode_under_the_students_autocast(tiny, monkeypatch):
    model, _, cfg, data = tiny
    seen = []

    class Teacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)
            self.fc = nn.Linear(3, 10)

        def forward(self, x):
            seen.append((self.training, torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()))
            return self.fc(self.bn(x).mean((2, 3)))

    teacher = Teacher().train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    monkeypatch.setattr(trainer_module, "_AMP_ON_CPU", True)
    _run(model, data, dataclasses.replace(cfg, amp="bf16"), teacher=teacher)
    assert seen and set(seen) == {(False, True, False)}
    assert teacher.training and all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_distill_without_teacher_is_an_error(tiny):
    model, _, cfg, data = tiny
    with pytest.raises(ValueError, match="train.distill needs a teacher"):
        _run(model, data, dataclasses.replace(cfg, distill=DistillConfig()))
