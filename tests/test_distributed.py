"""Two-process DistributedDataParallel training on the CPU (gloo), launched with torchrun as a subprocess.

Without batch norm and augmentation, DDP with two ranks each taking half of every global batch
averages the same gradients as one process on the whole batch, so the weights must match a
single-process run (up to float summation order), and both ranks must end identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from torch import nn

from compress.data import synthetic
from compress.training import TrainConfig, train

CONFIG = {
    "epochs": 2, "batch_size": 32, "augment": [], "optimizer": {"lr": 0.1, "momentum": 0.9},
    "schedule": {"name": "cosine"}, "eval_batch_size": 64,
}

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from compress.data import synthetic
    from compress.training import TrainConfig, train, distributed

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    out = sys.argv[1]
    r = train(net(), synthetic(256, 100, size=8, seed=0), TrainConfig.from_dict(%r), device="cpu",
              progress=False, out_dir=out + "/run")
    rank = torch.distributed.get_rank()
    torch.save({"state": r.model.state_dict(), "history": r.history, "test_acc": r.test_acc,
                "world": torch.distributed.get_world_size()}, f"{out}/rank{rank}.pt")
    distributed.cleanup()
    """
) % CONFIG


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == 2
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k  # DDP keeps the ranks bit-identical
    assert r0["history"][-1]["test_acc"] == r1["history"][-1]["test_acc"]  # all-reduced evaluation
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and (tmp_path / "run" / "model.pt").is_file()

    single = train(_net(), synthetic(256, 100, size=8, seed=0), TrainConfig.from_dict(CONFIG), device="cpu", progress=False)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(v, r0["state"][k], atol=1e-5, rtol=1e-4), k
    assert not torch.allclose(single.model.state_dict()["0.weight"], _net().state_dict()["0.weight"])  # it trained
    for a, b in zip(single.history, r0["history"]):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 * max(1.0, a["train_loss"])
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.02  # 100 test images, split 50/50 over the ranks
