"""Prune a trained network to a FLOP budget, then fine-tune it, with and without distillation, with and
without sparse learning before the cut.

The ResNet-56 benchmark of issues 11 and 28 (Torch-Pruning's published figure: 93.53% -> 93.77% at 2.13x
fewer FLOPs, on its own option-B ResNet-56, with sparse learning): the trained ResNet-56 of
``../shared/weights/`` is imported with :func:`compress.models.from_checkpoint` and evaluated; for each
criterion it is pruned once by :func:`compress.prune` to at most ``1 / --speedup`` of its FLOPs (default
2.13x fewer) and evaluated right after pruning; then each *arm* fine-tunes that pruned network with
:func:`compress.training.train`, without (``l2``) or with (``l2+kd``) distillation from the unpruned
network. The criterion ``sparse`` is the whole path of :func:`compress.prune_trained`: ``--sparse-epochs``
of training with DepGraph's group-norm regulariser (``--sparse-method``, ``--reg``; no weight decay,
Torch-Pruning's setting) on exactly the groups the cut removes channels from, then the cut (L2, as
``l2``); ``sparse`` and ``sparse+kd`` fine-tune it. Every arm records params, FLOPs, the measured
latency of the pruned network (:func:`compress.measure_latency`, eager, batch 1 and 256, the arm's threads)
next to the unpruned one's, accuracy before and right after pruning (and after sparse learning), the
test accuracy after each fine-tuning epoch (the final epoch's is the result, never the best), images/s,
and the pruning, fine-tuning and total wall times.

Length of the fine-tuning, per arm: ``--epochs N``, or ``--minutes M``, a wall-time budget: a short
probe of the arm's own training step (with its teacher, on its threads) fixes the number of epochs that
fit M minutes (:func:`compress.training.budget.plan`; stored in the arm's ``plan.json`` and reused on
resume), and the learning-rate schedule is laid over exactly those epochs.

Fine-tuning schedule, per run: ``--finetune fast`` (the default), the trainer's ``fast`` schedule over the
arm's epochs (its final accuracy is then with mirror + translate test-time augmentation; the record
and the report give it without too), or ``--finetune plain`` (SGD from lr 0.01, cosine, crop + flip, no
TTA; the schedule of the 2026-12-01 runs). ``--lr`` sets either one's peak learning rate (``fast``: per
1024 images, 8.0 by default). The sparse arms' sparse learning uses the same schedule, without weight
decay. Why ``fast``, and why its own peak: benchmarks/results/resnet20-finetune-pilot-cpu-2026-12-02/.

Default length: ``--epochs 15`` of fine-tuning for every arm and ``--sparse-epochs 15`` before the cut
for the sparse arms, so the longest arm (``sparse+kd``) trains 30 epochs in all, every arm fine-tunes
equally long, and sparse learning comes on top (as in Torch-Pruning's table: 100 + 100 epochs).

Arms are independent: ``--arm`` picks some (default all four), so each may run in its own process,
with ``--threads 1`` each on a small CPU. Everything lives under ``--out``::

    baseline.json          the unpruned network: params, FLOPs, test accuracy
    prune-<crit>/          the pruned network of one criterion (pruned.pt, compress.save) and its record
                           (prune-sparse/sparse/: the sparse-learning phase's trainer folder)
    <arm>/                 the arm's trainer folder (checkpoint.pt, history.json, model.pt), plan.json
    <arm>/arm.json         the arm's record; its presence means "finished, skipped on re-run"
    results.json, report.md, curves.png   every finished arm, rewritten after each one (``--collect``: now)

A killed arm resumes from its last checkpoint when its command is repeated (the pruned network is read
back from ``prune-<crit>/pruned.pt``, not pruned again); two processes never run the same arm, and the
second process that needs a criterion's pruned network waits for the first to write it.

    # the benchmark (issue 28): 4 arms in parallel, one thread each, 15 + 15 epochs (at most 30 per arm),
    # every arm at >= 2.13x fewer FLOPs, widths rounded to multiples of 8 for deployment
    for arm in l2 l2+kd sparse sparse+kd; do
      nice -n 5 python benchmarks/prune_trained.py --data /tmp/cifar10.npz --device cpu --epochs 15 \\
          --sparse-epochs 15 --speedup 2.13 --prune-kwargs '{"round_to": 8}' --arm $arm --threads 1 \\
          --no-progress --out benchmarks/results/resnet56-sparse-prune-finetune-cpu \\
          > runs/prune-trained-$arm.log 2>&1 &
    done; wait
    # the same on a GPU, one arm after another
    python benchmarks/prune_trained.py --data /tmp/cifar10.npz --device cuda --epochs 15 --sparse-epochs 15 \\
        --speedup 2.13 --prune-kwargs '{"round_to": 8}' --no-progress \\
        --out benchmarks/results/resnet56-sparse-prune-finetune-gpu
    # issue 11's run: one hour of fine-tuning per arm, criteria l1 and taylor
    for arm in l1 l1+kd taylor taylor+kd; do
      nice -n 5 python benchmarks/prune_trained.py --data /tmp/cifar10.npz --device cpu --minutes 60 \\
          --speedup 2 --arm $arm --threads 1 --no-progress --out benchmarks/results/resnet56-prune-finetune-cpu \\
          > runs/prune-trained-$arm.log 2>&1 &
    done; wait
    # a smoke run (2 steps per epoch on 512 training and 500 test images, 1 + 1 epochs; not a measurement)
    python benchmarks/prune_trained.py --data /tmp/cifar10.npz --device cpu --epochs 1 --sparse-epochs 1 \\
        --max-steps 2 --subset 512:500 --latency-repeats 3 --out runs/prune-smoke
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's compress, not another copy installed in the environment
    sys.path.insert(0, str(ROOT))

import compress  # noqa: E402
from compress.bench import resolve_data  # noqa: E402
from compress.data import ImageData  # noqa: E402
from compress.files import FolderBusyError, lock_folder, write_json  # noqa: E402
from compress.models import from_checkpoint, input_normalization  # noqa: E402
from compress.provenance import provenance  # noqa: E402
from compress.training import TrainConfig, train  # noqa: E402
from compress.training.augment import normalize  # noqa: E402
from compress.training.budget import BudgetPlan, plan  # noqa: E402
from compress.training.prune_trained import SparseConfig  # noqa: E402
from compress.training.schedules import FAST_TRAIN  # noqa: E402
from compress.transforms.prune import IMPORTANCES  # noqa: E402

# ../shared/weights beside the checkout (or beside the folder of worktrees); $COMPRESS_WEIGHTS first
_WEIGHTS_DIRS = [Path(os.environ["COMPRESS_WEIGHTS"])] if os.environ.get("COMPRESS_WEIGHTS") else []
DEFAULT_WEIGHTS = next(
    (p for p in (d / "resnet56-4bfd9763.th" for d in
                 [*_WEIGHTS_DIRS, ROOT.parent / "shared" / "weights", ROOT.parent.parent / "shared" / "weights"])
     if p.is_file()),
    ROOT.parent / "shared" / "weights" / "resnet56-4bfd9763.th",
)
FORMAT = "compress.prune-trained/3"
ARMS = ("l2", "l2+kd", "sparse", "sparse+kd")
SPARSE = "sparse"  # the criterion of the sparse-learning arms: compress.prune_trained's path, cut with L2
#: Latency of the networks: compress.measure_latency, eager, at these batch sizes.
LATENCY_BATCHES = (1, 256)

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
#: ``--finetune fast``: the trainer's ``fast`` schedule (compress.training.schedules.FAST_TRAIN: decoupled
#: Nesterov SGD, warm-up then linear decay, label smoothing, translate + alternating flips, mirror +
#: translate TTA of the final model) laid over the fine-tuning's epochs; ``--lr`` sets its peak (per 1024 images).
FINETUNE_FAST: dict[str, Any] = {**FAST_TRAIN, "eval_batch_size": 500, "seed": 0}
FINETUNES = {"plain": FINETUNE, "fast": FINETUNE_FAST}
DISTILL = {"temperature": 4.0, "weight": 0.9}
#: How the network is pruned: what kept most accuracy when this ResNet-56 was pruned to half its FLOPs
#: without fine-tuning (benchmarks/results/prune-criteria-resnet56.json): global ranking, residual
#: streams kept whole (only the blocks' inner widths pruned).
PRUNE: dict[str, Any] = {"ranking": "global", "keep_residual": True}
PUBLISHED = {"source": "Torch-Pruning (Fang et al., CVPR 2023), ResNet-56 option B, CIFAR-10",
             "before": 93.53, "after": 93.77, "speedup": 2.13}


def _arm(text: str) -> str:
    crit, kd = text[:-3] if text.endswith("+kd") else text, text.endswith("+kd")
    if crit not in IMPORTANCES and crit != SPARSE:
        raise argparse.ArgumentTypeError(
            f"arm {text!r}: CRITERION or CRITERION+kd, CRITERION one of {', '.join(sorted([*IMPORTANCES, SPARSE]))}")
    return f"{crit}{'+kd' if kd else ''}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="trained checkpoint (default: %(default)s)")
    p.add_argument("--data", help="CIFAR-10 (.npz, cifar-10-batches-py folder, ...) or synthetic:N_TRAIN:N_TEST")
    p.add_argument("--out", type=Path, required=True, help="output folder (see above)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--arm", type=_arm, nargs="+", default=None, metavar="ARM",
                   help=f"arms to run, CRITERION[+kd] (default: {' '.join(ARMS)})")
    p.add_argument("--importance", type=_arm, nargs="+", default=None, metavar="CRITERION",
                   help="instead of --arm: these criteria, each with the --distill settings")
    p.add_argument("--distill", nargs="+", default=["off", "on"], choices=["off", "on"],
                   help="with --importance: fine-tune without/with distillation (default: off on)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help="fine-tuning epochs per arm (default 15)")
    g.add_argument("--minutes", type=float, help="fine-tuning wall time per arm: the epochs that fit, from a probe")
    p.add_argument("--collect", action="store_true", help="only rewrite results.json, report.md, curves.png from finished arms")
    p.add_argument("--finetune", default="fast", choices=sorted(FINETUNES),
                   help="fine-tuning schedule: plain (SGD 0.01, cosine) or fast (the trainer's fast schedule; default %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the fine-tuning schedule (its own units)")
    p.add_argument("--speedup", type=float, default=2.13, help="FLOPs of the pruned model <= FLOPs / speedup (default 2.13)")
    p.add_argument("--sparse-epochs", type=int, default=15, help="sparse arms: epochs of sparse learning before the cut (default 15)")
    p.add_argument("--sparse-method", default="group_norm", choices=["group_norm", "growing_reg"],
                   help="sparse arms: the regulariser (default group_norm, DepGraph's)")
    p.add_argument("--reg", type=float, default=5e-4, help="sparse arms: regularisation coefficient (default 5e-4)")
    p.add_argument("--prune-kwargs", type=json.loads, default={}, metavar="JSON",
                   help=f"compress.prune arguments over {json.dumps(PRUNE)}, e.g. '{{\"round_to\": 8}}'")
    p.add_argument("--taylor-images", type=int, default=512, help="training images for data-aware importance (default 512)")
    p.add_argument("--max-steps", type=int, default=None, help="cap steps per epoch (smoke runs)")
    p.add_argument("--latency-repeats", type=int, default=10, help="timed blocks per latency measurement (default 10)")
    p.add_argument("--subset", default=None, metavar="N[:M]",
                   help="use the first N training (and M test) images only (smoke runs; not a measurement)")
    p.add_argument("--amp", default=None, choices=["bf16", "fp16", "none"], help="override the trainer's autocast setting")
    p.add_argument("--checkpoint-every", type=float, default=5.0, metavar="MIN",
                   help="mid-epoch checkpoints this often (default 5 min; 0: only at epoch ends)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.arm is not None and args.importance is not None:
        p.error("give --arm or --importance (with --distill), not both")
    if args.importance is not None:
        if any(c.endswith("+kd") for c in args.importance):
            p.error("--importance takes criteria (l1, taylor, ...); distillation is --distill on")
        args.arm = [f"{c}{'+kd' if d == 'on' else ''}" for c in args.importance for d in args.distill]
    args.arm = args.arm or list(ARMS)
    if not args.collect and args.epochs is None and args.minutes is None:
        args.epochs = 15
    if args.sparse_epochs < 1:
        p.error(f"--sparse-epochs must be >= 1, got {args.sparse_epochs}")
    if not args.collect and args.data is None:
        p.error("--data is required (CIFAR-10, e.g. /tmp/cifar10.npz)")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.minutes is not None and not args.minutes > 0:
        p.error(f"--minutes must be > 0, got {args.minutes}")
    return args


@contextlib.contextmanager
def _waiting_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` held for the block; waits while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _finetune_config(args: argparse.Namespace, epochs: int, distill: bool) -> TrainConfig:
    d = {**FINETUNES[args.finetune], "epochs": epochs}
    if args.lr is not None:
        d["optimizer"] = {**d["optimizer"], "lr": args.lr}
    if args.amp:
        d["amp"] = args.amp
    if distill:
        d["distill"] = DISTILL
    return TrainConfig.from_dict(d)


def _taylor_data(model: torch.nn.Module, data: ImageData, n_images: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of 64 random training images (never test images), normalised as the model expects."""
    mean, std = input_normalization(model)
    idx = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:n_images]
    return [(normalize(data.train_x[i], mean, std), data.train_y[i]) for i in idx.split(64)]


