"""Time budgets: the probe fixes a run's length, the plan is stored in the run folder and reused on resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from compress import bench, recipes
from compress.cli import main
from compress.data import synthetic
from compress.training import TrainConfig
from compress.training import budget as budget_module
from compress.training.budget import BudgetPlan, fit_length, plan

from test_cli import tiny_text


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


@pytest.fixture(scope="module")
def data():
    return synthetic(512, 64, size=8, seed=0)


CFG = TrainConfig.from_dict({"batch_size": 32, "eval_batch_size": 32, "amp": "none", "channels_last": False})


def test_plan_fits_the_budget_from_measured_speed(data):
    small = plan(tiny_net(), data, CFG, 1e-4, device="cpu")  # 6 ms: not even one epoch fits
    assert small.epochs == 1 and 1 <= small.max_steps_per_epoch < small.steps_per_epoch == 16
    assert small.train_images_per_s > 0 and small.eval_images_per_s > 0
    big = plan(tiny_net(), data, CFG, 10.0, device="cpu")
    assert big.epochs > 1
    # the planned length is what the measured speeds allow: the budget is used (more than one epoch's
    # worth of time short of it at most) and the estimate stays inside it
    epoch_s = 512 / big.train_images_per_s + 64 / big.eval_images_per_s
    assert big.epochs in (int(600 // epoch_s), int(600 // epoch_s) + 1) and 600 - epoch_s < big.estimated_s <= 600
    images = big.epochs * 32 * (big.max_steps_per_epoch or 16)
    assert images >= int(600 // epoch_s) * 512  # never fewer training images than the whole epochs that fit
    assert BudgetPlan.from_dict(json.loads(json.dumps(big.to_dict()))) == big


def test_fit_length_uses_the_budget():
    # 100 steps of 1 s plus 20 s of evaluation: 120 s an epoch
    assert fit_length(600, 100, 1.0, 20) == (5, None, 600)        # exactly 5 whole epochs
    assert fit_length(190, 100, 1.0, 20) == (2, 75, 190)           # 1.58 epochs: 2 x 75 steps beat 1 x 100
    assert fit_length(250, 100, 1.0, 20) == (2, None, 240)         # 2.08 epochs: 3 x 63 steps (189) lose to 2 x 100
    assert fit_length(60, 100, 1.0, 20) == (1, 40, 60)             # not one epoch: one epoch cut to 40 steps
    assert fit_length(5, 100, 1.0, 20) == (1, 1, 21)               # always at least one step


@pytest.mark.parametrize("minutes", [0, -1, float("nan"), float("inf")])
def test_plan_refuses_a_bad_budget(data, minutes):
    with pytest.raises(ValueError, match="positive number of minutes"):
        plan(tiny_net(), data, CFG, minutes)


def test_time_budget_run_stores_its_plan_and_resumes_to_the_same_run(tmp_path, monkeypatch):
    rdir = tmp_path / "recipes"
    rdir.mkdir()
    (rdir / "tiny.yaml").write_text(tiny_text("tiny"))
    recipe = recipes.load(rdir / "tiny.yaml")
    data = synthetic(256, 32, seed=0)
    out = tmp_path / "run"
    rows = bench.run([recipe], out, data, time_budget=0.5, device="cpu", progress=False, log=lambda s: None)
    stored = json.loads((out / "tiny" / "plan.json").read_text())
    assert stored["minutes"] == 0.5 and stored["git_commit"] and stored["device"] == "cpu"
    row = rows[0]
    assert row["time_budget_min"] == 0.5 and row["plan"]["epochs"] == stored["epochs"] == row["epochs_run"]
    assert row["precision"]["autocast"] in ("bf16", "none")
    config = bench.train_config(recipe, "fast", 0.5)
    assert config.batch_size == 128 and config.tta_level == "mirror_translate" and config.schedule.name == "linear"
    assert json.loads((out / "results.json").read_text())["time_budget_min"] == 0.5

    # A resumed run reuses the stored plan: no second probe, whatever this machine's speed is now.
    (out / "tiny" / "row.json").unlink()
    for name in ("checkpoint.pt", "model.pt"):
        (out / "tiny" / name).unlink()
    monkeypatch.setattr(budget_module, "plan", lambda *a, **k: pytest.fail("probed again"))
    again = bench.run([recipe], out, data, time_budget=0.5, device="cpu", progress=False, log=lambda s: None)
    assert again[0]["epochs_run"] == row["epochs_run"] and again[0]["measured_accuracy"] == row["measured_accuracy"]
    # ... and a different budget in the same folder is refused, never mixed
    with pytest.raises(bench.RunFolderError, match="time_budget_min"):
        bench.run([recipe], out, data, time_budget=1.0, device="cpu", progress=False, log=lambda s: None)


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "2"], "drop --epochs"),
    (["--budget", "paper"], "use it with --budget fast"),
    (["--time-budget", "0"], "positive number of minutes"),
])
def test_cli_refuses_time_budget_conflicts(tmp_path, capsys, extra, message):
    args = ["--time-budget", "1", "--device", "cpu", "--data", "synthetic:64:16", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        main(args + extra)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
