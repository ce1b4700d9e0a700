"""benchmarks/prune_trained.py end to end on a tiny option-A checkpoint and synthetic data: every run is
pruned to the FLOP budget, fine-tuned with and without distillation, recorded, reported, and not repeated."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

import compress

from test_checkpoints import RefResNet, _randomize

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("prune_trained", ROOT / "benchmarks" / "prune_trained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prune_trained_smoke(tmp_path, capsys):
    torch.manual_seed(0)
    ref = _randomize(RefResNet((8, 16, 32), (1, 1, 1), "A", 8))
    weights = tmp_path / "tiny.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "best_prec1": 1.0}, weights)
    out = tmp_path / "out"
    argv = ["--weights", str(weights), "--data", "synthetic:48:24", "--device", "cpu", "--epochs", "1",
            "--max-steps", "2", "--taylor-batches", "1", "--out", str(out), "--no-progress"]
    script = _script()
    assert script.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    budget = results["flop_budget"]
    assert budget == int(results["baseline"]["flops"] / 2)
    runs = {r["run"]: r for r in results["runs"]}
    assert sorted(runs) == ["l1", "l1+kd", "taylor", "taylor+kd"]
    for r in runs.values():
        assert r["flops"] <= budget and r["epochs"] == 1 and len(r["history"]) == 1
        assert r["accuracy_final"] == 100 * r["history"][-1]["test_acc"]
    assert runs["l1+kd"]["distill"] == script.DISTILL and runs["l1"]["distill"] is None
    assert runs["l1"]["flops"] == runs["l1+kd"]["flops"]  # one pruning per criterion
    report = (out / "report.md").read_text()
    assert "Not a measurement" in report and "93.77%" in report and (out / "curves.png").stat().st_size > 0
    capsys.readouterr()
    assert script.main(argv) == 0  # finished runs are skipped
    assert capsys.readouterr().out.count("finished, skipping") == 4
    assert compress.load(out / "taylor+kd" / "model.pt").config.stages[1].shortcut == "pad"