def _latency(model: torch.nn.Module, device: str, repeats: int) -> dict[str, float]:
    """Median milliseconds per forward pass, by batch size (compress.measure_latency, eager, this process's threads)."""
    r = compress.measure_latency(model, batch_sizes=LATENCY_BATCHES, device=device, repeats=repeats)
    return {str(b): r.timing(b).median_ms for b in LATENCY_BATCHES}


def _baseline(args, teacher, data, device) -> dict[str, Any]:
    path = args.out / "baseline.json"
    with _waiting_lock(args.out / ".baseline.lock"):
        old = _read(path)
        sha = hashlib.sha256(args.weights.read_bytes()).hexdigest()
        if old and old["sha256"] == sha and old["test_images"] == len(data.test_y) and "latency_ms" in old:
            return old
        t = time.perf_counter()
        r = compress.evaluate(teacher, data, device=device, progress=not args.no_progress)
        base = {"weights": str(args.weights), "sha256": sha, "params": compress.count_params(teacher),
                "flops": compress.count_flops(teacher), "accuracy": 100 * r.accuracy, "correct": r.correct,
                "test_images": r.total, "eval_time_s": time.perf_counter() - t, "latency_ms": _latency(teacher, device, args.latency_repeats)}
        write_json(path, base)
        return base


