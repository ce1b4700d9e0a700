"""Benchmark orchestration: build recipes, count them, train them into a run folder, collect result rows.

The run folder's files, its lock and its rows are :mod:`compress.runfolder`'s (:class:`~compress.runfolder.RunFolder`,
:class:`~compress.runfolder.Row`); this module decides what is trained and in which order. :func:`run` takes
its settings as a :class:`RunOptions` (or the same names as keywords).

:func:`run` validates everything (recipes, data, every recipe's model and config against the data)
before it writes anything, then works under the folder's lock; every file is written atomically
(:mod:`compress.files`). docs/run-folders.md says what a folder guarantees after a kill, a full disk
or a concurrent start.

Rows are :class:`~compress.runfolder.Row` inside, plain dicts (JSON-friendly) where they are returned.
Accuracies in rows are in percent. Keys that start with ``claimed_`` come from the reports;
``measured_*`` and the timing keys come from our own training.
A recipe that starts from trained weights also gets ``accuracy_before`` (the trained model) and
``accuracy_compressed`` (right after its transforms, before any training), with ``params_before`` and
``flops_before``; with ``finetune: false`` it is not trained and ``measured_accuracy`` is the latter.

Why this module is long: it is the one place that runs a set of recipes (options and their checks, the
check of everything before anything is written, time-budget plans, training, evaluate-only recipes and
resume), each part used only here and in that order; the folder's files and rows are already elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from . import runfolder, training  # training.train looked up at call time (tests spy on it)
from ._schema import merge
from .data import DatasetError, ImageData, cifar10, synthetic
from .evaluation import evaluate
from .files import FolderBusyError, atomic_write, is_leftover, remove_leftovers, write_json
from .metrics import count_flops, count_params
from .provenance import provenance
from .recipes import BUDGET_PARAMS, TIME_BUDGET_TRAIN, Budget, Recipe, RecipeError
from .runfolder import FEW_STEPS, MANIFEST, RUN_FORMAT, RecipeFolder, RunFolder, RunFolderError, Row
from .runfolder import PLAN, RESULTS, RESULTS_FORMAT  # noqa: F401 - kept importable from here
from .runfolder import ROW as RESULT  # noqa: F401 - likewise, under its old name (the trainer's result.json is another)
from .runfolder import read_json as _read_json
from .training import NonFiniteLossError, TrainConfig, check_inputs
from .training.budget import BudgetPlan, plan as _probe_plan
from .training.outputs import TrainFiles, median_epoch_s
from .transforms.whiten import init_whitening

__all__ = [
    "RunFolderError",
    "TrainingError",
    "spec_row",
    "dry_run",
    "resolve_data",
    "describe_data",
    "find_dataset",
    "torch_threads",
    "train_config",
    "comparable",
    "run",
    "RunOptions",
    "interrupted_summary",
    "collect",
    "MANIFEST",
    "RESULTS",
]

MAX_SYNTHETIC = 200_000  # images per split of --data synthetic (600 MB of 32x32 RGB): larger asks are refused


class TrainingError(RuntimeError):
    """Training a recipe was refused by the trainer (e.g. its validation split does not fit the data)."""


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: leave it), restoring the old count after.

    Building and counting a recipe is many tiny batch-1 passes (torch-pruning's tracing, fvcore's jit
    trace, L1 scores); on a small, busy CPU the intra-op thread pool makes them several times slower
    than one thread does (measured: the 8-recipe dry run took 45 s with 2 threads, 5 s with 1, on a
    2-core machine shared with a training run). So :func:`dry_run` and :func:`run` build with one thread.
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _build(recipe: Recipe, seed: int) -> torch.nn.Module:
    """``recipe``'s model, built with ``seed`` set first (the same architecture every time) on one thread."""
    with torch_threads(1):
        torch.manual_seed(seed)
        return recipe.build()


