"""``compress-bench``: build, count, train and compare the recipes (built in, and ./recipes).

    compress-bench --dry-run                    # every recipe: params, FLOPs, claims, 5M budget
    compress-bench 003 004 --budget fast        # train two recipes with the short schedule
    compress-bench --out runs/paper --budget paper
    compress-bench report runs/paper            # re-render the report of a run folder
    compress-bench 004 --device cpu --train-images 5000 --epochs 5   # a smaller real run on a CPU
    compress-bench --dry-run --json - | jq .rows   # rows as JSON on stdout (the table goes to stderr)
    compress-bench export 003 --out onnx/       # ONNX file, checked against PyTorch with ONNX Runtime
    compress-bench latency --run runs/paper     # measured CPU speed of the trained models, into the report
    compress-bench eval model.pt --data /tmp/cifar10.npz   # test accuracy, loss, per class
    compress-bench search --out runs/search --data /tmp/cifar10.npz --trials 40   # architecture search (Optuna)

Each sub-command is a :class:`Command` in :data:`COMMANDS` (an argparse sub-parser of
:func:`build_command_parser`); :func:`register` adds one. Without a sub-command, ``compress-bench
[options] RECIPE...`` is ``compress-bench run [options] RECIPE...`` (:func:`build_parser`).

Why this module is long: every sub-command's arguments, help text and handler sit together, one short
section each, so that the whole command line reads in one file; none of them is used elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import bench, deploy, report, runfolder
from .data import DatasetError
from .evaluation import evaluate
from .files import FolderBusyError, write_json
from .io import load as load_model
from .metrics import count_flops, count_params
from .models import from_checkpoint, input_normalization, with_normalization
from .recipes import FAST_TRAIN, RecipeError, check_unique_names, find, load, recipe_paths, recipes_dir
from .search import cli as search_cli
from .training import NonFiniteLossError
from .training.config import MAX_SEED
from .training.distributed import check_device
from .weights import WeightsNotFoundError

__all__ = ["main", "build_parser", "build_command_parser", "Command", "COMMANDS", "register"]


@dataclass(frozen=True)
class Command:
    """A sub-command, ``compress-bench NAME ...``: its argparse sub-parser and what runs it.

    ``synopsis`` and ``summary`` make its line in the main ``--help``; ``description`` and ``epilog`` its
    own ``--help`` (``raw``: printed as written, not re-wrapped); ``add_arguments(parser)`` adds its flags;
    ``run(args, parser, argv)`` does the work and returns the exit status (``parser`` for usage errors,
    ``argv`` the whole command line).
    """

    name: str
    synopsis: str
    summary: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser, list[str]], int]
    epilog: str | None = None
    raw: bool = False


#: The sub-commands by name, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add ``command`` to :data:`COMMANDS` (a name already taken raises ``ValueError``); returns it."""
    if command.name in COMMANDS:
        raise ValueError(f"compress-bench already has a sub-command {command.name!r}")
    COMMANDS[command.name] = command
    return command


_RUN_DESCRIPTION = (
    "Build the recipes (ResNet-18 + transforms), count params and FLOPs, train them into a run\n"
    "folder and compare with the reports' claims. Without a GPU (and no --device) or without a\n"
    "dataset it says why in one line and shows the dry run instead."
)


def _run_epilog() -> str:
    return ("fast budget (the shared short schedule; a recipe's `fast:` section overrides fields):\n  "
            + "\n  ".join(f"{k}: {json.dumps(v)}" for k, v in FAST_TRAIN.items())
            + "\nsee docs/recipes.md and docs/report.md")


