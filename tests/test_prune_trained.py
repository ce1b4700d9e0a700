"""benchmarks/prune_trained.py end to end on a tiny option-A checkpoint and synthetic data: each criterion
pruned once to the FLOP budget, arms fine-tuned with and without distillation in separate calls (as
parallel processes would), a wall-time budget fixing an arm's epochs, records, report, resume and skip."""

from __future__ import annotations

import json

import pytest
import torch

import compress

from scripts import load_script
from test_checkpoints import RefResNet, _randomize


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    ref = _randomize(RefResNet((8, 16, 32), (1, 1, 1), "A", 8))
    weights = tmp_path / "tiny.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "best_prec1": 1.0}, weights)
    out = tmp_path / "out"
    common = ["--weights", str(weights), "--data", "synthetic:48:24", "--device", "cpu", "--taylor-images", "16",
              "--threads", "1", "--out", str(out), "--no-progress", "--latency-repeats", "1"]
    return load_script("prune_trained"), weights, out, common


def test_arms_in_separate_calls_then_resume_and_skip(setup, capsys):
    script, weights, out, common = setup
    assert script.main([*common, "--arm", "l1", "--epochs", "2", "--max-steps", "2"]) == 0
    assert script.main([*common, "--arm", "l1+kd", "taylor", "--epochs", "2", "--max-steps", "2"]) == 0
    log = capsys.readouterr().out
    assert log.count("l1: pruned in") == 1 and log.count("taylor: pruned in") == 1  # one pruning per criterion
    results = json.loads((out / "results.json").read_text())
    base = results["baseline"]
    assert base["params"] == compress.count_params(compress.models.from_checkpoint(weights)) and base["test_images"] == 24
    arms = {r["arm"]: r for r in results["arms"]}
    assert sorted(arms) == ["l1", "l1+kd", "taylor"]
    for r in arms.values():
        assert r["flops"] <= base["flops"] / 2 and r["flops"] == compress.count_flops(compress.load(out / r["arm"] / "model.pt"))
        assert r["epochs"] == 2 and len(r["accuracy_per_epoch"]) == 2 and r["accuracy_final_no_tta"] == r["accuracy_per_epoch"][-1]
        assert r["accuracy_before"] == base["accuracy"] and r["threads"] == 1 and r["images_per_s"] > 0
        assert r["train_time_s"] > 0 and r["prune_time_s"] >= 0 and r["wall_time_s_this_process"] >= r["train_time_s"]
        assert [h["epoch"] for h in r["history"]] == [1, 2]
    pruned = json.loads((out / "prune-taylor" / "pruned.json").read_text())
    assert arms["taylor"]["accuracy_pruned"] == pruned["accuracy_pruned"] and pruned["taylor_images"] == 16
    assert arms["l1+kd"]["distill"] == script.DISTILL and arms["l1"]["distill"] is None
    assert arms["l1"]["architecture"] == arms["l1+kd"]["architecture"]  # the same pruned network
    assert arms["l1"]["prune_kwargs"] == script.PRUNE
    report = (out / "report.md").read_text()
    assert "Not a measurement" in report and "93.77%" in report and (out / "curves.png").stat().st_size > 0
    assert compress.load(out / "l1+kd" / "model.pt").config.stages[1].shortcut == "pad"

    # a killed arm (its record gone, its checkpoint kept) resumes: no new pruning, the same result
    (out / "l1" / "arm.json").unlink()
    assert script.main([*common, "--arm", "l1", "l1+kd", "--epochs", "2", "--max-steps", "2"]) == 0
    log = capsys.readouterr().out
    assert "pruned in" not in log and "l1: resuming" in log and "l1+kd: finished, skipping" in log
    again = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["arms"]}
    assert again["l1"]["accuracy_per_epoch"] == arms["l1"]["accuracy_per_epoch"]

    (out / "report.md").unlink()
    assert script.main(["--out", str(out), "--collect"]) == 0 and "| taylor |" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):  # another budget in the same folder is refused
        script.main([*common, "--arm", "taylor+kd", "--epochs", "1", "--speedup", "3", "--max-steps", "1"])


def test_plain_finetuning_schedule_has_no_tta(setup):
    script, _, out, common = setup
    assert script.main([*common, "--arm", "l1", "--epochs", "2", "--max-steps", "2", "--finetune", "plain"]) == 0
    arm = json.loads((out / "l1" / "arm.json").read_text())
    assert arm["finetune"]["optimizer"]["lr"] == 0.01 and arm["finetune"]["schedule"]["name"] == "cosine"
    assert arm["tta"] == "none" and arm["accuracy_final"] == arm["accuracy_per_epoch"][-1]
    assert "(TTA" not in (out / "report.md").read_text()