def spec_row(recipe: Recipe, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """The dry-run row of ``recipe``: built params and FLOPs next to the report's claims."""
    return _spec(recipe, model).to_dict()


def _spec(recipe: Recipe, model: torch.nn.Module | None = None) -> Row:
    """:func:`spec_row` as a :class:`~compress.runfolder.Row`."""
    if model is None:
        model = _build(recipe, recipe.train.seed)
    architecture = model.config.describe() if hasattr(model, "config") else type(model).__name__
    return Row.spec(recipe, architecture=architecture, params=count_params(model), flops=_count_flops(model),
                    budget_params=BUDGET_PARAMS)


def _count_flops(model: torch.nn.Module) -> int:
    with torch_threads(1):
        return count_flops(model)


def dry_run(
    recipes: Sequence[Recipe], on_recipe: Callable[[int, int, str], None] | None = None
) -> list[dict[str, Any]]:
    """Build every recipe and return its :func:`spec_row` (nothing is trained).

    ``on_recipe(i, n, name)`` is called before recipe ``i`` (0-based) of ``n`` is built, and
    ``on_recipe(n, n, "")`` once all are done: a progress display hooks in there.
    """
    rows = []
    for i, r in enumerate(recipes):
        if on_recipe is not None:
            on_recipe(i, len(recipes), r.name)
        rows.append(spec_row(r))
    if on_recipe is not None:
        on_recipe(len(recipes), len(recipes), "")
    return rows


def find_dataset() -> Path | None:
    """Where CIFAR-10 might be: ``$COMPRESS_DATA`` if set, else ``./data`` if it holds anything (else ``None``)."""
    env = os.environ.get("COMPRESS_DATA")
    if env:
        return Path(env)
    local = Path("data")
    return local if local.is_dir() and any(local.iterdir()) else None


def resolve_data(
    spec: str | None, *, download: bool = False, train_images: int | None = None, test_images: int | None = None
):
    """Load the dataset named by ``--data``: a path (npz / folder), ``synthetic[:N_TRAIN[:N_TEST]]``, or
    ``None`` for :func:`find_dataset`; keep its first ``train_images`` / ``test_images`` images if given.
    Raises ``compress.data.DatasetError`` when nothing is found or a subset is larger than the data."""
    if spec is not None and (spec == "synthetic" or spec.startswith("synthetic:")):  # not "synthetic.npz"
        parts = spec.split(":")[1:]
        try:
            n_train = int(parts[0]) if parts else 512
            n_test = int(parts[1]) if len(parts) > 1 else max(n_train // 4, 1)
            if len(parts) > 2 or not 1 <= n_train <= MAX_SYNTHETIC or not 1 <= n_test <= MAX_SYNTHETIC:
                raise ValueError(spec)
        except ValueError as e:
            raise DatasetError(f"--data {spec[:40]!r}: expected synthetic[:N_TRAIN[:N_TEST]] with image counts from 1 "
                               f"to {MAX_SYNTHETIC:,}") from e
        data = synthetic(n_train, n_test)
    else:
        root = Path(spec) if spec is not None else find_dataset()
        if root is None:
            if not download:
                raise DatasetError("no dataset: $COMPRESS_DATA is not set and ./data holds nothing; "
                                   "pass --data PATH, or --download")
            root = Path("data")
        data = cifar10(root, download=download)
    for flag, n, have, split in (("--train-images", train_images, len(data.train_y), "training"),
                                 ("--test-images", test_images, len(data.test_y), "test")):
        if n is not None and not 1 <= n <= have:
            raise DatasetError(f"{flag} {n}: the dataset has {have:,} {split} images; give 1 to {have:,}")
    return data if train_images is None and test_images is None else data.subset(train_images, test_images)


def describe_data(data: ImageData) -> dict[str, Any]:
    """What a run trained on: the dataset's name, where it was read from, its split sizes and the
    SHA-256 of its content (:meth:`~compress.data.ImageData.fingerprint`)."""
    return {"name": data.name, "source": data.source, "train": len(data.train_y), "test": len(data.test_y),
            "sha256": data.fingerprint()}


def _manifest(
    recipes: Sequence[Recipe], budget: Budget, epochs: int | None, max_steps: int | None, data: dict[str, Any],
    time_budget: float | None = None, overrides: dict[str, Any] | None = None, threads: int | None = None,
) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "recipes": {r.name: r.fingerprint(budget) for r in recipes},
        "budget": budget,
        "epochs": epochs,
        "max_steps_per_epoch": max_steps,
        "time_budget_min": time_budget,
        "overrides": _overrides(overrides),
        "threads": threads,  # recorded, not checked: it changes the speed, not the run
        "data": data,
    }


_OVERRIDES = ("batch_size", "lr", "seed")


def _overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The given (not ``None``) training overrides, checked: only batch_size, lr and seed."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(_OVERRIDES))
    if unknown:
        raise ValueError(f"unknown override(s) {', '.join(unknown)}; accepted: {', '.join(_OVERRIDES)}")
    return given


def _check_manifest(out: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    """Check that ``out`` can hold the run ``want`` describes; return the manifest to write (``None``: keep it).

    A folder is never mixed: a different recipe set, budget, epoch or step override, dataset, or an
    edited recipe is refused, but only where something was already trained. A folder in which nothing
    has started (a run that failed before its first checkpoint) takes the new arguments.
    """
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} is a file, not a folder; --out takes a run folder (a new one, or one "
                             "written by compress-bench)")
    folder = RunFolder(out)
    path = folder.manifest
    if not path.is_file():
        foreign = sorted(p.name for p in out.iterdir() if p.is_symlink() or not is_leftover(p.name)) if out.is_dir() else []
        if foreign:
            raise RunFolderError(f"{out} is not empty ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}) "
                                 f"and has no {MANIFEST}: not a compress-bench run folder; use a new --out")
        return want
    have = _read_json(path, "the run's manifest")
    if (have.get("format") != RUN_FORMAT or not isinstance(have.get("recipes"), dict)
            or not isinstance(have.get("data") or {}, dict) or not isinstance(have.get("overrides") or {}, dict)):
        raise RunFolderError(f"{path} is not a compress-bench manifest (format {RUN_FORMAT!r}); use a new --out")
    started = sorted(n for n in have["recipes"] if folder.recipe(n).started)
    problems = []
    if started and sorted(have["recipes"]) != sorted(want["recipes"]):
        problems.append(f"it holds recipes [{', '.join(sorted(have['recipes']))}], "
                        f"this command asks for [{', '.join(sorted(want['recipes']))}]")
    else:
        changed = [n for n in started if have["recipes"].get(n) != want["recipes"].get(n)]
        if changed:
            problems.append(f"recipe(s) {', '.join(changed)} changed since the run started")
    for key in ("budget", "epochs", "max_steps_per_epoch", "time_budget_min"):
        if started and have.get(key) != want[key]:
            problems.append(f"it was run with {key}={have.get(key)!r}, this command asks for {want[key]!r}")
    if started and have.get("overrides", {}) != want["overrides"]:
        def flags(o: dict[str, Any]) -> str:
            return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(o.items())) or "no overrides"

        problems.append(f"it was run with {flags(have.get('overrides', {}))}, this command gives {flags(want['overrides'])}")
    h, w = have.get("data") or {}, want["data"]
    # the content decides (a file may move, and its name with it); folders from before fingerprints: name and sizes
    same_data = ["sha256"] if "sha256" in h else ["name", "train", "test"]
    if started and h and any(h.get(k) != w[k] for k in same_data):
        other = "different images of the same size: " if all(h.get(k) == w[k] for k in ("train", "test")) else ""
        problems.append(f"it trained on {h.get('name')} ({h.get('train')} train / {h.get('test')} test images), "
                        f"this command gives {other}{w['name']} ({w['train']} / {w['test']})")
    if problems:
        raise RunFolderError(
            f"{out} was written by a different run: {'; '.join(problems)}. "
            "Results are never mixed: pick a new --out folder (or re-run with the original arguments)."
        )
    updated = {**have, **want, "created": have.get("created")}
    return None if updated == have else updated


