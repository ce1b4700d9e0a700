"""Training speed: compress's trainer against the plain PyTorch loop the reports used.

Both train the same model with SGD (0.1, momentum 0.9, wd 5e-4) on random-crop + flip CIFAR-style
data for ``--steps`` optimizer steps at ``--batch-size``, after a warm-up, and report images/s:

(a) ``compress.training.train``: data resident on the device as uint8, batched augmentation there,
    channels_last, bf16 autocast (``--amp``; on the CPU where it has native bf16), optional ``--compile``;
(b) the reports' loop: a torchvision ``DataLoader`` over a Dataset of PIL images with
    RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize, fp32, ``--workers`` loader processes.

Examples::

    python benchmarks/train_speed.py --data /tmp/cifar10.npz --steps 200 --device cuda
    python benchmarks/train_speed.py --data /tmp/cifar10.npz --steps 8 --device cpu --workers 2 --fp32-trainer
    python benchmarks/train_speed.py --steps 4 --batch-size 32 --device cpu   # synthetic data, smoke run

Results go to ``benchmarks/results/train_speed-<device>-<date>.json`` with the command, git commit,
device name, torch version and date.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
from torch import nn

import compress
from compress.data import ImageData, cifar10, synthetic
from compress import recipes
from compress.provenance import cpu_info, provenance
from compress.recipes import FAST_TRAIN
from compress.training import TrainConfig, train
from compress.training.config import CIFAR10_MEAN, CIFAR10_STD

ROOT = Path(__file__).resolve().parent.parent


def build(name: str) -> nn.Module:
    """The model of the bundled recipe ``name`` (``resnet18``, ``003``, ``004``, ...), seeded."""
    torch.manual_seed(0)
    return recipes.load(recipes.find(name, recipes.BUILTIN_RECIPES)).build()


MODELS = sorted(p.stem for p in recipes.recipe_paths(recipes.BUILTIN_RECIPES))


class PILArrays(torch.utils.data.Dataset):
    """uint8 NHWC arrays served as (PIL image, label), like torchvision.datasets.CIFAR10."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(model: nn.Module, data: ImageData, steps: int, warmup: int, batch_size: int, workers: int,
               device: torch.device) -> float:
    """The reports' training loop; images/s over ``steps`` steps after ``warmup`` steps."""
    import torchvision.transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    loader = torch.utils.data.DataLoader(
        PILArrays(data.train_x, data.train_y, tf), batch_size=batch_size, shuffle=True, num_workers=workers,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    done, t0 = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                _sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def compress_trainer(model: nn.Module, data: ImageData, steps: int, batch_size: int, device: torch.device,
                     amp: str, compile_: bool, channels_last: bool = True, schedule: str = "default") -> tuple[float, dict]:
    """compress's trainer: epoch 1 (``steps`` steps) warms up, epoch 2's training images/s is returned,
    with the precision the trainer chose on ``device``. ``schedule``: ``default`` (TrainConfig's defaults:
    SGD, crop + flip) or ``fast`` (``compress.recipes.FAST_TRAIN``: its optimizer groups, Lookahead,
    translate + alternating flip)."""
    base = {k: v for k, v in FAST_TRAIN.items() if k != "tta"} if schedule == "fast" else {}
    config = TrainConfig.from_dict({**base, "epochs": 2, "batch_size": batch_size, "amp": amp, "compile": compile_,
                                    "eval_batch_size": batch_size, "channels_last": channels_last})
    small_test = data.subset(n_test=batch_size)  # evaluation is not what we time
    result = train(model, small_test, config, device=device, progress=False, max_steps_per_epoch=steps)
    return float(result.history[-1]["images_per_s"]), dict(result.precision or {})


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print images/s of both loops and their ratio; write the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="synthetic", help="CIFAR-10 path (.npz, cifar-10-batches-py, folders) or 'synthetic'")
    p.add_argument("--steps", type=int, default=100, help="timed optimizer steps per loop")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--models", default="resnet18,003,004", help=f"comma-separated recipe names, from {MODELS}")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers of the plain loop")
    p.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"],
                   help="trainer autocast (on the CPU bf16 runs where the CPU has native bf16, else fp32)")
    p.add_argument("--fp32-trainer", action="store_true",
                   help="also time the trainer in plain fp32 without channels_last (what bf16 + channels_last buy)")
    p.add_argument("--compile", action="store_true", help="torch.compile in the trainer")
    p.add_argument("--schedule", default="default", choices=["default", "fast"],
                   help="the trainer's config: TrainConfig's defaults, or the fast budget's schedule (FAST_TRAIN)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--note", default="", help="free text stored with the result (e.g. the machine's state)")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; known: {sorted(MODELS)}")
    if args.data == "synthetic":
        n = max(4096, (args.steps + 5) * args.batch_size)
        data = synthetic(n, args.batch_size)
    else:
        data = cifar10(args.data)
    warmup = max(2, min(10, args.steps // 5))

    rows = []
    for name in names:
        trainer_ips, precision = compress_trainer(build(name), data, args.steps, args.batch_size, device, args.amp,
                                                  args.compile, schedule=args.schedule)
        plain_ips = plain_loop(build(name), data, args.steps, warmup, args.batch_size, args.workers, device)
        row = {
            "model": name, "params": compress.count_params(build(name)),
            "trainer_images_per_s": round(trainer_ips, 1), "plain_images_per_s": round(plain_ips, 1),
            "speedup": round(trainer_ips / plain_ips, 2), "trainer_precision": precision,
        }
        line = f"{name:>9}: trainer {trainer_ips:,.0f} img/s  plain loop {plain_ips:,.0f} img/s  ratio {row['speedup']:.2f}x"
        if args.fp32_trainer:
            fp32_ips, _ = compress_trainer(build(name), data, args.steps, args.batch_size, device, "none", args.compile,
                                           channels_last=False)
            row["trainer_fp32_images_per_s"] = round(fp32_ips, 1)
            row["fast_path_speedup"] = round(trainer_ips / fp32_ips, 2)
            line += f"  (trainer in fp32: {fp32_ips:,.0f} img/s)"
        rows.append(row)
        print(line, flush=True)

    out = {
        "benchmark": "train_speed",
        **provenance(device, ["python", *sys.argv] if argv is None else ["train_speed.py", *argv]),
        "data": args.data,
        "steps": args.steps, "warmup_steps": warmup, "batch_size": args.batch_size, "workers": args.workers,
        "trainer": {"amp": args.amp, "compile": args.compile, "channels_last": True, "schedule": args.schedule},
        "cpu": cpu_info() if device.type == "cpu" else None,
        "plain": {"precision": "fp32", "pipeline": "DataLoader + PIL RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize"},
        "results": rows,
    }
    notes = ["CPU measurement."] if device.type == "cpu" else []
    if args.note:
        notes.append(args.note)
    if notes:
        out["note"] = " ".join(notes)
    slug = "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9]+", "-", out["device_name"].lower()).strip("-")
    path = Path(args.out) / f"train_speed-{slug}-{out['date'][:10]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
