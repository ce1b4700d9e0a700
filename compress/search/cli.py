"""The search's command line: ``python -m compress.search`` now, ``compress-bench search`` once wired.

:func:`add_arguments` fills any ``argparse`` parser (a sub-command's too) and :func:`main` runs the
parsed arguments, returning the exit status (0 done, 2 bad input).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from ..bench import resolve_data
from ..data import DatasetError
from ..recipes import RecipeError
from .space import Budget, Proxy, SearchSpace
from .study import search

__all__ = ["DESCRIPTION", "add_arguments", "main"]

DESCRIPTION = (
    "Search stages, blocks, widths, kernels, squeeze-and-excitation (and a whitening stem) of a compress ResNet "
    "for the most accurate model within a params / FLOPs / latency budget (Optuna; docs/search.md)."
)


def _list(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r} ({e})") from None
    return parse


def _bool(text: str) -> bool:
    if text.strip().lower() in ("yes", "true", "1"):
        return True
    if text.strip().lower() in ("no", "false", "0"):
        return False
    raise ValueError(f"{text!r} is not yes or no")


def _count(text: str) -> int:
    """A positive integer, written with optional underscores or as 5e6."""
    try:
        value = float(text.replace("_", "")) if any(c in text for c in "eE.") else int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the search's options to ``parser`` (its own, or a ``search`` sub-command's)."""
    g = parser.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", required=True, help="run folder: study.db, trials.json, recipe, plots")
    g.add_argument("--data", metavar="PATH", default=None,
                   help="CIFAR-10 (folder or .npz; default $COMPRESS_DATA, else ./data), or synthetic[:N_TRAIN[:N_TEST]]")
    g.add_argument("--download", action="store_true", help="download CIFAR-10 through torchvision if absent")
    g.add_argument("--base", default="resnet18", metavar="MODEL",
                   help="resnet18 (default), or a recipe name or YAML path (without weights) to search around")
    g.add_argument("--trials", type=int, default=30, metavar="N",
                   help="stop once the study holds N trained trials, all workers together (default 30; 0: only "
                        "write the outputs from the storage)")
    g.add_argument("--timeout", type=_positive, default=None, metavar="MIN", help="this process stops after MIN minutes")
    g.add_argument("--storage", metavar="URL", default=None,
                   help="Optuna storage URL shared by all workers, e.g. postgresql://user:pw@host/db "
                        "(default: sqlite:///OUT/study.db)")
    g.add_argument("--study", metavar="NAME", default="search", help="study name in the storage (default search)")
    g.add_argument("--device", default=None, help="training device (default: cuda if available, else cpu)")
    g.add_argument("--no-progress", action="store_true", help="one plain line per trial instead of a progress bar")
    g.add_argument("--recipe-name", default="search-best", metavar="NAME",
                   help="name (and file OUT/NAME.yaml) of the best trial's recipe (default search-best)")

    g = parser.add_argument_group("budget (checked before any training)")
    g.add_argument("--max-params", type=_count, default=5_000_000, metavar="N", help="default 5000000")
    g.add_argument("--no-params-budget", action="store_true", help="no bound on params")
    g.add_argument("--max-flops", type=_count, default=None, metavar="N", help="FLOPs of one 32x32 image (fvcore)")
    g.add_argument("--max-latency-ms", type=_positive, default=None, metavar="MS", help="measured median latency")
    g.add_argument("--latency-batch", type=_count, default=1, metavar="N", help="batch size of the latency (default 1)")
    g.add_argument("--latency-device", default="cpu", help="device latency is measured on (default cpu)")
    g.add_argument("--latency-repeats", type=_count, default=10, metavar="N", help="timed blocks per latency (default 10)")
    g.add_argument("--latency-block", type=_positive, default=0.1, metavar="S",
                   help="seconds each timed block lasts at least (default 0.1)")

    g = parser.add_argument_group("space (comma-separated choices; one choice fixes a dimension)")
    g.add_argument("--space", metavar="FILE", default=None,
                   help="YAML mapping of SearchSpace fields (stages, blocks, widths, kernels, se, whiten, "
                        "se_reduction, whiten_kernel); the flags below override it")
    g.add_argument("--stages", type=_list(int), default=None, help="stages kept (default 2,3,4)")
    g.add_argument("--blocks", type=_list(int), default=None, help="blocks per stage (default 1,2,3,4,5,6)")
    g.add_argument("--widths", type=_list(float), default=None, help="width factor per stage (default 0.25,0.375,0.5,0.75,1)")
    g.add_argument("--kernels", type=_list(int), default=None, help="block kernel size per stage (default 3,5)")
    g.add_argument("--se", type=_list(str), default=None, help="SE placement: none,stem,blocks (default all three)")
    g.add_argument("--whiten", type=_list(_bool), default=None,
                   help="whitening stem: no (default), yes, or no,yes to search it")

    g = parser.add_argument_group("proxy training and search")
    g.add_argument("--epochs", type=_count, default=3, help="proxy epochs per trial (default 3)")
    g.add_argument("--train-images", type=_count, default=5000, metavar="N", help="proxy training images (default 5000)")
    g.add_argument("--val-images", type=_count, default=1000, metavar="N",
                   help="validation images carved from the training set (default 1000)")
    g.add_argument("--batch-size", type=_count, default=None, metavar="N", help="proxy batch size (default the fast schedule's)")
    g.add_argument("--proxy-seed", type=int, default=0, metavar="N", help="seed of the split, the init and training (default 0)")
    g.add_argument("--objectives", type=_list(str), default=("accuracy",),
                   help="accuracy (default; pruned per epoch), or e.g. accuracy,latency for a multi-objective study")
    g.add_argument("--sampler", choices=("tpe", "random", "nsga2"), default="tpe", help="Optuna sampler (default tpe)")
    g.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median", help="Optuna pruner (default median)")
    g.add_argument("--seed", type=int, default=None,
                   help="sampler seed (default: none, so that each worker samples its own candidates)")
    g.add_argument("--heartbeat", type=int, default=60, metavar="S",
                   help="trial heartbeat in seconds; a trial silent for 2*S is failed and retried (default 60)")