def _commands_help() -> str:
    """The main ``--help``'s list of sub-commands, one line each (a long summary wraps under itself)."""
    lines = ["sub-commands (each has its own --help):"]
    for c in COMMANDS.values():
        head = f"  compress-bench {c.synopsis}"
        lines.append(textwrap.fill(c.summary, width=102, initial_indent=head.ljust(34) if len(head) < 33 else head + "   ",
                                   subsequent_indent=" " * 34))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the main command, ``compress-bench [options] RECIPE...`` (the same as
    ``compress-bench run``; the other sub-commands are :func:`build_command_parser`'s)."""
    p = argparse.ArgumentParser(prog="compress-bench", description=_RUN_DESCRIPTION + "\n\n" + _commands_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_run_epilog())
    _add_run_arguments(p)
    return p


def build_command_parser() -> argparse.ArgumentParser:
    """``compress-bench COMMAND ...``: one argparse sub-parser per entry of :data:`COMMANDS`."""
    p = argparse.ArgumentParser(prog="compress-bench", description=_commands_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for c in COMMANDS.values():
        sp = sub.add_parser(c.name, help=c.summary, description=c.description, epilog=c.epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter if c.raw else argparse.HelpFormatter)
        c.add_arguments(sp)
    return p


def _sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parsers of :func:`build_command_parser`'s ``parser``, by command name."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="*", metavar="RECIPE",
                   help="recipe names (e.g. 003, resnet18) or YAML paths; default: every recipe (the built-in ones and ./recipes)")
    p.add_argument("--recipes-dir", metavar="DIR", default=None,
                   help="the one folder of recipes (default: $COMPRESS_RECIPES, else ./recipes added to the built-in recipes)")
    p.add_argument("--dry-run", action="store_true",
                   help="only build the models and print params, FLOPs, the paper's claims and the 5M check")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the table's rows to PATH as JSON; '-' prints them to stdout (everything else "
                        "then goes to stderr)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run folder (default runs/<budget>-<recipes>); re-running skips finished recipes and "
                        "resumes an interrupted one; a folder of a different recipe set is refused")
    p.add_argument("--budget", choices=("fast", "paper"), default="fast",
                   help="training schedule: the shared short one (fast, default) or the report's own (paper)")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help="train N epochs, the schedule laid over them (its lengths in epochs scaled to N): a shorter "
                        "run that still warms up and anneals")
    p.add_argument("--time-budget", type=_minutes, default=None, metavar="MIN",
                   help="minutes of wall time per recipe: a short probe measures images/s on this machine and fixes "
                        "the epochs that fit (stored in the run folder, reused on resume); the fast schedule, with "
                        "batch 128 and flip test-time augmentation, is laid over them")
    p.add_argument("--max-steps-per-epoch", type=_positive_int, default=None, metavar="N",
                   help="smoke tests only: cap the optimizer steps per epoch, squeezing the whole schedule into "
                        "them (on real data the accuracy means nothing; use --train-images / --epochs instead)")
    p.add_argument("--train-images", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images only (a smaller real run)")
    p.add_argument("--test-images", type=_positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images only (faster evaluation)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="override every recipe's batch size (the learning rate is not rescaled)")
    p.add_argument("--lr", type=_positive_float, default=None, metavar="LR",
                   help="override every recipe's (peak) learning rate")
    p.add_argument("--seed", type=_seed, default=None, metavar="N", help=f"override every recipe's seed (0..{MAX_SEED})")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads torch uses for training (default: torch's choice)")
    p.add_argument("--checkpoint-every", type=_non_negative_float, default=5.0, metavar="MIN",
                   help="also checkpoint inside an epoch every MIN minutes (default 5; 0: at epoch ends only)")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="CIFAR-10 as a cifar-10-batches-py folder, an .npz or an image-folder tree; or "
                        "synthetic[:N_TRAIN[:N_TEST]] for a tiny generated set (default: $COMPRESS_DATA, else ./data)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 through torchvision if absent (needs internet)")
    p.add_argument("--device", default=None,
                   help="training device: cpu, cuda, cuda:N or mps, checked before anything starts (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress output from the trainer")
    p.add_argument("--weights-dir", metavar="DIR", default=None,
                   help="folder of already-downloaded published weights (the same as $COMPRESS_WEIGHTS; default: "
                        "that, else torch's hub cache, downloading there once)")
    return p


def _number(kind: type, ok: Any, what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_seed = _number(int, lambda v: 0 <= v <= MAX_SEED, f"an integer in 0..{MAX_SEED}")
_positive_float = _number(float, lambda v: 0 < v < math.inf, "a positive finite number")
_non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
_minutes = _number(float, lambda v: 0 < v < math.inf, "a positive number of minutes")


def _add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by compress-bench --out")


_EXPORT_DESCRIPTION = (
    "Write each model as DIR/NAME.onnx (torch's exporter, batch dimension dynamic) and check it "
    "against PyTorch with ONNX Runtime on random images; a mismatch is an error. A recipe is built "
    "fresh (untrained weights); a MODEL.pt (compress.save, e.g. runs/X/003/model.pt, of any model class importable here) keeps its own.")


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="RECIPE|MODEL.pt", help="recipe names or YAML paths, or saved models")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the .onnx files")
    p.add_argument("--recipes-dir", metavar="DIR", default=None, help="where recipe names are looked up")
    p.add_argument("--image-size", type=_positive_int, default=32, metavar="N", help="input images are 3 x N x N (default 32)")
    p.add_argument("--weights-dir", metavar="DIR", default=None,
                   help="folder of already-downloaded published weights (the same as $COMPRESS_WEIGHTS; default: "
                        "that, else torch's hub cache, downloading there once)")


_LATENCY_DESCRIPTION = (
    "Measure inference latency and throughput on the CPU, without training: median and IQR over "
    "timed repeats after warm-up, against a ResNet-18 measured in the same session. With --run, the "
    "trained models of a run folder are measured and the results go into its report.")


def _add_latency_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="RECIPE|MODEL.pt",
                   help="recipe names or YAML paths (built fresh), or saved models; default: every recipe "
                        "(with --run: every finished recipe of the run)")
    p.add_argument("--run", metavar="RUN_DIR", default=None,
                   help="measure RUN_DIR/<recipe>/model.pt, store the results in its rows and re-render its report")
    p.add_argument("--backend", default="eager", metavar="B[,B...]",
                   help="comma-separated: eager, compile, onnxruntime (default: eager)")
    p.add_argument("--batch-sizes", default="1,256", metavar="N[,N...]", help="default: 1,256")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="CPU threads (default: torch's, the core count)")
    p.add_argument("--repeats", type=_positive_int, default=10, metavar="N", help="timed repeats per batch size (default 10)")
    p.add_argument("--warmup", type=_positive_int, default=3, metavar="N", help="untimed calls first (default 3)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON")
    p.add_argument("--recipes-dir", metavar="DIR", default=None, help="where recipe names are looked up")
    p.add_argument("--weights-dir", metavar="DIR", default=None,
                   help="folder of already-downloaded published weights (the same as $COMPRESS_WEIGHTS; default: "
                        "that, else torch's hub cache, downloading there once)")