def train_config(
    recipe: Recipe, budget: Budget, time_budget: float | None = None, *,
    overrides: dict[str, Any] | None = None, epochs: int | None = None,
):
    """The TrainConfig ``recipe`` is trained with under ``budget`` (with a time budget: the fast schedule
    with :data:`compress.recipes.TIME_BUDGET_TRAIN` on top; its length is fixed by the probe).

    ``overrides`` (``batch_size``, ``lr``, ``seed``) replace the recipe's values; ``epochs`` lays the
    schedule over that many epochs (:meth:`~compress.training.TrainConfig.over_epochs`).
    """
    config = recipe.train_config(budget)
    if time_budget is not None:
        if budget != "fast":
            raise ValueError(f"a time budget lays the fast schedule over the time it allows; it needs budget 'fast', got {budget!r}")
        config = TrainConfig.from_dict(merge(config.to_dict(), TIME_BUDGET_TRAIN), "time budget")
    config = config.with_overrides(**_overrides(overrides))
    return config if epochs is None else config.over_epochs(epochs)


def comparable(
    recipe: Recipe, budget: Budget, data: dict[str, Any], *, epochs: int | None = None,
    max_steps_per_epoch: int | None = None, time_budget: float | None = None, overrides: dict[str, Any] | None = None,
) -> str | None:
    """Why a run's accuracy cannot be set against the paper's claim (``None``: it can): the rule of
    :func:`compress.runfolder.comparable` for a trained recipe, with ``overrides`` checked (only
    ``batch_size``, ``lr`` and ``seed``)."""
    return runfolder.comparable(recipe, budget, data, epochs=epochs, max_steps_per_epoch=max_steps_per_epoch,
                                time_budget=time_budget, overrides=_overrides(overrides))