def _space(args: argparse.Namespace) -> Any:
    fields: dict[str, Any] = {}
    if args.space is not None:
        try:
            loaded = yaml.safe_load(Path(args.space).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"--space {args.space}: cannot be read as YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(loaded, dict):
            raise ValueError(f"--space {args.space}: expected a mapping of SearchSpace fields, got {type(loaded).__name__}")
        fields.update(loaded)
    for name in ("stages", "blocks", "widths", "kernels", "se", "whiten"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return SearchSpace.from_dict(fields)


def main(args: argparse.Namespace) -> int:
    """Run the search the parsed ``args`` describe; print where its outputs are. 0: done, 2: bad input."""
    try:
        space = _space(args)
        budget = Budget(params=None if args.no_params_budget else args.max_params, flops=args.max_flops,
                        latency_ms=args.max_latency_ms, latency_batch=args.latency_batch,
                        latency_device=args.latency_device, latency_repeats=args.latency_repeats,
                        latency_min_block_s=args.latency_block)
        proxy = Proxy(epochs=args.epochs, train_images=args.train_images, val_images=args.val_images,
                      seed=args.proxy_seed, train={"batch_size": args.batch_size} if args.batch_size else None)
        data = resolve_data(args.data, download=args.download)
        result = search(
            args.base, space, budget, data=data, out=args.out, n_trials=args.trials,
            timeout_s=None if args.timeout is None else 60 * args.timeout, proxy=proxy, objectives=args.objectives,
            storage=args.storage, study_name=args.study, sampler=args.sampler, pruner=args.pruner, seed=args.seed,
            device=args.device, progress=not args.no_progress, log=print, heartbeat_s=args.heartbeat,
            recipe_name=args.recipe_name,
        )
    except (ValueError, TypeError, DatasetError, RecipeError) as e:
        print(f"search: error: {e}", file=sys.stderr)
        return 2
    best = result.best
    if best is None:
        print(f"no trial finished yet; trials: {result.files['trials']}")
    else:
        print(f"best: trial {best['number']}, {100 * best['proxy_accuracy']:.2f}% validation accuracy (proxy), "
              f"{best['params']:,} params, {best['flops']:,} FLOPs")
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0
