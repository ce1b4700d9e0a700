"""Benchmark orchestration: build recipes, count them, train them into a run folder, collect result rows.

A run folder (``runs/NAME``) holds::

    manifest.json          the recipe set (name -> fingerprint) and the budget; a different set is refused
    <recipe>/recipe.yaml   a copy of the recipe file that was run
    <recipe>/plan.json     with a time budget: the probe's speeds and the epochs it fixed (reused on resume)
    <recipe>/checkpoint.pt the trainer's resumable checkpoint
    <recipe>/history.json  per-epoch metrics (the trainer's)
    <recipe>/model.pt      final model, loadable with compress.load
    <recipe>/row.json      this recipe's result row; its presence means "finished, skip on re-run"
    results.json           every row, plus report.md and the plots (see compress.report)

Rows are plain dicts (JSON-friendly). Accuracies in rows are in percent. Keys that start with
``claimed_`` come from the reports; ``measured_*`` and the timing keys come from our own training.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .data import ImageData
from .metrics import count_flops, count_params
from .provenance import provenance
from .recipes import BUDGET_PARAMS, TIME_BUDGET_TRAIN, Budget, Recipe, _merge

__all__ = [
    "RunFolderError",
    "TrainingError",
    "spec_row",
    "dry_run",
    "resolve_data",
    "describe_data",
    "find_dataset",
    "torch_threads",
    "run",
    "collect",
    "MANIFEST",
    "RESULTS",
]

MANIFEST = "manifest.json"
RESULTS = "results.json"
RESULT = "row.json"  # the trainer writes its own result.json next to it
PLAN = "plan.json"
RUN_FORMAT = "compress.run/1"
RESULTS_FORMAT = "compress.results/1"


class RunFolderError(RuntimeError):
    """A run folder belongs to a different recipe set or budget (it is never silently mixed)."""


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
    if model is None:
        model = _build(recipe, recipe.train.seed)
    params = count_params(model)
    claims = recipe.claims
    return {
        "recipe": recipe.name,
        "title": recipe.title,
        "transforms": recipe.transforms_summary(),
        "architecture": model.config.describe() if hasattr(model, "config") else type(model).__name__,
        "params": params,
        "flops": _count_flops(model),
        "under_budget": params <= BUDGET_PARAMS,
        "claimed_params": claims.params,
        "params_match": params == claims.params,
        "claimed_accuracy": claims.accuracy,
        "claim_basis": claims.accuracy_basis,
    }


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
    """Where CIFAR-10 might be: ``$COMPRESS_DATA`` if set, else ``./data`` if it exists (else ``None``)."""
    env = os.environ.get("COMPRESS_DATA")
    if env:
        return Path(env)
    local = Path("data")
    return local if local.exists() else None


def resolve_data(spec: str | None, *, download: bool = False):
    """Load the dataset named by ``--data``: a path (npz / folder), ``synthetic[:N_TRAIN[:N_TEST]]``, or
    ``None`` for :func:`find_dataset`. Raises ``compress.data.DatasetError`` when nothing is found."""
    from .data import DatasetError, cifar10, synthetic

    if spec is not None and spec.startswith("synthetic"):
        parts = spec.split(":")[1:]
        try:
            n_train = int(parts[0]) if parts else 512
            n_test = int(parts[1]) if len(parts) > 1 else max(n_train // 4, 1)
        except ValueError as e:
            raise DatasetError(f"--data {spec!r}: expected synthetic[:N_TRAIN[:N_TEST]]") from e
        return synthetic(n_train, n_test)
    root = Path(spec) if spec is not None else find_dataset()
    if root is None:
        if download:
            root = Path("data")
        else:
            raise DatasetError("no dataset: nothing in ./data and $COMPRESS_DATA is not set")
    return cifar10(root, download=download)


def describe_data(data: ImageData) -> dict[str, Any]:
    """What a run trained on: the dataset's name, where it was read from, and its split sizes."""
    return {"name": data.name, "source": data.source, "train": len(data.train_y), "test": len(data.test_y)}


def _manifest(
    recipes: Sequence[Recipe], budget: Budget, epochs: int | None, max_steps: int | None, data: dict[str, Any],
    time_budget: float | None = None,
) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "recipes": {r.name: r.fingerprint(budget) for r in recipes},
        "budget": budget,
        "epochs": epochs,
        "max_steps_per_epoch": max_steps,
        "time_budget_min": time_budget,
        "data": data,
    }