def _named_models(targets: Sequence[str], directory: str | None) -> dict:
    """``{name: model}`` for recipe names/paths (built with their seed) and saved ``.pt`` models."""
    models = {}
    for t in targets:
        p = Path(t)
        if p.suffix == ".pt":
            name = p.parent.name if p.stem == "model" and p.parent.name else p.stem
            models[name] = load_model(p)
        else:
            recipe = load(find(t, directory))
            torch.manual_seed(recipe.train.seed)
            models[recipe.name] = recipe.build()
    return models


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise ValueError(f"{flag} takes comma-separated integers such as 1,256; got {text!r}")
    return values


def _export_main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    console = _console()
    say = lambda s: console.print(s, highlight=False, markup=False)  # noqa: E731
    problem = _folder_problem(args.out, "--out")
    if problem:
        _error(console, problem)
        return 2
    try:
        models = _named_models(args.models, args.recipes_dir)
        for name, model in models.items():
            r = deploy.export(model, Path(args.out) / f"{name}.onnx", image_shape=(3, args.image_size, args.image_size))
            say(f"{name}: {r.path} ({r.size_bytes / 1e6:.1f} MB, opset {r.opset}); ONNX Runtime {r.onnxruntime} vs "
                f"PyTorch on {r.checked_batch} random images: max abs diff {r.max_abs_diff:.2g} "
                f"(tolerance {r.tolerance:.2g})")
    except (RecipeError, deploy.ExportError, ValueError, FileNotFoundError) as e:
        _error(console, str(e))
        return 2
    except OSError as e:  # a full disk, a read-only folder: nothing half-written is left
        _error(console, _os_error(e))
        return 1
    return 0


