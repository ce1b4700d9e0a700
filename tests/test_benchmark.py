"""benchmarks/train_speed.py runs both loops on the CPU and writes a complete JSON record."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_speed_writes_json(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_x=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), train_y=rng.integers(0, 10, 64),
             test_x=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), test_y=rng.integers(0, 10, 16))
    out = _load_benchmark().main(["--data", str(npz), "--steps", "2", "--batch-size", "4", "--device", "cpu",
                                  "--workers", "0", "--models", "003", "--out", str(tmp_path / "results")])
    written = json.loads(next((tmp_path / "results").glob("train_speed-cpu-*.json")).read_text())
    assert written == out
    for key in ("command", "git_commit", "device", "torch", "date"):
        assert written[key], key
    (row,) = written["results"]
    assert row["model"] == "003" and row["params"] == 4_697_742
    assert row["trainer_images_per_s"] > 0 and row["plain_images_per_s"] > 0
    ratio = row["trainer_images_per_s"] / row["plain_images_per_s"]  # of the rounded rates: close, not equal
    assert row["speedup"] == pytest.approx(ratio, rel=0.02, abs=0.01)
    assert "CPU" in written["note"]