def _plan(recipe: Recipe, rdir: Path, data: Any, config: Any, minutes: float, device: str | None,
          log: Callable[[str], None]):
    """The recipe's stored time-budget plan, or a new one from a probe (written to ``plan.json``)."""
    path = RecipeFolder(rdir).plan
    if path.is_file():
        stored = _read_json(path, "the time-budget plan")
        if stored.get("minutes") != minutes:
            raise RunFolderError(f"{path} was planned for {stored.get('minutes')} min, this command asks for {minutes}")
        missing = [k for k in BudgetPlan.__dataclass_fields__ if k not in stored]
        if missing:
            raise RunFolderError(f"{path} (the time-budget plan) lacks {', '.join(missing)}; something else changed it: "
                                 "delete it to plan again, or use a new --out")
        return BudgetPlan.from_dict({k: stored[k] for k in BudgetPlan.__dataclass_fields__})
    teacher = recipe.initial_model() if config.distill is not None else None  # distilled from the trained weights
    p = _probe_plan(_build(recipe, config.seed), data, config, minutes, device=device, teacher=teacher)
    write_json(path, {**p.to_dict(), **provenance(device or ("cuda" if torch.cuda.is_available() else "cpu"))})
    epochs = f"{p.epochs} epoch{'s' if p.epochs != 1 else ''}"
    length = epochs if p.max_steps_per_epoch is None else f"{epochs} of {p.max_steps_per_epoch} of its {p.steps_per_epoch} steps"
    log(f"{recipe.name}: {minutes:g} min fit {length} ({p.train_images_per_s:,.0f} train img/s, "
        f"{p.eval_images_per_s:,.0f} eval img/s measured; estimated {p.estimated_s / 60:.1f} min)")
    return p


def _measured_row(
    recipe: Recipe, model: torch.nn.Module, result: Any, budget: Budget, command: Sequence[str] | None,
    not_comparable: str | None = None, start: Mapping[str, Any] | None = None, plan: Any = None,
    time_budget: float | None = None, setup: Mapping[str, Any] | None = None,
) -> Row:
    """The row of a trained recipe: the trainer's ``result`` of ``model`` (``setup``: :func:`schedule_facts`)."""
    return Row.result(
        _spec(recipe, model), 100.0 * float(result.test_acc), not_comparable=not_comparable, budget=budget,
        epochs_run=result.epochs_run,
        training={
            "selected_epoch": result.selected_epoch,
            "stopped_early": bool(result.stopped_early),
            "train_time_s": float(result.train_time_s),
            "images_per_s": float(result.images_per_s),
            **({"epoch_time_s": t} if (t := median_epoch_s(result.history)) is not None else {}),
            "precision": result.precision,
            "tta": getattr(result, "tta", None),
            **({"setup": dict(setup)} if setup else {}),
        },
        run_provenance=provenance(result.device, command),
        curve=[[h.get("epoch"), 100.0 * h["test_acc"]] for h in result.history if h.get("test_acc") is not None],
        start=start, time_budget=time_budget, plan=None if plan is None else plan.to_dict(),
    )