def _check_manifest(out: Path, want: dict[str, Any]) -> None:
    path = out / MANIFEST
    if not path.is_file():
        if out.exists() and any(out.iterdir()):
            raise RunFolderError(f"{out} is not empty and has no {MANIFEST}: not a compress-bench run folder; use a new --out")
        return
    have = json.loads(path.read_text())
    problems = []
    if sorted(have.get("recipes", {})) != sorted(want["recipes"]):
        problems.append(f"it holds recipes [{', '.join(sorted(have.get('recipes', {})))}], "
                        f"this command asks for [{', '.join(sorted(want['recipes']))}]")
    else:
        changed = [n for n, fp in want["recipes"].items() if have["recipes"].get(n) != fp]
        if changed:
            problems.append(f"recipe(s) {', '.join(changed)} changed since the run started")
    for key in ("budget", "epochs", "max_steps_per_epoch", "time_budget_min"):
        if have.get(key) != want[key]:
            problems.append(f"it was run with {key}={have.get(key)!r}, this command asks for {want[key]!r}")
    same_data = ("name", "train", "test")  # not the path: the same dataset may be read from another place
    if "data" in have and any(have["data"].get(k) != want["data"][k] for k in same_data):
        h, w = have["data"], want["data"]
        problems.append(f"it trained on {h.get('name')} ({h.get('train')} train / {h.get('test')} test images), "
                        f"this command gives {w['name']} ({w['train']} / {w['test']})")
    if problems:
        raise RunFolderError(
            f"{out} was written by a different run: {'; '.join(problems)}. "
            "Results are never mixed: pick a new --out folder (or re-run with the original arguments)."
        )


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def train_config(recipe: Recipe, budget: Budget, time_budget: float | None = None):
    """The TrainConfig ``recipe`` is trained with under ``budget`` (with a time budget: the fast schedule
    with :data:`compress.recipes.TIME_BUDGET_TRAIN` on top; its length is fixed by the probe)."""
    from .training import TrainConfig

    config = recipe.train_config(budget)
    if time_budget is None:
        return config
    if budget != "fast":
        raise ValueError(f"a time budget lays the fast schedule over the time it allows; it needs budget 'fast', got {budget!r}")
    return TrainConfig.from_dict(_merge(config.to_dict(), TIME_BUDGET_TRAIN), "time budget")


def _plan(recipe: Recipe, rdir: Path, data: Any, config: Any, minutes: float, device: str | None,
          log: Callable[[str], None]):
    """The recipe's stored time-budget plan, or a new one from a probe (written to ``plan.json``)."""
    from .training.budget import BudgetPlan, plan

    path = rdir / PLAN
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("minutes") != minutes:
            raise RunFolderError(f"{path} was planned for {stored.get('minutes')} min, this command asks for {minutes}")
        return BudgetPlan.from_dict({k: stored[k] for k in BudgetPlan.__dataclass_fields__})
    p = plan(_build(recipe, config.seed), data, config, minutes, device=device)
    rdir.mkdir(parents=True, exist_ok=True)
    _write_json(path, {**p.to_dict(), **provenance(device or ("cuda" if torch.cuda.is_available() else "cpu"))})
    length = f"{p.epochs} epochs" if p.max_steps_per_epoch is None else f"{p.max_steps_per_epoch} of {p.steps_per_epoch} steps of 1 epoch"
    log(f"{recipe.name}: {minutes:g} min fit {length} ({p.train_images_per_s:,.0f} train img/s, "
        f"{p.eval_images_per_s:,.0f} eval img/s measured; estimated {p.estimated_s / 60:.1f} min)")
    return p


def _measured_row(
    recipe: Recipe, model: torch.nn.Module, result: Any, budget: Budget, command: Sequence[str] | None
) -> dict[str, Any]:
    row = spec_row(recipe, model)
    acc = 100.0 * float(result.test_acc)
    history = list(result.history)
    row.update(
        {
            "measured_accuracy": acc,
            "difference": None if recipe.claims.accuracy is None else acc - recipe.claims.accuracy,
            "budget": budget,
            "epochs_run": result.epochs_run,
            "selected_epoch": result.selected_epoch,
            "stopped_early": bool(result.stopped_early),
            "train_time_s": float(result.train_time_s),
            "images_per_s": float(result.images_per_s),
            "precision": result.precision,
            **provenance(result.device, command),
            "curve": [[h.get("epoch"), 100.0 * h["test_acc"]] for h in history if h.get("test_acc") is not None],
        }
    )
    return row