def _latency_main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    console = _console()
    say = lambda s: console.print(s, highlight=False, markup=False)  # noqa: E731
    problem = _json_problem(args.json) or (_folder_problem(args.run, "--run") if args.run else None)
    if problem:
        _error(console, problem)
        return 2
    try:
        backends = tuple(b.strip() for b in args.backend.split(",") if b.strip())
        bad = [b for b in backends if b not in deploy.BACKENDS]
        if bad or not backends:
            raise ValueError(f"--backend {args.backend!r}: choose from {', '.join(deploy.BACKENDS)} (comma-separated)")
        kwargs = dict(backends=backends, batch_sizes=_int_list(args.batch_sizes, "--batch-sizes"), threads=args.threads,
                      repeats=args.repeats, warmup=args.warmup, log=lambda s: say(f"measuring {s}"))
        if args.run:
            rows = runfolder.measure_run(args.run, args.models, **kwargs)
            report.write_report(args.run, console=console)
        else:
            models = _named_models(args.models or [str(p) for p in recipe_paths(args.recipes_dir)], args.recipes_dir)
            rows = deploy.measure(models, **kwargs)
        console.print(report.latency_table(rows))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            write_json(args.json, {"mode": "latency", "rows": rows})
            say(f"rows written to {args.json}")
    except (RecipeError, ValueError, FileNotFoundError, FolderBusyError, runfolder.RunFolderError) as e:
        _error(console, str(e))
        return 2
    except OSError as e:  # a read-only run folder, a full disk: the files already there are kept whole
        _error(console, _os_error(e))
        return 1
    return 0


_EVAL_DESCRIPTION = (
    "Test accuracy, loss and per-class accuracy of a model: a file written by compress.save "
    "(a run folder's model.pt, or a model of any class importable here, e.g. a pruned torchvision model) or a trained checkpoint that compress.models.from_checkpoint "
    "imports (option_a, kuangliu or report003 layout). The model's own input normalisation is used.")


def _add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="the model or checkpoint file")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="CIFAR-10 as for the main command (default: $COMPRESS_DATA, else ./data)")
    p.add_argument("--device", default=None, help="e.g. cuda, cpu (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=500, metavar="N", help="images per forward pass (default 500)")
    p.add_argument("--layout", default="auto", choices=("auto", "option_a", "kuangliu", "report003"),
                   help="checkpoint layout for a file not written by compress.save (default: auto)")
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                   help="evaluate under autocast in this dtype (default: float32)")
    p.add_argument("--tta", choices=("none", "mirror", "mirror_translate"), default=None,
                   help="test-time augmentation, as a recipe's tta: mirror averages each image's logits with its "
                        "mirror image's, mirror_translate adds two 1-pixel shifts (6 passes; default: none)")
    p.add_argument("--tta-flip", action="store_true", help="the same as --tta mirror (the older spelling)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the result to PATH as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--weights-dir", metavar="DIR", default=None,
                   help="folder of already-downloaded published weights (the same as $COMPRESS_WEIGHTS; default: "
                        "that, else torch's hub cache, downloading there once)")


def _load_any(path: str, layout: str):
    """(model, notes): a compress.save file, else a checkpoint imported by from_checkpoint."""
    try:
        model, meta = load_model(path, with_metadata=True)
    except ValueError as e:
        if "not a file written by compress.save" not in str(e):
            raise
        model, meta = from_checkpoint(path, layout, with_metadata=True)
        return model, {"kind": f"checkpoint ({meta.pop('layout')} layout)", **{k: v for k, v in meta.items() if k != "config"}}
    normalize = (meta.get("config") or {}).get("normalize") if isinstance(meta, dict) else None
    if input_normalization(model) is None and normalize:  # a model.pt of the trainer: its training normalisation
        model = with_normalization(model, normalize["mean"], normalize["std"])
    return model, {"kind": "compress.save file"}


