"""Prune a trained network to a FLOP budget, then fine-tune it, with and without distillation.

The ResNet-56 benchmark of issue 11 (Torch-Pruning's published figure: 93.53% -> 93.77% at 2.13x fewer
FLOPs, on its own option-B ResNet-56): the trained ResNet-56 of ``../shared/weights/`` is imported with
:func:`compress.models.from_checkpoint`, evaluated, pruned by :func:`compress.prune` to at most
``1 / --speedup`` of its FLOPs with each ``--importance`` criterion, evaluated right after pruning, then
fine-tuned by :func:`compress.training.train` with and without distillation from the unpruned network
(``--distill``). Every run records params, FLOPs, accuracy before and after pruning and after each
fine-tuning epoch (the final epoch's is the result, never the best), the pruning and training wall
times. ``--minutes`` sets the number of epochs from a short timing of the training step (as many as
fit in that many minutes per run); ``--epochs`` sets it directly.

Each (importance, distill) run has its own trainer folder under ``--out`` and resumes from its last
epoch when the command is repeated; finished runs are skipped. ``results.json``, ``report.md`` (table)
and ``curves.png`` (test accuracy per epoch) are rewritten from every finished run after each one, so
runs may be done in separate commands into the same ``--out``.

    # the benchmark (about an hour per run on the 2-core CPU; 4 runs)
    python benchmarks/prune_trained.py --data /tmp/cifar10.npz --device cpu --minutes 60 \\
        --out benchmarks/results/resnet56-prune-cpu
    # a smoke run (a few steps, 500 test images; not a measurement)
    python benchmarks/prune_trained.py --data /tmp/cifar10.npz --device cpu --epochs 1 --max-steps 2 \\
        --subset 512:500 --out runs/prune-smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import compress
from compress.bench import resolve_data
from compress.data import ImageData
from compress.models import from_checkpoint, input_normalization
from compress.provenance import provenance
from compress.training import TrainConfig, train
from compress.training.augment import normalize

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = Path(os.environ.get("COMPRESS_WEIGHTS", ROOT.parent / "shared" / "weights")) / "resnet56-4bfd9763.th"
FORMAT = "compress.prune-trained/1"

#: Fine-tuning after pruning: SGD with Nesterov momentum, cosine from lr 0.01 over the run, weight decay
#: 1e-4 (the network's own training used 1e-4), batch 128, crop + flip. Distillation: T = 4, weight 0.9.
FINETUNE: dict[str, Any] = {
    "batch_size": 128,
    "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "schedule": {"name": "cosine", "interval": "step"},
    "augment": [{"name": "random_crop", "params": {"padding": 4}}, {"name": "hflip", "params": {"p": 0.5}}],
    "eval_batch_size": 500,
    "seed": 0,
}
DISTILL = {"temperature": 4.0, "weight": 0.9}
PUBLISHED = {"source": "Torch-Pruning (Fang et al., CVPR 2023), ResNet-56 option B, CIFAR-10",
             "before": 93.53, "after": 93.77, "speedup": 2.13}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="trained checkpoint (default: resnet56-4bfd9763.th in $COMPRESS_WEIGHTS, else ../shared/weights)")
    p.add_argument("--data", required=True, help="CIFAR-10 (.npz, cifar-10-batches-py folder, ...) or synthetic:N_TRAIN:N_TEST")
    p.add_argument("--out", required=True, help="output folder (results.json, report.md, curves.png, one folder per run)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--importance", nargs="+", default=["l1", "taylor"], help="criteria (compress.prune importance names)")
    p.add_argument("--distill", nargs="+", default=["off", "on"], choices=["off", "on"], help="fine-tune without/with distillation")
    p.add_argument("--speedup", type=float, default=2.0, help="FLOPs of the pruned model <= FLOPs / speedup (default 2)")
    p.add_argument("--prune-kwargs", default="{}", help='extra compress.prune arguments as JSON, e.g. \'{"round_to": 8}\'')
    p.add_argument("--taylor-batches", type=int, default=4, help="training batches (of 128) for data-aware importance")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--epochs", type=int, help="fine-tuning epochs per run")
    g.add_argument("--minutes", type=float, help="fine-tuning minutes per run: epochs = what fits, from a timing")
    p.add_argument("--max-steps", type=int, default=None, help="cap steps per epoch (smoke runs)")
    p.add_argument("--subset", default=None, metavar="N[:M]",
                   help="use the first N training (and M test) images only (smoke runs; not a measurement)")
    p.add_argument("--amp", default=None, choices=["bf16", "fp16", "none"], help="override the trainer's autocast setting")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _finetune_config(args: argparse.Namespace, epochs: int, distill: bool) -> TrainConfig:
    d = {**FINETUNE, "epochs": epochs}
    if args.amp:
        d["amp"] = args.amp
    if distill:
        d["distill"] = DISTILL
    return TrainConfig.from_dict(d)


def _time_epoch(model: torch.nn.Module, teacher: torch.nn.Module, data: ImageData, args, device) -> float:
    """Seconds per fine-tuning epoch with distillation (the slower case): the training speed of a short
    run (``--max-steps`` or 20 steps) scaled to the whole training set, plus its test-set evaluation."""
    cfg = _finetune_config(args, 1, distill=True)
    row = train(model, data, cfg, device=device, progress=False, max_steps_per_epoch=args.max_steps or 20,
                teacher=teacher).history[0]
    steps = math.ceil(len(data.train_y) / cfg.batch_size)
    seen = min(steps, args.max_steps or 20) * cfg.batch_size
    evaluation = row["epoch_time_s"] - seen / row["images_per_s"]
    return len(data.train_y) / row["images_per_s"] + evaluation


def _taylor_data(model: torch.nn.Module, data: ImageData, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    mean, std = input_normalization(model)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.train_y), generator=g)[: n_batches * 128]
    return [(normalize(data.train_x[i], mean, std), data.train_y[i]) for i in idx.split(128)]


def _write_report(out: Path, results: dict[str, Any]) -> None:
    runs = results["runs"]
    base = results["baseline"]
    lines = [
        f"# Pruning a trained network: {Path(results['weights']).name}",
        "",
        f"Written by `{results['provenance']['command']}` (commit {results['provenance'].get('git_commit', '?')[:10]}, "
        f"{results['provenance'].get('device_name') or results['provenance'].get('device')}, torch "
        f"{results['provenance']['torch']}, {results['provenance']['date'][:10]}). Accuracy: top-1 on the "
        f"{base['test_images']:,} CIFAR-10 test images; after fine-tuning = the final epoch's. FLOPs: fvcore "
        "multiply-adds per 32x32 image, BN included (the imported network's zero-padding shortcuts count as "
        "1x1 convs).",
        "",
    ]
    if base["test_images"] < 10_000 or any(r["max_steps_per_epoch"] or r["train_images"] < 50_000 for r in runs):
        lines += ["**Not a measurement**: a smoke run on a subset of the data or with capped steps per epoch.", ""]
    lines += [
        "| run | params | FLOPs | speed-up | acc before | acc after pruning | acc after fine-tuning | epochs | prune time | fine-tune time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['run']} | {r['params']:,} | {r['flops'] / 1e6:.2f} M | {base['flops'] / r['flops']:.2f}x | "
            f"{base['accuracy']:.2f}% | {r['accuracy_pruned']:.2f}% | {r['accuracy_final']:.2f}% | {r['epochs']} | "
            f"{r['prune_time_s']:.1f} s | {r['train_time_s'] / 60:.1f} min |"
        )
    pub = results["published"]
    lines += [
        f"| published: {pub['source']} | | | {pub['speedup']:.2f}x | {pub['before']:.2f}% | | {pub['after']:.2f}% | | | |",
        "",
        f"Unpruned: {base['params']:,} params, {base['flops'] / 1e6:.2f} M FLOPs. The published row is copied from "
        "the paper, not measured here, and uses a different ResNet-56 (1x1 conv + BN shortcuts) and a longer schedule.",
        "",
        "![test accuracy per fine-tuning epoch](curves.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lo = min([base["accuracy"] - 3] + [v for r in runs for v in [r["accuracy_pruned"]] + [100 * h["test_acc"] for h in r["history"]]])
    for ax, (bottom, title) in zip(axes, ((max(lo - 1, 0), "all epochs"), (base["accuracy"] - 3, "zoom: within 3 points"))):
        for r in runs:
            xs = [0] + [h["epoch"] for h in r["history"]]
            ys = [r["accuracy_pruned"]] + [100 * h["test_acc"] for h in r["history"]]
            ax.plot(xs, ys, marker="o", ms=3, label=r["run"])
        ax.axhline(base["accuracy"], color="k", ls="--", lw=1, label=f"unpruned ({base['accuracy']:.2f}%)")
        ax.axhline(base["accuracy"] - 0.5, color="gray", ls=":", lw=1, label="unpruned - 0.5")
        ax.axhline(pub["after"], color="tab:purple", ls="-.", lw=1,
                   label=f"Torch-Pruning, published ({pub['before']:.2f} -> {pub['after']:.2f}%, its own ResNet-56)")
        ax.set_xlabel("fine-tuning epoch (0: right after pruning)")
        ax.set_ylabel("test accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(bottom, base["accuracy"] + 1)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{Path(results['weights']).name} pruned to <= 1/{results['speedup']:g} of its FLOPs")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = resolve_data(args.data)
    if args.subset:
        n, _, m = args.subset.partition(":")
        data = data.subset(int(n), int(m) if m else None)
    teacher = from_checkpoint(args.weights)
    flops0, params0 = compress.count_flops(teacher), compress.count_params(teacher)
    budget = int(flops0 / args.speedup)
    before = compress.evaluate(teacher, data, device=device, progress=not args.no_progress)
    print(f"{Path(args.weights).name}: {params0:,} params, {flops0 / 1e6:.2f} M FLOPs, test accuracy "
          f"{100 * before.accuracy:.2f}%; FLOP budget {budget / 1e6:.2f} M", flush=True)
    epochs = args.epochs
    extra = json.loads(args.prune_kwargs)
    results_path = out / "results.json"
    old = json.loads(results_path.read_text()) if results_path.is_file() else {}
    runs = {r["run"]: r for r in old.get("runs", [])}
    for importance in args.importance:
        pruned = None
        for distill in args.distill:
            name = f"{importance}{'+kd' if distill == 'on' else ''}"
            if name in runs:
                print(f"{name}: finished, skipping", flush=True)
                continue
            if pruned is None:  # one pruning per criterion, shared by the runs with and without distillation
                kwargs = dict(extra)
                if importance in ("taylor",):
                    kwargs["data"] = _taylor_data(teacher, data, args.taylor_batches)
                t = time.perf_counter()
                pruned = compress.prune(teacher, target_flops=budget, importance=importance, **kwargs)
                prune_time = time.perf_counter() - t
                after = compress.evaluate(pruned, data, device=device, progress=not args.no_progress)
                print(f"{importance}: pruned in {prune_time:.1f} s to {compress.count_params(pruned):,} params, "
                      f"{compress.count_flops(pruned) / 1e6:.2f} M FLOPs; test accuracy {100 * after.accuracy:.2f}%", flush=True)
            if epochs is None:  # chosen once per --out, so that a repeated command resumes the same runs
                plan = out / "epochs.json"
                if plan.is_file():
                    epochs = json.loads(plan.read_text())["epochs"]
                else:
                    per_epoch = _time_epoch(pruned, teacher, data, args, device)
                    epochs = max(1, int(args.minutes * 60 // per_epoch))
                    plan.write_text(json.dumps({"epochs": epochs, "seconds_per_epoch": per_epoch, "minutes": args.minutes}) + "\n")
                print(f"fine-tuning {epochs} epochs per run (what fits in {args.minutes:g} min; {plan})", flush=True)
            cfg = _finetune_config(args, epochs, distill == "on")
            result = train(pruned, data, cfg, out_dir=out / name, resume=True, device=device,
                           progress=not args.no_progress, max_steps_per_epoch=args.max_steps,
                           teacher=teacher if distill == "on" else None)
            runs[name] = {
                "run": name, "importance": importance, "distill": DISTILL if distill == "on" else None,
                "params": compress.count_params(pruned), "flops": compress.count_flops(pruned),
                "accuracy_pruned": 100 * after.accuracy, "accuracy_final": 100 * result.history[-1]["test_acc"],
                "epochs": result.epochs_run, "prune_time_s": prune_time, "train_time_s": result.train_time_s,
                "history": result.history, "finetune": cfg.to_dict(), "prune_kwargs": {k: v for k, v in extra.items()},
                "max_steps_per_epoch": args.max_steps, "train_images": len(data.train_y),
            }
            results = {
                "format": FORMAT, "weights": str(args.weights), "speedup": args.speedup, "flop_budget": budget,
                "baseline": {"params": params0, "flops": flops0, "accuracy": 100 * before.accuracy,
                             "test_images": before.total},
                "published": PUBLISHED, "provenance": provenance(device, ["python", *sys.argv] if argv is None else argv),
                "runs": list(runs.values()),
            }
            tmp = results_path.with_name("results.json.tmp")
            tmp.write_text(json.dumps(results, indent=1) + "\n")
            os.replace(tmp, results_path)
            _write_report(out, results)
            print(f"{name}: {runs[name]['accuracy_final']:.2f}% after {result.epochs_run} epochs "
                  f"({result.train_time_s / 60:.1f} min); {out / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