def run(
    recipes: Sequence[Recipe],
    out: str | os.PathLike,
    data: Any,
    *,
    budget: Budget = "fast",
    epochs: int | None = None,
    max_steps_per_epoch: int | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: Sequence[str] | None = None,
    time_budget: float | None = None,
) -> list[dict[str, Any]]:
    """Train ``recipes`` into the run folder ``out`` and return their rows (also written to results.json).

    Finished recipes (with a ``row.json``) are skipped; an interrupted one resumes from its checkpoint.
    A folder written for a different recipe set, budget or epoch override raises :class:`RunFolderError`.
    ``time_budget`` (minutes per recipe) first probes every unfinished recipe on ``device`` and fixes
    its length (``plan.json``, reused on resume; see :mod:`compress.training.budget`), then trains;
    it excludes ``epochs`` and ``max_steps_per_epoch``.
    ``command`` is the command line recorded with each result (default: this process's).
    """
    from .training import train

    out = Path(out)
    if time_budget is not None and (epochs is not None or max_steps_per_epoch is not None):
        raise ValueError("a time budget fixes the epochs itself: give either it or epochs/max_steps_per_epoch")
    if time_budget is not None:
        for r in recipes:
            train_config(r, budget, time_budget)  # refuses a budget other than fast before anything is written
    manifest = _manifest(recipes, budget, epochs, max_steps_per_epoch, describe_data(data), time_budget)
    _check_manifest(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST).is_file():
        _write_json(out / MANIFEST, {**manifest, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    plans = {}
    if time_budget is not None:  # probe all first, on a machine as quiet as the start of the run
        for recipe in recipes:
            if not (out / recipe.name / RESULT).is_file():
                plans[recipe.name] = _plan(recipe, out / recipe.name, data, train_config(recipe, budget, time_budget),
                                           time_budget, device, log)
    rows = []
    for recipe in recipes:
        rdir = out / recipe.name
        if (rdir / RESULT).is_file():
            log(f"{recipe.name}: already finished, skipping ({rdir / RESULT})")
            rows.append(json.loads((rdir / RESULT).read_text()))
            continue
        rdir.mkdir(parents=True, exist_ok=True)
        if recipe.path is not None and not (rdir / "recipe.yaml").exists():
            shutil.copyfile(recipe.path, rdir / "recipe.yaml")  # provenance: the exact file that was run
        config = train_config(recipe, budget, time_budget)
        model = _build(recipe, config.seed)  # the same architecture on resume, even for init-dependent pruning
        resume = (rdir / "checkpoint.pt").is_file()
        plan = plans.get(recipe.name)
        r_epochs, r_steps = (plan.epochs, plan.max_steps_per_epoch) if plan else (epochs, max_steps_per_epoch)
        log(f"{recipe.name}: {'resuming' if resume else 'training'} ({budget} budget"
            + (f", {time_budget:g} min" if plan else "") + f") into {rdir}")
        try:
            result = train(
                model, data, config, out_dir=rdir, resume=resume, device=device, progress=progress,
                epochs=r_epochs, max_steps_per_epoch=r_steps,
            )
        except ValueError as e:  # the trainer's argument checks: config vs data, resume mismatch
            raise TrainingError(f"{recipe.name}: {e}") from e
        row = _measured_row(recipe, result.model, result, budget, command)
        if plan is not None:
            row["time_budget_min"] = time_budget
            row["plan"] = plan.to_dict()
        _write_json(rdir / RESULT, row)
        rows.append(row)
    collect(out, rows, command)
    return rows


def collect(
    out: str | os.PathLike, rows: Sequence[dict[str, Any]] | None = None, command: Sequence[str] | None = None
) -> Path:
    """Write ``out/results.json`` from ``rows`` (default: every ``out/*/row.json``) and return its path."""
    out = Path(out)
    if rows is None:
        rows = [json.loads(p.read_text()) for p in sorted(out.glob(f"*/{RESULT}"))]
    manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
    results = {
        "format": RESULTS_FORMAT,
        "run": out.name,
        "budget": manifest.get("budget"),
        "epochs": manifest.get("epochs"),
        "max_steps_per_epoch": manifest.get("max_steps_per_epoch"),
        "time_budget_min": manifest.get("time_budget_min"),
        "data": manifest.get("data"),
        "written": provenance(argv=command),
        "rows": list(rows),
    }
    _write_json(out / RESULTS, results)
    return out / RESULTS