def _evaluate_compression(
    recipe: Recipe, model: torch.nn.Module, data: Any, device: str | None, progress: bool, log: Callable[[str], None]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(trained model, row keys): the recipe's weights evaluated before its transforms, and ``model`` (the
    recipe built from them) right after them, with no training in between."""
    trained = recipe.initial_model()
    before = evaluate(trained, data, device=device, progress=progress)
    after = evaluate(model, data, device=device, progress=progress) if recipe.model else before
    log(f"{recipe.name}: test accuracy {100 * before.accuracy:.2f}% before compression, "
        f"{100 * after.accuracy:.2f}% right after it ({count_params(trained):,} -> {count_params(model):,} params)")
    return trained, {
        "accuracy_before": 100.0 * before.accuracy,
        "accuracy_compressed": 100.0 * after.accuracy,
        "params_before": count_params(trained),
        "flops_before": _count_flops(trained),
    }


def _evaluated_row(
    recipe: Recipe, model: torch.nn.Module, start: dict[str, Any], device: str | None,
    command: Sequence[str] | None, data: dict[str, Any],
) -> dict[str, Any]:
    """The row of a recipe that is only evaluated (``finetune: false``), ``start``'s keys last; its
    ``difference`` against the claim is given when it was evaluated on the whole CIFAR-10 test set."""
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    why = runfolder.comparable(recipe, None, data, trained=False)
    return Row.result(_spec(recipe, model), start["accuracy_compressed"], not_comparable=why, budget=None, epochs_run=0,
                      run_provenance=provenance(dev, command), start=start).to_dict()


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run` trains: the settings of one run folder, checked when made.

    ``budget`` is ``fast`` or ``paper``. ``time_budget`` (minutes per recipe) first probes every unfinished
    recipe on ``device`` and fixes its length (``plan.json``, reused on resume; see
    :mod:`compress.training.budget`), then trains; it excludes ``epochs`` and ``max_steps_per_epoch``.
    ``epochs`` lays each recipe's schedule over that many epochs (see :func:`train_config`); ``overrides``
    (``batch_size``, ``lr``, ``seed``; ``None`` values are dropped) replace the recipes' values and are part
    of the folder's identity; ``threads`` sets torch's CPU threads for the training (recorded in the
    manifest); ``checkpoint_every_s`` goes to the trainer (mid-epoch checkpoints). ``command`` is the
    command line recorded with each result (default: this process's); ``log`` gets one line per step.

    >>> RunOptions(epochs=2, overrides={"lr": 0.1, "seed": None}).overrides
    {'lr': 0.1}
    """

    budget: Budget = "fast"
    epochs: int | None = None
    max_steps_per_epoch: int | None = None
    device: str | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    command: Sequence[str] | None = None
    time_budget: float | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    threads: int | None = None
    checkpoint_every_s: float | None = 300.0

    def __post_init__(self) -> None:
        budget, time_budget = self.budget, self.time_budget
        if budget not in ("fast", "paper"):
            raise ValueError(f"budget must be 'fast' or 'paper', got {budget!r}")
        if time_budget is not None and (isinstance(time_budget, bool) or not isinstance(time_budget, (int, float))
                                        or not 0 < time_budget < math.inf):
            raise ValueError(f"time_budget must be a positive finite number of minutes, got {time_budget!r}")
        if time_budget is not None and (self.epochs is not None or self.max_steps_per_epoch is not None):
            raise ValueError("a time budget fixes the epochs itself: give either it or epochs/max_steps_per_epoch")
        object.__setattr__(self, "overrides", _overrides(self.overrides))  # a checked copy: the caller's is kept


