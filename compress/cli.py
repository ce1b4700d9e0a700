"""``compress-bench``: build, count, train and compare the recipes in ``recipes/``.

    compress-bench --dry-run                    # every recipe: params, FLOPs, claims, 5M budget
    compress-bench 003 004 --budget fast        # train two recipes with the short schedule
    compress-bench --out runs/paper --budget paper
    compress-bench report runs/paper            # re-render the report of a run folder
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.markup import escape

from . import bench, report
from .files import write_json
from .recipes import FAST_TRAIN, RecipeError, check_unique_names, find, load, recipe_paths, recipes_dir

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (anything else is a usage error naming the accepted values)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the main command (``report`` is a separate sub-command)."""
    p = argparse.ArgumentParser(
        prog="compress-bench",
        description=(
            "Build the recipes (ResNet-18 + transforms), count params and FLOPs, train them into a run\n"
            "folder and compare with the reports' claims. Without a GPU (and no --device) or without a\n"
            "dataset it says why in one line and shows the dry run instead.\n\n"
            "sub-command:\n"
            "  compress-bench report RUN_DIR   re-render report.md, plots and the table from RUN_DIR/results.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "fast budget (the shared short schedule; a recipe's `fast:` section overrides fields):\n  "
            + "\n  ".join(f"{k}: {json.dumps(v)}" for k, v in FAST_TRAIN.items())
            + "\nsee docs/recipes.md and docs/report.md"
        ),
    )
    p.add_argument("recipes", nargs="*", metavar="RECIPE",
                   help="recipe names (e.g. 003, resnet18) or YAML paths; default: every recipe in the recipes folder")
    p.add_argument("--recipes-dir", metavar="DIR", default=None,
                   help="folder of recipes (default: $COMPRESS_RECIPES, ./recipes, or the source checkout's)")
    p.add_argument("--dry-run", action="store_true",
                   help="only build the models and print params, FLOPs, the paper's claims and the 5M check")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the table's rows to PATH as JSON")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run folder (default runs/<budget>-<recipes>); re-running skips finished recipes and "
                        "resumes an interrupted one; a folder of a different recipe set is refused")
    p.add_argument("--budget", choices=("fast", "paper"), default="fast",
                   help="training schedule: the shared short one (fast, default) or the report's own (paper)")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="N", help="override the number of epochs")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="minutes of wall time per recipe: a short probe measures images/s on this machine and fixes "
                        "the epochs that fit (stored in the run folder, reused on resume); the fast schedule, with "
                        "batch 128 and flip test-time augmentation, is laid over them")
    p.add_argument("--max-steps-per-epoch", type=_positive_int, default=None, metavar="N",
                   help="cap optimizer steps per epoch (smoke tests)")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="CIFAR-10 as a cifar-10-batches-py folder, an .npz or an image-folder tree; or "
                        "synthetic[:N_TRAIN[:N_TEST]] for a tiny generated set (default: $COMPRESS_DATA, else ./data)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 through torchvision if absent (needs internet)")
    p.add_argument("--device", default=None, help="training device, e.g. cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress output from the trainer")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compress-bench report",
                                description="Render report.md, plots and the terminal table from RUN_DIR/results.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by compress-bench --out")
    return p


def _select(names: Sequence[str], directory: str | None) -> list:
    paths = [find(n, directory) for n in names] if names else recipe_paths(directory)
    if not paths:
        raise RecipeError(f"no recipes in {directory or recipes_dir()}")
    check_unique_names(paths)
    return [load(p) for p in paths]


def _default_out(recipes: list, directory: str | None, budget: str) -> Path:
    everything = {p.stem for p in recipe_paths(directory)}
    names = [r.name for r in recipes]
    tag = "all" if set(names) == everything else "+".join(names)[:60]
    return Path("runs") / f"{budget}-{tag}"


def _dry_run(recipes: list, args: argparse.Namespace, console: Console) -> int:
    rows = bench.dry_run(recipes)
    console.print(report.dry_run_table(rows))
    if args.json:
        write_json(args.json, {"mode": "dry-run", "rows": rows})
        console.print(f"rows written to {args.json}")
    return 0


