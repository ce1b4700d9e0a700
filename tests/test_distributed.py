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
from pathlib import Path

import torch
from torch import nn

from compress.data import synthetic
from compress.training import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
# the scripts run from tmp_path: without this they would import whichever compress is installed
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

CONFIG = {
    "epochs": 2, "batch_size": 32, "augment": [], "optimizer": {"lr": 0.1, "momentum": 0.9},
    "schedule": {"name": "cosine"}, "eval_batch_size": 64,
    "amp": "none",  # fp32: ranks are compared with one process to float tolerance (bf16 on the CPU is its own test)
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
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=ENV,
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


MID_EPOCH_SCRIPT = textwrap.dedent(
    """
    import os, shutil, sys, torch
    from torch import nn
    from compress.data import synthetic
    from compress.training import TrainConfig, train, distributed
    from compress.training import trainer

    trainer._CHECK_EVERY = 2  # DDP decides on mid-epoch checkpoints every _CHECK_EVERY steps

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 10))

    out, config, data = sys.argv[1], TrainConfig.from_dict(%r), synthetic(256, 100, size=8, seed=0)
    runs = {"a": train(net(), data, config, device="cpu", progress=False, out_dir=out + "/a", checkpoint_every_s=None)}
    real = trainer._save_checkpoint

    def keep_mid_epoch_copy(path, state):  # rank 0 writes; keep the checkpoint of epoch 2, step 4 of 8
        real(path, state)
        if (state["epoch"], state["step"]) == (1, 4):
            shutil.copyfile(path, out + "/mid.pt")

    trainer._save_checkpoint = keep_mid_epoch_copy
    runs["b"] = train(net(), data, config, device="cpu", progress=False, out_dir=out + "/b", checkpoint_every_s=0)
    trainer._save_checkpoint = real
    rank = torch.distributed.get_rank()
    if rank == 0:
        os.makedirs(out + "/c")
        shutil.copyfile(out + "/mid.pt", out + "/c/checkpoint.pt")
    torch.distributed.barrier()
    runs["c"] = train(net(), data, config, device="cpu", progress=False, out_dir=out + "/c", resume=True,
                      checkpoint_every_s=0)
    torch.save({k: {"state": r.model.state_dict(), "history": r.history} for k, r in runs.items()}, f"{out}/rank{rank}.pt")
    distributed.cleanup()
    """
) % {**CONFIG, "amp": "none", "augment": [{"name": "random_crop", "params": {"padding": 1}}, {"name": "hflip"}]}


def test_two_ranks_resume_mid_epoch_to_the_uninterrupted_result(tmp_path):
    # a: uninterrupted; b: a checkpoint every 2 steps (all ranks save together); c: resumed from b's
    # checkpoint in the middle of epoch 2, each rank with its own RNG stream and sums: c == b == a.
    script = tmp_path / "ddp_mid.py"
    script.write_text(MID_EPOCH_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    mid = torch.load(tmp_path / "mid.pt", weights_only=True)
    assert (mid["epoch"], mid["step"]) == (1, 4) and [r["seen"] for r in mid["partial"]["ranks"]] == [64, 64]
    strip = lambda h: [{k: v for k, v in row.items() if k not in ("epoch_time_s", "images_per_s")} for row in h]  # noqa: E731
    for rank in (0, 1):
        runs = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in ("b", "c"):
            assert strip(runs[name]["history"]) == strip(runs["a"]["history"]), (rank, name)
            for k, v in runs["a"]["state"].items():
                assert torch.equal(v, runs[name]["state"][k]), (rank, name, k)