def run(
    recipes: Sequence[Recipe], out: str | os.PathLike, data: Any, options: RunOptions | None = None, **settings: Any,
) -> list[dict[str, Any]]:
    """Train ``recipes`` into the run folder ``out`` and return their rows (also written to results.json).

    ``options`` (a :class:`RunOptions`) says how; ``settings`` are its fields given as keywords
    (``budget="paper", epochs=5, ...``), on their own or replacing those of ``options``.
    Everything is checked before anything is written: recipe names, the folder, and every unfinished
    recipe's model and training setup against ``data`` (:func:`compress.training.check_inputs`; a
    misfit raises :class:`TrainingError`). The folder is then locked for the whole run (another process
    gets :class:`RunFolderError`). Finished recipes (with a ``row.json``) are skipped; an interrupted one
    resumes from its checkpoint. A folder written for a different recipe set, budget, epoch override or
    dataset raises :class:`RunFolderError`. A diverged recipe raises
    :class:`~compress.training.NonFiniteLossError` and leaves no row.
    Only a run comparable with the papers' claims (:func:`comparable`) gets a ``difference`` in its rows.
    """
    out = Path(out)
    names = [r.name for r in recipes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RecipeError(f"recipe {twice[0]!r} is given more than once: each recipe name is one run sub-folder")
    opts = RunOptions(**settings) if options is None else dataclasses.replace(options, **settings)
    if opts.time_budget is not None:
        for r in recipes:
            train_config(r, opts.budget, opts.time_budget)  # refuses a budget other than fast before anything is written
    data_info = describe_data(data)
    manifest = _manifest(recipes, opts.budget, opts.epochs, opts.max_steps_per_epoch, data_info, opts.time_budget,
                         dict(opts.overrides), opts.threads)
    _check_manifest(out, manifest)  # read-only here; again under the lock
    folder = RunFolder(out)
    planned = {r.name: _prepare(r, data, opts) for r in recipes if not folder.recipe(r.name).finished}

    with ExitStack() as stack:
        try:
            stack.enter_context(folder.locked())
        except FolderBusyError as e:
            raise RunFolderError(str(e)) from None
        except OSError as e:
            raise RunFolderError(f"cannot use {out} as a run folder ({e.strerror or e}); --out takes a folder "
                                 "that can be created and written") from e
        return _run_locked(recipes, folder, data, manifest, planned, opts, data_info)


def _prepare(recipe: Recipe, data: Any, opts: RunOptions) -> tuple[Any, torch.nn.Module]:
    """The training config and the freshly built model of ``recipe``, checked against ``data`` (writes
    nothing); a misfit raises :class:`TrainingError` naming the recipe."""
    try:
        config = train_config(recipe, opts.budget, opts.time_budget, overrides=opts.overrides, epochs=opts.epochs)
        model = _build(recipe, config.seed)  # the same architecture on resume, even for init-dependent pruning
        check_inputs(model, data, config, epochs=opts.epochs, max_steps_per_epoch=opts.max_steps_per_epoch)
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{recipe.name}: {e}") from e
    return config, model


def _sparse_model(recipe: Recipe, data: Any, config: Any, folder: Path, opts: RunOptions, threads: int | None) -> torch.nn.Module:
    """``recipe``'s model built from its weights after sparse learning (:meth:`Recipe.sparse_learn`),
    the phase's trainer files in ``folder`` (resumed from there)."""
    try:
        with torch_threads(threads):
            learned = recipe.sparse_learn(
                recipe.initial_model(), data, config, files=TrainFiles.in_folder(folder),
                resume=(folder / "checkpoint.pt").is_file(), device=opts.device, progress=opts.progress,
                max_steps_per_epoch=opts.max_steps_per_epoch, checkpoint_every_s=opts.checkpoint_every_s)
            return recipe.transform(learned.model)
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{recipe.name}: sparse learning: {e}") from e
    except ValueError as e:
        raise TrainingError(f"{recipe.name}: sparse learning: {e}") from e


def _keep_recipe_file(recipe: Recipe, folder: RecipeFolder, resume: bool, log: Callable[[str], None]) -> None:
    """Provenance: copy the file whose claims the row reports (its training setup is the run's: the
    manifest's fingerprint refuses any other) into the recipe's folder, unless it is there already."""
    if recipe.path is None:
        return
    text = recipe.path.read_bytes()
    kept = folder.recipe_copy
    same = kept.is_file() and kept.read_bytes() == text
    if resume and kept.is_file() and not same:
        log(f"{recipe.name}: {recipe.path} changed since the run started, outside its training setup "
            f"(claims or prose); {kept} now holds the new file")
    if not same:
        atomic_write(kept, text)


def schedule_facts(recipe: Recipe, config: Any, data: Any, budget: Budget, epochs: int | None,
                   max_steps_per_epoch: int | None) -> dict[str, Any]:
    """What a training run will do: ``batch_size``, ``steps_per_epoch`` (one process), ``epochs``,
    ``optimizer_steps`` (their product) and ``schedule``, a note when the ``fast`` schedule replaces the
    recipe's own ``train:`` section (empty otherwise)."""
    steps = math.ceil(len(data.train_x) / config.batch_size)
    if max_steps_per_epoch is not None:
        steps = min(steps, int(max_steps_per_epoch))
    n_epochs = int(epochs if epochs is not None else config.epochs)
    own = recipe.train
    replaced = budget == "fast" and own.to_dict() != recipe.fast.to_dict()
    note = (f"the fast schedule replaces the recipe's own train: section ({own.epochs} epochs at batch "
            f"{own.batch_size}, lr {own.optimizer.lr:g})" if replaced else "")
    return {"batch_size": int(config.batch_size), "steps_per_epoch": steps, "epochs": n_epochs,
            "optimizer_steps": steps * n_epochs, "schedule": note}


def _run_locked(
    recipes: Sequence[Recipe], run_folder: RunFolder, data: Any, manifest: dict[str, Any],
    planned: dict[str, tuple[Any, torch.nn.Module]], opts: RunOptions, data_info: dict[str, Any],
) -> list[dict[str, Any]]:
    out, log, threads = run_folder.path, opts.log, opts.threads
    remove_leftovers(out)  # temporary files of a killed run: nobody else can be writing them now
    new_manifest = _check_manifest(out, manifest)
    if new_manifest is not None:
        created = new_manifest.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(run_folder.manifest, {**new_manifest, "created": created})
    plans = {}
    if opts.time_budget is not None:  # probe all first, on a machine as quiet as the start of the run
        for recipe in recipes:
            if recipe.finetune and not run_folder.recipe(recipe.name).finished:
                config = train_config(recipe, opts.budget, opts.time_budget, overrides=opts.overrides)
                with torch_threads(threads):
                    plans[recipe.name] = _plan(recipe, run_folder.recipe(recipe.name).path, data, config, opts.time_budget, opts.device, log)
    rows: list[Row] = []
    for recipe in recipes:
        folder = run_folder.recipe(recipe.name)
        rdir = folder.path
        if rdir.is_symlink():  # every file of the run stays inside --out
            raise RunFolderError(f"{rdir} is a symbolic link; compress-bench writes a recipe's files only in a folder "
                                 f"of its own inside {out}: remove the link")
        if folder.finished:
            log(f"{recipe.name}: already finished, skipping ({folder.row})")
            rows.append(folder.read_row())
            continue
        if recipe.name not in planned:  # its row.json was there when we looked, and is gone now
            planned[recipe.name] = _prepare(recipe, data, opts)
        config, model = planned.pop(recipe.name)
        trained, start = None, {}
        if recipe.sparse is not None:  # sparse learning before the cut, in the recipe folder's sparse/ (resumable)
            model = _sparse_model(recipe, data, config, folder.path / "sparse", opts, threads)
        if recipe.weights is not None:  # the trained network (the teacher) and its accuracy before/after the transforms
            with torch_threads(threads):
                trained, start = _evaluate_compression(recipe, model, data, opts.device, opts.progress, log)
        if not recipe.finetune:  # evaluated only: no training, no checkpoint
            if recipe.path is not None:
                atomic_write(folder.recipe_copy, recipe.path.read_bytes())  # provenance: the exact file that was run
            row = Row.from_dict(_evaluated_row(recipe, model, start, opts.device, opts.command, data_info))
            folder.write_row(row)
            rows.append(row)
            continue
        resume = folder.checkpoint.is_file()
        _keep_recipe_file(recipe, folder, resume, log)
        plan = plans.get(recipe.name)
        r_epochs, r_steps = (plan.epochs, plan.max_steps_per_epoch) if plan else (opts.epochs, opts.max_steps_per_epoch)
        setup = schedule_facts(recipe, config, data, opts.budget, r_epochs, r_steps)
        log(f"{recipe.name}: {'resuming' if resume else 'training'} ({opts.budget} budget"
            + (f", {opts.time_budget:g} min" if plan else "") + f") into {rdir}: {setup['epochs']} epochs x "
            f"{setup['steps_per_epoch']} steps at batch {setup['batch_size']}"
            + (f"; {setup['schedule']}" if setup["schedule"] else ""))
        if setup["optimizer_steps"] < FEW_STEPS:
            log(f"warning: {recipe.name} trains for only {setup['optimizer_steps']} optimizer steps: its accuracy "
                "means nothing (a smoke test, not a measurement)")
        if getattr(model, "whiten", None) is not None:  # a whiten_stem step built placeholder weights: compute them
            model = init_whitening(model, data, normalization=(config.normalize.mean, config.normalize.std))
        try:
            with torch_threads(threads):
                result = training.train(
                    model, data, config, files=folder.train_files(),
                    resume=resume, device=opts.device, progress=opts.progress, epochs=r_epochs,
                    max_steps_per_epoch=r_steps, checkpoint_every_s=opts.checkpoint_every_s,
                    teacher=trained if config.distill is not None else None,
                )
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{recipe.name}: {e}") from e
        except ValueError as e:  # the trainer's argument checks: config vs data, resume mismatch
            raise TrainingError(f"{recipe.name}: {e}") from e
        why = comparable(recipe, opts.budget, data_info, epochs=opts.epochs, max_steps_per_epoch=opts.max_steps_per_epoch,
                         time_budget=opts.time_budget, overrides=dict(opts.overrides))
        row = _measured_row(recipe, result.model, result, opts.budget, opts.command, why, start, plan, opts.time_budget,
                            setup)
        folder.write_row(row)
        rows.append(row)
    run_folder.write_results(rows, opts.command)
    return [r.to_dict() for r in rows]


def interrupted_summary(out: str | os.PathLike, recipes: Sequence[Recipe], now: float | None = None) -> str:
    """What an interrupted :func:`run` left in ``out``, in one sentence: the finished recipes and where
    the checkpoint of the one in progress stands (epoch, step, how old it is), or that it has none."""
    out = Path(out)
    folder = RunFolder(out)
    now = time.time() if now is None else now
    done = [r.name for r in recipes if folder.recipe(r.name).finished]
    parts = [f"finished: {', '.join(done)} (skipped when re-run)" if done else "no recipe had finished"]
    current = next((r for r in recipes if r.name not in done), None)
    if current is not None:
        path = folder.recipe(current.name).checkpoint
        state = _checkpoint_position(path)
        if state is None:
            parts.append(f"{current.name}: no checkpoint yet, it starts from the beginning")
        else:
            epoch, step, epochs = state["epoch"], state.get("step", 0), state["epochs"]
            if state.get("finished"):
                where = "trained to the end (its report row is written on resume)"
            elif step:
                where = (f"checkpoint in epoch {epoch + 1} of {epochs} after step {step} of "
                         f"{state.get('steps_per_epoch', '?')}")
            else:
                where = f"checkpoint after epoch {epoch} of {epochs}"
            age = _age(now - state["written"]) if state.get("written") else None
            parts.append(f"{current.name}: {where} ({path}" + (f", written {age} before the interrupt" if age else "")
                         + "); the steps after it are trained again")
    return f"kept in {out}: " + "; ".join(parts) + ". Run the same command again to resume."


def _checkpoint_position(path: Path) -> dict[str, Any] | None:
    """The position keys of a trainer checkpoint (read lazily through mmap), or ``None`` if there is none."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file is reported as no checkpoint
        return None
    keys = ("epoch", "step", "epochs", "steps_per_epoch", "finished", "written")
    return {k: state[k] for k in keys if k in state} if isinstance(state, dict) and "epoch" in state else None


def _age(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"


def collect(
    out: str | os.PathLike, rows: Sequence[dict[str, Any]] | None = None, command: Sequence[str] | None = None
) -> Path:
    """Write ``out/results.json`` from ``rows`` (default: every ``out/*/row.json``, checked) and return its path
    (:meth:`compress.runfolder.RunFolder.write_results`)."""
    return RunFolder(out).write_results(rows, command)