def _pruned(args, crit: str, teacher, data, device, budget: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The pruned network of criterion ``crit`` and its record: read back if a process already wrote them."""
    folder = args.out / f"prune-{crit}"
    kwargs = {**PRUNE, **args.prune_kwargs}
    if crit == SPARSE:
        kwargs = {**kwargs, "importance": "l2", "sparse": {"method": args.sparse_method, "epochs": args.sparse_epochs,
                                                             "reg": args.reg}}
    with _waiting_lock(args.out / f".prune-{crit}.lock"):
        info = _read(folder / "pruned.json")
        if info is not None:
            if info["prune_kwargs"] != kwargs or info["target_flops"] != budget or info["test_images"] != len(data.test_y):
                raise SystemExit(f"{folder} was pruned with {info['prune_kwargs']}, budget {info['target_flops']:,}, "
                                 f"{info['test_images']} test images; this command asks for {kwargs}, {budget:,}, "
                                 f"{len(data.test_y)}: use another --out")
            return compress.load(folder / "pruned.pt"), info
        taylor = _taylor_data(teacher, data, args.taylor_images) if crit == "taylor" else None
        t = time.perf_counter()
        sparse = None
        if crit == SPARSE:  # compress.prune_trained without fine-tuning: sparse learning, then the cut
            kw = {k: v for k, v in kwargs.items() if k != "sparse"}
            learn = SparseConfig(**kwargs["sparse"]).train_config(_finetune_config(args, 1, False))
            pruned, res = compress.prune_trained(
                teacher, data, prune_config=compress.PruneConfig(target_flops=budget, **kw),
                sparse=SparseConfig(**kwargs["sparse"], train=learn), device=device, progress=not args.no_progress,
                out_dir=folder, resume=True, max_steps_per_epoch=args.max_steps)
            sparse = {"accuracy": 100 * res.sparse.test_acc, "epochs": res.sparse.epochs_run,
                      "train_time_s": res.sparse.train_time_s, "regularized": res.regularized,
                      "config": learn.to_dict()}
        else:
            pruned = compress.prune(teacher, target_flops=budget, importance=crit, data=taylor, **kwargs)
        prune_s = time.perf_counter() - t
        r = compress.evaluate(pruned, data, device=device, progress=not args.no_progress)
        info = {"importance": crit, "prune_kwargs": kwargs, "target_flops": budget, "sparse": sparse,
                "taylor_images": args.taylor_images if taylor else None, "params": compress.count_params(pruned),
                "flops": compress.count_flops(pruned), "architecture": pruned.config.describe(),
                "accuracy_pruned": 100 * r.accuracy, "test_images": r.total, "prune_time_s": prune_s}
        compress.save(pruned, folder / "pruned.pt", metadata={"pruned": info})
        write_json(folder / "pruned.json", info)
        print(f"{crit}: pruned in {prune_s:.1f} s to {info['params']:,} params, {info['flops'] / 1e6:.2f} M FLOPs; "
              f"test accuracy {info['accuracy_pruned']:.2f}% before fine-tuning", flush=True)
        return pruned, info


def _length(args, arm: str, pruned, teacher, data, device) -> tuple[int, int | None, dict[str, Any] | None]:
    """(epochs, max_steps_per_epoch, plan): given, or fixed by a probe for --minutes (reused on resume)."""
    if args.epochs is not None:
        return args.epochs, args.max_steps, None
    path = args.out / arm / "plan.json"
    stored = _read(path)
    if stored is not None:
        if stored["minutes"] != args.minutes:
            raise SystemExit(f"{path} was planned for {stored['minutes']} min, this command asks for {args.minutes}")
        p = BudgetPlan.from_dict(stored)
    else:
        cfg = _finetune_config(args, 1, arm.endswith("+kd"))
        p = plan(pruned, data, cfg, args.minutes, device=device, teacher=teacher if cfg.distill else None)
        write_json(path, p.to_dict())
    steps = p.max_steps_per_epoch if args.max_steps is None else min(args.max_steps, p.max_steps_per_epoch or args.max_steps)
    print(f"{arm}: {args.minutes:g} min fit {p.epochs} epochs" + (f" of {p.max_steps_per_epoch} steps" if p.max_steps_per_epoch else "")
          + f" ({p.train_images_per_s:,.0f} train img/s probed; estimated {p.estimated_s / 60:.1f} min)", flush=True)
    return p.epochs, steps, p.to_dict()


def run_arm(args, arm: str, teacher, data, device, base: dict[str, Any]) -> dict[str, Any] | None:
    """Prune (or read back), fine-tune and record one arm; ``None`` if another process is running it."""
    adir = args.out / arm
    crit, kd = arm.removesuffix("+kd"), arm.endswith("+kd")
    t0 = time.perf_counter()
    try:
        with lock_folder(adir, f"arm {arm}"):
            done = _read(adir / "arm.json")
            if done is not None:
                print(f"{arm}: finished, skipping ({adir / 'arm.json'})", flush=True)
                return done
            pruned, info = _pruned(args, crit, teacher, data, device, int(base["flops"] / args.speedup))
            epochs, max_steps, planned = _length(args, arm, pruned, teacher, data, device)
            cfg = _finetune_config(args, epochs, kd)
            resume = (adir / "checkpoint.pt").is_file()
            print(f"{arm}: {'resuming' if resume else 'fine-tuning'} {epochs} epochs into {adir}", flush=True)
            result = train(pruned, data, cfg, out_dir=adir, resume=resume, device=device,
                           progress=not args.no_progress, max_steps_per_epoch=max_steps,
                           teacher=teacher if kd else None,
                           checkpoint_every_s=args.checkpoint_every * 60 if args.checkpoint_every > 0 else None)
            history = [{k: h[k] for k in ("epoch", "train_loss", "test_loss", "test_acc", "test_acc_tta", "images_per_s", "epoch_time_s")
                        if k in h}
                       for h in result.history]
            record = {
                "arm": arm, "importance": crit, "distill": DISTILL if kd else None, "sparse": info.get("sparse"),
                "latency_ms": _latency(result.model, device, args.latency_repeats), "latency_ms_before": base["latency_ms"],
                "params": info["params"], "flops": info["flops"], "speedup": base["flops"] / info["flops"],
                "architecture": info["architecture"], "prune_kwargs": info["prune_kwargs"],
                "accuracy_before": base["accuracy"], "accuracy_pruned": info["accuracy_pruned"],
                "accuracy_final": 100 * result.test_acc, "tta": result.tta,
                "accuracy_final_no_tta": 100 * result.history[-1]["test_acc"],
                "accuracy_per_epoch": [100 * h["test_acc"] for h in result.history],
                "epochs": result.epochs_run, "max_steps_per_epoch": max_steps, "plan": planned,
                "prune_time_s": info["prune_time_s"], "train_time_s": result.train_time_s,
                "images_per_s": result.images_per_s, "wall_time_s_this_process": time.perf_counter() - t0,
                "threads": torch.get_num_threads(), "precision": result.precision,
                "train_images": len(data.train_y), "test_images": len(data.test_y),
                "finetune": cfg.to_dict(), "history": history,
                "provenance": provenance(device, ["python", "benchmarks/prune_trained.py", *sys.argv[1:]]),
            }
            write_json(adir / "arm.json", record)
            print(f"{arm}: {record['accuracy_final']:.2f}%{_tta_note(record)} after {result.epochs_run} epochs "
                  f"({result.train_time_s / 60:.1f} min, {result.images_per_s:,.0f} train img/s)", flush=True)
            return record
    except FolderBusyError as e:
        print(f"{arm}: skipped, {e}", flush=True)
        return None


def _tta_note(record: dict[str, Any]) -> str:
    """`` (TTA mirror_translate; 91.20% without)`` for an arm evaluated with test-time augmentation, else ``""``."""
    if record.get("tta", "none") == "none":
        return ""
    return f" (TTA {record['tta']}; {record['accuracy_final_no_tta']:.2f}% without)"


def collect(out: Path) -> dict[str, Any] | None:
    """Rewrite results.json, report.md and curves.png from every finished arm under ``out``."""
    with _waiting_lock(out / ".results.lock"):
        base = _read(out / "baseline.json")
        arms = [r for a in sorted(p for p in out.iterdir() if p.is_dir()) if (r := _read(a / "arm.json"))]
        arms.sort(key=lambda r: (ARMS.index(r["arm"]) if r["arm"] in ARMS else len(ARMS), r["arm"]))
        if base is None or not arms:
            return None
        results = {"format": FORMAT, "baseline": base, "published": PUBLISHED, "arms": arms}
        write_json(out / "results.json", results)
        _write_report(out, results)
        return results


def _short(commit: str | None) -> str:
    return "?" if not commit else commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")


def _write_report(out: Path, results: dict[str, Any]) -> None:
    arms, base, pub = results["arms"], results["baseline"], results["published"]
    prov = arms[-1]["provenance"]
    smoke = base["test_images"] < 10_000 or any(r["max_steps_per_epoch"] or r["train_images"] < 50_000 for r in arms)
    lines = [
        f"# Pruning a trained network: {Path(base['weights']).name}",
        "",
        f"Written by `benchmarks/prune_trained.py` (commits {', '.join(sorted({_short(r['provenance'].get('git_commit')) for r in arms}))}; "
        f"{prov.get('device_name') or prov.get('device')}, torch {prov['torch']}, "
        f"{min(r['provenance']['date'] for r in arms)[:10]}). Accuracy: top-1 on the {base['test_images']:,} "
        "CIFAR-10 test images; after fine-tuning = the final epoch's, never the best. FLOPs: fvcore "
        "multiply-adds per 32x32 image, BN included (the imported network's zero-padding shortcuts count as "
        "1x1 convs). Each arm's command is in results.json.",
        "",
    ]
    if smoke:
        lines += ["**Not a measurement**: a smoke run on a subset of the data or with capped steps per epoch.", ""]
    lines += [
        "| arm | params | FLOPs | speed-up | latency b1 / b256 | latency speed-up b1 / b256 | acc before | acc after sparse learning | "
        "acc after pruning | acc after fine-tuning | change | epochs (sparse + fine-tune) | train img/s | threads | prune time | fine-tune time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in arms:
        lat, lat0, sp = r.get("latency_ms") or {}, r.get("latency_ms_before") or {}, r.get("sparse")
        latency = " / ".join(f"{lat[b]:.2f}" for b in ("1", "256") if b in lat) + " ms" if lat else ""
        lat_up = " / ".join(f"{lat0[b] / lat[b]:.2f}x" for b in ("1", "256") if b in lat and b in lat0)
        acc_sparse = f"{sp['accuracy']:.2f}%" if sp else ""
        epochs = f"{sp['epochs']} + {r['epochs']}" if sp else str(r["epochs"])
        lines.append(
            f"| {r['arm']} | {r['params']:,} | {r['flops'] / 1e6:.2f} M | {r['speedup']:.2f}x | {latency} | {lat_up} | "
            f"{r['accuracy_before']:.2f}% | {acc_sparse} | "
            f"{r['accuracy_pruned']:.2f}% | {r['accuracy_final']:.2f}%{_tta_note(r)} | {r['accuracy_final'] - r['accuracy_before']:+.2f} | "
            f"{epochs} | {r['images_per_s']:,.0f} | {r['threads']} | "
            f"{r['prune_time_s']:.1f} s | {r['train_time_s'] / 60:.1f} min |"
        )
    lines += [
        f"| published: {pub['source']} | | | {pub['speedup']:.2f}x | | | {pub['before']:.2f}% | | | {pub['after']:.2f}% | "
        f"{pub['after'] - pub['before']:+.2f} | 100 + 100 | | | | |",
        "",
        f"Unpruned: {base['params']:,} params, {base['flops'] / 1e6:.2f} M FLOPs"
        + (f", latency {base['latency_ms']['1']:.2f} / {base['latency_ms']['256']:.2f} ms at batch 1 / 256"
           if base.get("latency_ms") else "")
        + " (latency: compress.measure_latency, eager, median per call, on the arm's device and threads). The published row is copied from "
        "the paper, not measured here; it uses a different ResNet-56 (1x1 conv + BN shortcuts) and a longer schedule.",
        "",
        "![test accuracy per fine-tuning epoch](curves.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lo = min([base["accuracy"] - 3] + [v for r in arms for v in [r["accuracy_pruned"], *r["accuracy_per_epoch"]]])
    for ax, (bottom, title) in zip(axes, ((max(lo - 1, 0), "all epochs"), (base["accuracy"] - 3, "zoom: within 3 points"))):
        for r in arms:
            ax.plot(range(len(r["accuracy_per_epoch"]) + 1), [r["accuracy_pruned"], *r["accuracy_per_epoch"]],
                    marker="o", ms=3, label=r["arm"])
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
    fig.suptitle(f"{Path(base['weights']).name} pruned to about {arms[0]['speedup']:.2f}x fewer FLOPs, then fine-tuned")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen arms (or only collect); returns the exit status."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect:
        results = collect(args.out)
        print(f"{len(results['arms']) if results else 0} finished arms; {args.out / 'report.md'}")
        return 0 if results else 1
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = resolve_data(args.data)
    if args.subset:
        n, _, m = args.subset.partition(":")
        data = data.subset(int(n), int(m) if m else None)
    teacher = from_checkpoint(args.weights)
    base = _baseline(args, teacher, data, device)
    print(f"{args.weights.name}: {base['params']:,} params, {base['flops'] / 1e6:.2f} M FLOPs, test accuracy "
          f"{base['accuracy']:.2f}%; FLOP budget {int(base['flops'] / args.speedup) / 1e6:.2f} M", flush=True)
    for arm in dict.fromkeys(args.arm):
        if run_arm(args, arm, teacher, data, device, base) is not None:
            collect(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