def _why_not_train(args: argparse.Namespace) -> str | None:
    """A one-line reason to fall back to the dry run, or None if training can go ahead."""
    import torch

    no_gpu = args.device is None and not torch.cuda.is_available()
    no_data = args.data is None and bench.find_dataset() is None and not args.download
    if no_gpu and no_data:
        return "no GPU and no dataset (./data, $COMPRESS_DATA; or pass --data PATH)"
    if no_gpu:
        return "no GPU (pass --device cpu to train on the CPU anyway)"
    if no_data:
        return "no dataset in ./data or $COMPRESS_DATA (pass --data PATH, or --download)"
    return None


def _error(console: Console, message: str) -> None:
    """The one line a failed command prints: ``error: <what went wrong, and what is accepted>``."""
    console.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def _os_error(e: OSError) -> str:
    """An OSError as one readable line: the file, then the reason (``No space left on device``...)."""
    if e.strerror and e.filename is not None:
        return e.strerror if str(e.filename) in e.strerror else f"{e.filename}: {e.strerror}"
    return str(e)


def _report_main(argv: Sequence[str], console: Console) -> int:
    args = _report_parser().parse_args(argv)
    try:
        report.write_report(args.run_dir, console=console)
    except (FileNotFoundError, ValueError) as e:
        _error(console, str(e))
        return 2
    except OSError as e:  # a full disk, a read-only folder: the old report and plots are kept
        _error(console, _os_error(e))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``compress-bench``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that tables do not wrap every cell
        console = Console(width=160)
    if argv[:1] == ["report"]:
        return _report_main(argv[1:], console)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.time_budget is not None:
        if not args.time_budget > 0:
            parser.error(f"--time-budget must be a positive number of minutes, got {args.time_budget:g}")
        if args.epochs is not None or args.max_steps_per_epoch is not None:
            parser.error("--time-budget fixes the epochs itself: drop --epochs / --max-steps-per-epoch")
        if args.budget != "fast":
            parser.error("--time-budget lays the fast schedule over the time it allows: use it with --budget fast")
    from .data import DatasetError
    from .training import NonFiniteLossError

    if args.json and Path(args.json).is_dir():  # found out now, not after the training
        _error(console, f"--json {args.json} is a folder; it takes the path of a file to write")
        return 2
    try:
        recipes = _select(args.recipes, args.recipes_dir)
        if args.dry_run:
            return _dry_run(recipes, args, console)
        reason = _why_not_train(args)
        if reason:
            console.print(f"compress-bench: {reason}; showing the dry run instead.", highlight=False, markup=False)
            return _dry_run(recipes, args, console)
        data = bench.resolve_data(args.data, download=args.download)
        tag = args.budget if args.time_budget is None else f"{args.budget}-{args.time_budget:g}min"
        out = Path(args.out) if args.out else _default_out(recipes, args.recipes_dir, tag)
        try:
            rows = bench.run(
                recipes, out, data, budget=args.budget, epochs=args.epochs,
                max_steps_per_epoch=args.max_steps_per_epoch, device=args.device, progress=not args.no_progress,
                log=lambda s: console.print(s, highlight=False, markup=False), command=["compress-bench", *argv],
                time_budget=args.time_budget,
            )
        except KeyboardInterrupt:
            console.print(f"compress-bench: interrupted; finished recipes and the last epoch checkpoint are kept "
                          f"in {out}: run the same command again to resume.", highlight=False, markup=False)
            return 130
        report.write_report(out, console=console)
        if args.json:
            write_json(args.json, {"mode": "train", "rows": rows})
        return 0
    except (RecipeError, bench.RunFolderError, bench.TrainingError, DatasetError) as e:  # usage errors
        _error(console, str(e))
        return 2
    except NonFiniteLossError as e:  # a diverged run: no row, no number; the last good checkpoint is kept
        _error(console, str(e))
        return 1
    except OSError as e:  # a full disk, a read-only file: every file written so far is whole
        _error(console, _os_error(e))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