def test_fast_finetuning_schedule_with_its_tta(setup):
    script, _, out, common = setup
    assert script.main([*common, "--arm", "l1", "--epochs", "2", "--max-steps", "2", "--lr", "2.0"]) == 0
    arm = json.loads((out / "l1" / "arm.json").read_text())
    ft = arm["finetune"]
    assert ft["optimizer"]["lr"] == 2.0 and ft["optimizer"]["decoupled"] and ft["schedule"]["name"] == "linear"
    assert ft["epochs"] == 2 and ft["label_smoothing"] == 0.2 and ft["tta"] == "mirror_translate"
    assert arm["tta"] == "mirror_translate"
    assert arm["accuracy_final"] == 100 * arm["history"][-1]["test_acc_tta"]
    assert arm["accuracy_final_no_tta"] == arm["accuracy_per_epoch"][-1]
    assert "(TTA mirror_translate; " in (out / "report.md").read_text()


def test_a_wall_time_budget_fixes_each_arms_epochs(setup):
    script, _, out, common = setup
    assert script.main([*common, "--arm", "l1+kd", "--minutes", "0.05"]) == 0
    plan = json.loads((out / "l1+kd" / "plan.json").read_text())
    arm = json.loads((out / "l1+kd" / "arm.json").read_text())
    assert plan["minutes"] == 0.05 and arm["plan"] == plan and arm["epochs"] == plan["epochs"] >= 1
    assert arm["max_steps_per_epoch"] == plan["max_steps_per_epoch"]


def test_bad_arguments_are_refused(setup, capsys):
    script, _, _, common = setup
    for bad in (["--arm", "nope"], ["--arm", "l1", "--sparse-epochs", "0"], ["--epochs", "1", "--minutes", "1"], ["--threads", "0", "--epochs", "1"],
                ["--arm", "l1", "--importance", "l1", "--epochs", "1"]):
        with pytest.raises(SystemExit):
            script.parse_args([*common, *bad])
    assert "CRITERION or CRITERION+kd" in capsys.readouterr().err
    assert script.parse_args([*common, "--importance", "l2", "taylor", "--epochs", "1"]).arm == ["l2", "l2+kd", "taylor", "taylor+kd"]
    assert script.parse_args([*common, "--epochs", "1"]).arm == list(script.ARMS) == ["l2", "l2+kd", "sparse", "sparse+kd"]
    defaults = script.parse_args(common)  # the longest arm trains at most 30 epochs, every arm at >= 2.13x
    assert defaults.epochs + defaults.sparse_epochs <= 30 and defaults.speedup >= 2.13


def test_sparse_arms_learn_sparsely_cut_once_and_fine_tune_with_latency(setup):
    script, _, out, common = setup
    assert script.main([*common, "--arm", "sparse", "sparse+kd", "l2", "--epochs", "1", "--sparse-epochs", "2",
                        "--max-steps", "2", "--prune-kwargs", '{"round_to": 4}']) == 0
    results = json.loads((out / "results.json").read_text())
    base, arms = results["baseline"], {r["arm"]: r for r in results["arms"]}
    assert sorted(arms) == ["l2", "sparse", "sparse+kd"] and all(base["latency_ms"][b] > 0 for b in ("1", "256"))
    for r in arms.values():
        assert r["flops"] * 2.13 <= base["flops"] and all(r["latency_ms"][b] > 0 for b in ("1", "256"))
        assert r["latency_ms_before"] == base["latency_ms"] and r["epochs"] == 1
    sparse, kd = arms["sparse"], arms["sparse+kd"]
    assert sparse["sparse"] == kd["sparse"] and sparse["architecture"] == kd["architecture"]  # one sparse phase and cut
    assert sparse["sparse"]["epochs"] == 2 and sparse["sparse"]["regularized"] and arms["l2"]["sparse"] is None
    assert sparse["sparse"]["config"]["optimizer"]["weight_decay"] == 0 and kd["distill"] == script.DISTILL
    assert (out / "prune-sparse" / "sparse" / "checkpoint.pt").is_file()
    model = compress.load(out / "sparse" / "model.pt")
    assert all(c.out_channels % 4 == 0 for c in model.modules() if isinstance(c, torch.nn.Conv2d) and c.out_channels != 10)
    report = (out / "report.md").read_text()
    assert "| sparse+kd |" in report and "latency b1 / b256" in report and "2 + 1" in report
