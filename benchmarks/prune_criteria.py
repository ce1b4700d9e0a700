"""Which ranking and importance keep most accuracy when a trained network is pruned, before fine-tuning.

The trained ResNet-56 of ``../shared/weights/`` (He et al. option A, 93.39% on the CIFAR-10 test set) is
pruned by :func:`compress.prune` to at most ``1 / --speedup`` of its FLOPs (budget mode, so every run
lands just under the same FLOPs) with each ``--scopes`` x ``--rankings`` x ``--importances`` setting,
and each pruned model is evaluated on the real CIFAR-10 test set *without any fine-tuning*. Scope
``all`` may prune every layer, residual streams included; ``inner`` keeps the residual streams whole
(stem, each block's second conv and the shortcuts are ignored) and prunes only the blocks' inner
widths. ``local`` ranking prunes every group by the same ratio; ``global`` ranks channels across
groups (with ``--max-ratio`` per group). ``taylor`` gets its gradients from ``--taylor-images``
training images (never test images). The baseline (unpruned) accuracy is measured the same way.

    # the measurement (17 evaluations of 10,000 images: about 10-15 minutes on a 2-core CPU)
    python benchmarks/prune_criteria.py --data /tmp/cifar10.npz
    # the same settings in plain Torch-Pruning too (MetaPruner), beside each of compress's
    python benchmarks/prune_criteria.py --data /tmp/cifar10.npz --rankings global --importances l1,l2 \\
        --torch-pruning --out benchmarks/results/prune-criteria-resnet56-vs-torch-pruning.json
    # a smoke run (500 test images, two settings; not a measurement)
    python benchmarks/prune_criteria.py --data /tmp/cifar10.npz --limit 500 --rankings global \\
        --importances l1 --out runs/prune-criteria-smoke.json

The model comes from :func:`compress.models.from_checkpoint` (option-A shortcuts as frozen 0/1 1x1
convs). The JSON (``--out``) records the command, commit, device and date.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

import compress
from compress.data import cifar10
from compress.models import from_checkpoint, input_normalization
from compress.provenance import provenance

ROOT = Path(__file__).resolve().parent.parent
# ../shared/weights beside the checkout (or beside the folder of worktrees)
DEFAULT_WEIGHTS = next(
    (p for p in (r / "shared" / "weights" / "resnet56-4bfd9763.th" for r in (ROOT.parent, ROOT.parent.parent)) if p.exists()),
    ROOT.parent / "shared" / "weights" / "resnet56-4bfd9763.th",
)
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "prune-criteria-resnet56.json"
OPTION_A_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # akamaster/pytorch_resnet_cifar10
FORMAT = "compress.prune-criteria/1"
# what each scope leaves whole (compress ResNet names): nothing, or the residual streams
SCOPES = {"all": (), "inner": ("conv1", "layer*.*.conv2", "layer*.*.shortcut")}


def load_trained(path: Path) -> tuple[nn.Module, tuple, str]:
    """The trained network as a compress ResNet, its input normalisation, and which loader made it."""
    model = from_checkpoint(path)
    return model, input_normalization(model) or OPTION_A_NORMALIZATION, "compress.models.from_checkpoint"


def normalized(x: torch.Tensor, norm: tuple) -> torch.Tensor:
    mean = torch.tensor(norm[0]).view(1, -1, 1, 1)
    std = torch.tensor(norm[1]).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: tuple, device: str, batch: int) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode on uint8 images ``x``."""
    model.eval().to(device)
    correct = 0
    for i in range(0, len(x), batch):
        out = model(normalized(x[i:i + batch], norm).to(device))
        correct += int((out.argmax(1).cpu() == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)


def torch_pruning(model: nn.Module, scope: str, ranking: str, importance: str, budget: int, taylor_data) -> nn.Module:
    """The same setting in plain Torch-Pruning: ``MetaPruner`` with the scope's layers (and the classifier)
    ignored, its ``pruning_ratio`` bisected to the largest FLOP count within ``budget``."""
    ignored_names = SCOPES[scope] + ("linear",)

    def run(ratio: float) -> nn.Module:
        net = copy.deepcopy(model).eval()
        ignored = [m for n, m in net.named_modules() if n and any(fnmatch.fnmatchcase(n, p) for p in ignored_names)]
        imp = {"l1": tp.importance.GroupMagnitudeImportance(p=1), "l2": tp.importance.GroupMagnitudeImportance(p=2),
               "taylor": tp.importance.GroupTaylorImportance(), "bn_scale": tp.importance.BNScaleImportance()}[importance]
        pruner = tp.pruner.MetaPruner(net, torch.zeros(1, 3, 32, 32), importance=imp, pruning_ratio=ratio,
                                      ignored_layers=ignored, global_pruning=ranking == "global")
        if importance == "taylor":
            net.zero_grad()
            for x, y in taylor_data:
                nn.functional.cross_entropy(net(x), y).backward()
            for q in net.parameters():
                if q.grad is None:
                    q.grad = torch.zeros_like(q)
        pruner.step()
        return net

    lo, hi = 0.0, 0.95
    for _ in range(14):
        mid = (lo + hi) / 2
        if compress.count_flops(run(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    return run(hi)


def describe(model: nn.Module) -> str:
    cfg = getattr(model, "config", None)
    return cfg.describe() if cfg is not None else ""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="trained checkpoint (default: %(default)s)")
    p.add_argument("--data", required=True, help="CIFAR-10 (e.g. /tmp/cifar10.npz)")
    p.add_argument("--speedup", type=float, default=2.0, help="prune to at most FLOPs / speedup (default: 2)")
    p.add_argument("--scopes", default="all,inner", help="comma-separated: all, inner (default: %(default)s)")
    p.add_argument("--rankings", default="local,global", help="comma-separated (default: %(default)s)")
    p.add_argument("--importances", default="l1,l2,taylor,bn_scale", help="comma-separated (default: %(default)s)")
    p.add_argument("--max-ratio", type=float, default=1.0, help="per-layer cap for global ranking (default: 1)")
    p.add_argument("--steps", type=int, default=1, help="prune in this many steps, rescoring between (default: 1)")
    p.add_argument("--taylor-images", type=int, default=512, help="training images for taylor's gradients")
    p.add_argument("--limit", type=int, default=0, help="evaluate on the first N test images only (0: all 10,000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--torch-pruning", action="store_true",
                   help="also prune each setting with plain Torch-Pruning (MetaPruner, ratio bisected to the budget) and evaluate it")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    args = p.parse_args(argv)

    prov = provenance(args.device)  # the code that runs: taken before anything else, not when writing
    data = cifar10(args.data)
    test_x, test_y = data.test_x, data.test_y
    if args.limit:
        test_x, test_y = test_x[: args.limit], test_y[: args.limit]
    model, norm, loader = load_trained(args.weights)
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(data.train_x), generator=gen)[: args.taylor_images]
    taylor_data = [(normalized(data.train_x[pick[i:i + 64]], norm), data.train_y[pick[i:i + 64]]) for i in range(0, len(pick), 64)]

    flops0, params0 = compress.count_flops(model), compress.count_params(model)
    budget = int(flops0 / args.speedup)
    t = time.perf_counter()
    base_acc = accuracy(model, test_x, test_y, norm, args.device, args.batch_size)
    print(f"unpruned: {params0:,} params, {flops0:,} FLOPs, {base_acc:.2f}% ({len(test_x):,} test images, "
          f"{time.perf_counter() - t:.0f} s)", flush=True)
    runs = []
    settings = [(s, r, i) for s in args.scopes.split(",") for r in args.rankings.split(",") for i in args.importances.split(",")]
    for scope, ranking, importance in settings:
        if scope not in SCOPES:
            p.error(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")
        t = time.perf_counter()
        pruned = compress.prune(
            model, target_flops=budget, ranking=ranking, importance=importance, max_ratio=args.max_ratio,
            steps=args.steps, ignore=SCOPES[scope], data=taylor_data if importance == "taylor" else None,
        )
        prune_s = time.perf_counter() - t
        flops, params = compress.count_flops(pruned), compress.count_params(pruned)
        acc = accuracy(pruned, test_x, test_y, norm, args.device, args.batch_size)
        runs.append(dict(scope=scope, ranking=ranking, importance=importance, params=params, flops=flops,
                         speedup=round(flops0 / flops, 3), accuracy=round(acc, 2), prune_seconds=round(prune_s, 1),
                         widths=describe(pruned)))
        print(f"{scope:>5} {ranking:>6} {importance:<8} {acc:6.2f}%  {params:>9,} params  {flops:>12,} FLOPs "
              f"({flops0 / flops:.2f}x)  pruned in {prune_s:.1f} s", flush=True)
        if args.torch_pruning:
            ref = torch_pruning(model, scope, ranking, importance, budget, taylor_data)
            same = [a.shape for a in pruned.state_dict().values()] == [b.shape for b in ref.state_dict().values()]
            ref_acc = accuracy(ref, test_x, test_y, norm, args.device, args.batch_size)
            runs[-1]["torch_pruning"] = dict(params=compress.count_params(ref), flops=compress.count_flops(ref),
                                             accuracy=round(ref_acc, 2), same_widths=same)
            print(f"{'':>5} {'':>6} {'':<8} {ref_acc:6.2f}%  {compress.count_params(ref):>9,} params  "
                  f"{compress.count_flops(ref):>12,} FLOPs  Torch-Pruning (same widths: {same})", flush=True)
    best = max(runs, key=lambda r: r["accuracy"])
    result = {
        "format": FORMAT,
        "provenance": prov,
        "note": "accuracy right after pruning, no fine-tuning; top-1 on the CIFAR-10 test images evaluated",
        "model": {"weights": str(args.weights), "loader": loader, "params": params0, "flops": flops0,
                  "accuracy": round(base_acc, 2), "normalization": {"mean": norm[0], "std": norm[1]}},
        "settings": {"speedup": args.speedup, "target_flops": budget, "max_ratio": args.max_ratio, "steps": args.steps,
                     "taylor_images": args.taylor_images, "test_images": len(test_x)},
        "runs": runs,
        "best": {k: best[k] for k in ("scope", "ranking", "importance", "accuracy")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"best: {best['scope']} {best['ranking']} {best['importance']} ({best['accuracy']:.2f}%); wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