def _eval_main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    console = _console()
    _check_device_flag(parser, args.device)
    if (problem := _json_problem(args.json)) is not None:
        parser.error(problem)
    if args.tta_flip and args.tta not in (None, "mirror"):
        parser.error(f"--tta-flip means --tta mirror; give one of them, not --tta {args.tta} as well")
    tta = args.tta or ("mirror" if args.tta_flip else "none")
    try:
        model, notes = _load_any(args.path, args.layout)
        data = bench.resolve_data(args.data)
        result = evaluate(model, data, batch_size=args.batch_size, device=args.device, amp=args.amp,
                          tta=tta, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, TypeError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        return 2
    image = (1, *data.test_x.shape[1:])  # the model's own input size: any model class, not only a compress ResNet
    info = {"path": args.path, **notes, "params": count_params(model), "flops": count_flops(model, example_input=image),
            "data": bench.describe_data(data), "amp": args.amp, "tta_flip": tta == "mirror", "tta": tta,
            **result.to_dict()}
    t = Table(title=f"compress-bench eval {escape(args.path)}", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("model", escape(notes["kind"]))
    for k, v in notes.items():
        if k != "kind":
            t.add_row(f"checkpoint {escape(k)}", escape(str(v)))
    t.add_row("params / FLOPs", f"{info['params']:,} / {info['flops'] / 1e6:,.2f} M")
    t.add_row("data", f"{data.name}, {result.total:,} test images")
    t.add_row("normalisation", f"mean {result.mean}, std {result.std}")
    t.add_row("precision", f"{args.amp or 'float32'}{'' if tta == 'none' else ', TTA ' + tta.replace('_', ' + ')}")
    t.add_row("[bold]accuracy", f"[bold]{100 * result.accuracy:.2f}% ({result.correct:,} / {result.total:,})")
    t.add_row("loss", f"{result.loss:.4f}")
    for name, acc in result.per_class.items():
        t.add_row(f"  {escape(name)}", "-" if acc is None else f"{100 * acc:.2f}%")
    console.print(t)
    if args.json:
        try:
            write_json(args.json, info)
        except OSError as e:
            _error(console, _os_error(e))
            return 1
    return 0


def _select(names: Sequence[str], directory: str | None, console: Console | None = None) -> list:
    paths = [find(n, directory) for n in names] if names else recipe_paths(directory)
    if not paths:
        raise RecipeError(f"no recipes in {directory or recipes_dir()}")
    check_unique_names(paths)
    recipes = [load(p) for p in paths]
    if not names:  # all recipes: leave out those whose weights cannot be had (no file, no network), saying why
        missing = {}
        for r in recipes:
            try:
                path = r.weights_path(download=True)
            except WeightsNotFoundError as e:
                missing[r.name] = str(e)
                continue
            if path is not None and not path.is_file():
                missing[r.name] = f"weights file not found ({path}; a recipe's weights.path is relative to its file)"
        if missing and console is not None:
            console.print(f"compress-bench: skipping {', '.join(missing)}: {next(iter(missing.values()))}",
                          highlight=False, markup=False, soft_wrap=True)
        recipes = [r for r in recipes if r.name not in missing]
    return recipes


def _default_out(recipes: list, directory: str | None, budget: str) -> Path:
    everything = {p.stem for p in recipe_paths(directory)}
    names = [r.name for r in recipes]
    tag = "all" if set(names) == everything else "+".join(names)[:60]
    return Path("runs") / f"{budget}-{tag}"


def _building_progress(console: Console):
    """A one-line 'building 003 (4/8)' display for :func:`bench.dry_run` (gone once the table prints)."""
    progress = Progress(TextColumn("building {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task("", total=None)

    def on_recipe(i: int, n: int, name: str) -> None:
        progress.update(task, total=n, completed=i, description=name)
        if i == 0:
            progress.start()
        if i == n:
            progress.stop()

    return on_recipe


def _write_json(target: str, payload: dict[str, Any], console: Console, stdout: Any) -> None:
    """The rows as JSON: to ``stdout`` for ``-``, else to the file ``target``."""
    text = json.dumps(payload, indent=2, default=str) + "\n"
    if target == "-":
        stdout.write(text)
        stdout.flush()
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    write_json(target, payload)
    console.print(f"rows written to {target}", highlight=False, markup=False, soft_wrap=True)


def _dry_run(recipes: list, args: argparse.Namespace, console: Console, stdout: Any) -> int:
    rows = bench.dry_run(recipes, on_recipe=_building_progress(console))
    console.print(report.dry_run_table(rows, width=console.width))
    if args.json:
        _write_json(args.json, {"mode": "dry-run", "rows": rows}, console, stdout)
    return 0


def _why_not_train(args: argparse.Namespace) -> str | None:
    """A one-line reason to fall back to the dry run, or None if training can go ahead."""
    no_gpu = args.device is None and not torch.cuda.is_available()
    no_data = args.data is None and bench.find_dataset() is None and not args.download
    if no_gpu and no_data:
        return "no GPU and no dataset (pass --device cpu to train on the CPU, and --data PATH or --download)"
    if no_gpu:
        return "no GPU (pass --device cpu to train on the CPU anyway)"
    if no_data:
        return "no dataset: $COMPRESS_DATA is not set and ./data holds nothing (pass --data PATH, or --download)"
    return None


def _flag_words(message: str) -> str:
    """A library message in the CLI's words: Python arguments become the flags that set them."""
    return message.replace("download=True", "--download")


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag checks that need no file or model: before anything is read or written."""
    _check_device_flag(parser, args.device)
    if args.time_budget is not None:
        if args.epochs is not None or args.max_steps_per_epoch is not None:
            parser.error("--time-budget fixes the epochs itself: drop --epochs / --max-steps-per-epoch")
        if args.budget != "fast":
            parser.error("--time-budget lays the fast schedule over the time it allows: use it with --budget fast")


def _check_device_flag(parser: argparse.ArgumentParser, device: str | None) -> None:
    """Exit with a usage error (status 2) unless ``--device`` is absent or a device this machine has."""
    if device is not None:
        try:
            check_device(device, "--device")
        except ValueError as e:
            parser.error(str(e))


def _error(console: Console, message: str) -> None:
    """The one line a failed command prints: ``error: <what went wrong, and what is accepted>``."""
    console.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True,
                  emoji=False)  # a path or a file's text is printed as it is (":x:" stays ":x:")


def _folder_problem(target: str, flag: str) -> str | None:
    """Why ``target`` cannot become a folder to write in (``None``: it can), checked before any work."""
    path = Path(target)
    if path.exists() and not path.is_dir():
        return f"{flag} {target} is a file; it takes a folder (a new one, or one to add files to)"
    return _writable_problem(path, flag, target)


def _json_problem(target: str | None) -> str | None:
    """Why ``--json target`` cannot be written (``None``: it can, or no ``--json``), checked before any work."""
    if not target or target == "-":
        return None
    path = Path(target)
    if path.is_dir():
        return f"--json {target} is a folder; it takes the path of a file to write"
    return _writable_problem(path.parent, "--json", target)


def _writable_problem(folder: Path, flag: str, target: str) -> str | None:
    """Whether ``folder`` can be created (its nearest existing ancestor is a writable folder) and written."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{flag} {target}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {target}: {existing} cannot be written (read-only or no permission)"
    return None


def _os_error(e: OSError) -> str:
    """An OSError as one readable line: the file, then the reason (``No space left on device``...)."""
    if e.strerror and e.filename is not None:
        return e.strerror if str(e.filename) in e.strerror else f"{e.filename}: {e.strerror}"
    return str(e)


def _report_main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    console = _console()
    try:
        report.write_report(args.run_dir, console=console)
    except (FileNotFoundError, ValueError) as e:
        _error(console, str(e))
        return 2
    except OSError as e:  # a full disk, a read-only folder: the old report and plots are kept
        _error(console, _os_error(e))
        return 1
    return 0


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that tables do not wrap every cell
        console = Console(width=160)
    return console


def _run_main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """``compress-bench [run] [options] RECIPE...``: the dry run, or training and the report."""
    _check_args(parser, args)
    stdout = sys.stdout
    # `--json -`: stdout carries the JSON alone; the table, progress and messages go to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json == "-" else contextlib.nullcontext():
        return _main(args, argv, _console(), stdout)


register(Command("run", "run [options] RECIPE...", "the same as without `run`: train (or dry-run) the recipes",
                 _RUN_DESCRIPTION, _add_run_arguments, _run_main, epilog=_run_epilog(), raw=True))
register(Command("report", "report RUN_DIR", "re-render report.md, plots and the table from RUN_DIR/results.json",
                 "Render report.md, plots and the terminal table from RUN_DIR/results.json.", _add_report_arguments,
                 _report_main))
register(Command("export", "export RECIPE|MODEL.pt ... --out DIR", "write ONNX files, checked with ONNX Runtime",
                 _EXPORT_DESCRIPTION, _add_export_arguments, _export_main))
register(Command("latency", "latency [RECIPE|MODEL.pt ...] [--run RUN_DIR]", "measure inference speed (no training)",
                 _LATENCY_DESCRIPTION, _add_latency_arguments, _latency_main))
register(Command("eval", "eval PATH", "test accuracy, loss and per-class accuracy of a saved model or a trained "
                 "checkpoint (see compress-bench eval --help)", _EVAL_DESCRIPTION, _add_eval_arguments, _eval_main))
register(Command("search", "search --out DIR [options]", "search stages, blocks, widths, kernels and SE under a "
                 "params/FLOPs/latency budget (Optuna; docs/search.md)", search_cli.DESCRIPTION,
                 search_cli.add_arguments, lambda args, parser, argv: search_cli.main(args)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``compress-bench``; returns the exit status.

    A first argument that names a sub-command (:data:`COMMANDS`) runs it; anything else is the main
    command, ``compress-bench [options] RECIPE...`` (``run``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in COMMANDS:
        # the sub-parser parses its own arguments, so that its errors name it (`compress-bench report: error: ...`)
        sub = _sub_parsers(build_command_parser())[argv[0]]
        args = sub.parse_args(argv[1:])
        with _weights_dir(getattr(args, "weights_dir", None)):
            return COMMANDS[argv[0]].run(args, sub, argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    with _weights_dir(args.weights_dir):
        return _run_main(args, parser, argv)


@contextlib.contextmanager
def _weights_dir(folder: str | None):
    """``--weights-dir DIR``: ``$COMPRESS_WEIGHTS`` is DIR while the command runs (restored after)."""
    if folder is None:
        yield
        return
    before = os.environ.get("COMPRESS_WEIGHTS")
    os.environ["COMPRESS_WEIGHTS"] = folder
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COMPRESS_WEIGHTS", None)
        else:
            os.environ["COMPRESS_WEIGHTS"] = before


def _main(args: argparse.Namespace, argv: list[str], console: Console, stdout: Any) -> int:
    def say(text: str) -> None:  # one line each, never wrapped: logs and pipes get whole lines
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    problem = _json_problem(args.json)  # found out now, not after the training
    if problem:
        _error(console, problem)
        return 2
    try:
        recipes = _select(args.recipes, args.recipes_dir, console)
        if args.dry_run:
            return _dry_run(recipes, args, console, stdout)
        reason = _why_not_train(args)
        if reason:
            say(f"compress-bench: {reason}; showing the dry run instead.")
            return _dry_run(recipes, args, console, stdout)
        data = bench.resolve_data(args.data, download=args.download, train_images=args.train_images,
                                  test_images=args.test_images)
        if args.batch_size is not None and args.batch_size > len(data.train_y):  # it would be recorded, not run
            _error(console, f"--batch-size {args.batch_size:,} is larger than the {len(data.train_y):,} training images "
                            f"(every step would use {len(data.train_y):,}); give at most {len(data.train_y):,}")
            return 2
        if args.max_steps_per_epoch is not None and data.name != "synthetic":
            say(f"note: --max-steps-per-epoch {args.max_steps_per_epoch} squeezes the whole schedule into that many "
                "steps per epoch: a smoke test whose accuracy means nothing. For a smaller real run use "
                "--train-images N and/or --epochs N.")
        tag = args.budget if args.time_budget is None else f"{args.budget}-{args.time_budget:g}min"
        out = Path(args.out) if args.out else _default_out(recipes, args.recipes_dir, tag)
        try:
            options = bench.RunOptions(
                budget=args.budget, epochs=args.epochs, max_steps_per_epoch=args.max_steps_per_epoch,
                device=args.device, progress=not args.no_progress, log=say, command=["compress-bench", *argv],
                time_budget=args.time_budget, overrides={"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed},
                threads=args.threads, checkpoint_every_s=args.checkpoint_every * 60 if args.checkpoint_every > 0 else None,
            )
            rows = bench.run(recipes, out, data, options)
        except KeyboardInterrupt:
            say(f"compress-bench: interrupted; {bench.interrupted_summary(out, recipes)}")
            return 130
        report.write_report(out, console=console)
        if args.json:
            _write_json(args.json, {"mode": "train", "rows": rows}, console, stdout)
        return 0
    except (RecipeError, runfolder.RunFolderError, bench.TrainingError, DatasetError) as e:  # usage errors
        _error(console, _flag_words(str(e)))
        return 2
    except NonFiniteLossError as e:  # a diverged run: no row, no number; the last good checkpoint is kept
        _error(console, str(e))
        return 1
    except OSError as e:  # a full disk, a read-only file: every file written so far is whole
        _error(console, _os_error(e))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
