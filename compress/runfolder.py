"""The run folder of ``compress-bench``: the one place that knows its file names, its lock and its rows.

A run folder (``runs/NAME``) holds::

    manifest.json          the recipe set (name -> fingerprint) and the budget; a different set is refused
    <recipe>/recipe.yaml   a copy of the recipe file that was run
    <recipe>/plan.json     with a time budget: the probe's speeds and the epochs it fixed (reused on resume)
    <recipe>/checkpoint.pt the trainer's resumable checkpoint
    <recipe>/history.json  per-epoch metrics (the trainer's)
    <recipe>/model.pt      final model, loadable with compress.load
    <recipe>/result.json   the trainer's own result (what it measured)
    <recipe>/row.json      this recipe's result row; its presence means "finished, skip on re-run"
    results.json           every row, plus report.md and the plots (see compress.report)
    .lock                  held (fcntl.flock) by the process using the folder

:class:`RunFolder` and :class:`RecipeFolder` give those paths; :class:`Row` is one result row (read
from and written to ``row.json`` unchanged, key order included), with the one rule of when a run's
accuracy is set against the paper's claim (:func:`comparable`). :func:`measure_run` adds measured
inference speed to the rows of a folder.
"""

from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .deploy import REFERENCE, measure
from .files import LOCK, lock_folder, write_json
from .io import load
from .provenance import provenance
from .training import outputs as _trainer
from .training.outputs import TrainFiles, median_epoch_s

if TYPE_CHECKING:  # only for annotations
    from .recipes import Recipe

__all__ = [
    "RunFolder",
    "RecipeFolder",
    "Row",
    "RunFolderError",
    "comparable",
    "row_problem",
    "read_json",
    "measure_run",
    "MANIFEST",
    "RESULTS",
    "REPORT",
    "PLOTS",
    "LATENCY_PLOT",
    "RUN_FORMAT",
    "RESULTS_FORMAT",
    "ROW",
    "TRAINER_RESULT",
    "CHECKPOINT",
    "MODEL",
    "HISTORY",
    "PLAN",
    "RECIPE_COPY",
]

MANIFEST = "manifest.json"
RESULTS = "results.json"
REPORT = "report.md"
PLOTS = {"params": "accuracy_vs_params.png", "flops": "accuracy_vs_flops.png", "curves": "training_curves.png"}
LATENCY_PLOT = "accuracy_vs_latency.png"  # written only when some row has a measured latency
RUN_FORMAT = "compress.run/1"
ROW = "row.json"  # a recipe's result row: its presence means "finished"
# the trainer's own files (its result.json sits next to the row), under the trainer's default names
TRAINER_RESULT, CHECKPOINT, MODEL, HISTORY = _trainer.RESULT, _trainer.CHECKPOINT, _trainer.MODEL, _trainer.HISTORY
PLAN = "plan.json"
RECIPE_COPY = "recipe.yaml"
#: A run of fewer optimizer steps than this is a smoke test: its header warns and its report says so.
FEW_STEPS = 20
RESULTS_FORMAT = "compress.results/1"


class RunFolderError(RuntimeError):
    """A run folder cannot be used: it belongs to a different run (results are never mixed), another
    process is using it, or it cannot be written."""


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`RunFolderError` if it cannot be read or is not an object."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"it holds a {type(data).__name__}, not an object")
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path} ({what}) cannot be read ({type(e).__name__}: {e}); compress-bench writes it "
                             "atomically, so something else changed it: restore or delete it, or use a new --out") from e
    return data


# rows -----------------------------------------------------------------------------------------------
#: Numbers a row holds, and the range each must be in (accuracies in percent).
_DOMAINS = {
    "measured_accuracy": (0.0, 100.0), "claimed_accuracy": (0.0, 100.0), "accuracy_before": (0.0, 100.0),
    "accuracy_compressed": (0.0, 100.0), "params": (0, float("inf")), "flops": (0, float("inf")),
    "train_time_s": (0.0, float("inf")), "images_per_s": (0.0, float("inf")), "epochs_run": (0, float("inf")),
}


def row_problem(row: Mapping[str, Any]) -> str | None:
    """Why a result row cannot be a measurement (a value of the wrong type or out of its range), or None."""
    for key, (lo, hi) in _DOMAINS.items():
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key} is {str(value)[:40]!r}, not a number"
        if not lo <= value <= hi:
            return f"{key} is {value}, outside {lo:g}..{hi:g}"
    return None


def comparable(
    recipe: Recipe, budget: str | None, data: Mapping[str, Any], *, trained: bool = True, epochs: int | None = None,
    max_steps_per_epoch: int | None = None, time_budget: float | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> str | None:
    """Why a run's accuracy cannot be set against the paper's claim (``None``: it can).

    A claim is the result of the paper's whole schedule on the whole CIFAR-10, so only a run of the
    ``paper`` budget, at its own length, batch size and learning rate, on the 50,000 / 10,000 images of
    CIFAR-10, gets a ``difference``; a fast, shortened, smoke, subset or synthetic run gets this reason.
    A recipe that is only evaluated (``trained=False``: published weights, no training) is comparable
    when it was evaluated on the whole CIFAR-10 test set. ``overrides`` other than ``seed`` make a run
    incomparable.
    """
    if recipe.claims.accuracy is None:
        return "the paper claims no accuracy"
    if not trained:
        if data.get("name") != "CIFAR-10":
            return f"evaluated on {data.get('name')}, not CIFAR-10"
        if data.get("test") != 10_000:
            return f"evaluated on {data.get('test'):,} of CIFAR-10's 10,000 test images"
        return None
    if data.get("name") != "CIFAR-10":
        return f"trained on {data.get('name')}, not CIFAR-10"
    if (data.get("train"), data.get("test")) != (50_000, 10_000):
        return f"a subset of CIFAR-10 ({data.get('train'):,} train / {data.get('test'):,} test images)"
    if budget != "paper":
        return f"the {budget} budget ({recipe.train_config(budget).epochs} epochs), not the paper's own schedule"
    if time_budget is not None:
        return f"a {time_budget:g}-minute time budget"
    if epochs is not None and epochs != recipe.train.epochs:
        return f"{epochs} epochs instead of the paper's {recipe.train.epochs}"
    if max_steps_per_epoch is not None:
        return f"at most {max_steps_per_epoch} steps per epoch (a smoke run)"
    changed = {k: v for k, v in (overrides or {}).items() if k != "seed" and v is not None}
    if changed:
        return "overridden " + ", ".join(f"{k} {v}" for k, v in sorted(changed.items()))
    return None


@dataclass(frozen=True)
class Row:
    """One recipe's result row, read-only: what ``row.json`` holds and ``results.json`` lists.

    ``data`` keeps every key in the order it was written (rows of older versions, and the ``latency``
    entries :func:`measure_run` adds, pass through), so ``Row.from_dict(d).to_dict() == d`` and a row
    written back is byte-for-byte the file it was read from. Accuracies are in percent; ``claimed_*``
    keys are the reports' statements, ``measured_*`` and the timings come from our own training.

    >>> row = Row.from_dict({"recipe": "004", "measured_accuracy": 91.5, "claimed_accuracy": 93.0})
    >>> row.recipe, row.measured_accuracy, row.to_dict()["claimed_accuracy"]
    ('004', 91.5, 93.0)
    """

    data: Mapping[str, Any]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Row:
        """A row from its JSON object; ``ValueError`` if it is not an object or a number is out of its domain."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a row is a JSON object, got a {type(d).__name__}")
        if (problem := row_problem(d)) is not None:
            raise ValueError(problem)
        return cls(MappingProxyType(copy.deepcopy(dict(d))))

    def to_dict(self) -> dict[str, Any]:
        """The row as a new plain dict (JSON-friendly), keys in their order."""
        return copy.deepcopy(dict(self.data))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self.data.get(key, default)

    @property
    def recipe(self) -> str | None:
        """The recipe's name."""
        return self.data.get("recipe")

    @property
    def measured_accuracy(self) -> float | None:
        """Test accuracy (percent) measured by our own run, ``None`` in a dry-run row."""
        return self.data.get("measured_accuracy")

    @property
    def claimed_accuracy(self) -> float | None:
        """The paper's stated accuracy (percent), ``None`` if it states none."""
        return self.data.get("claimed_accuracy")

    @property
    def difference(self) -> float | None:
        """Measured minus claimed (percentage points), only for a comparable run (:func:`comparable`)."""
        return self.data.get("difference")

    @property
    def epochs_run(self) -> int | None:
        """Epochs trained (0: only evaluated)."""
        return self.data.get("epochs_run")

    @property
    def selected_epoch(self) -> int | None:
        """The epoch (1-based) whose test accuracy is reported."""
        return self.data.get("selected_epoch")

    @classmethod
    def spec(cls, recipe: Recipe, *, architecture: str, params: int, flops: int, budget_params: int) -> Row:
        """The dry-run row of ``recipe`` built as a model with ``params`` and ``flops``, next to its claims."""
        claims = recipe.claims
        return cls.from_dict({
            "recipe": recipe.name,
            "title": recipe.title,
            "transforms": recipe.transforms_summary(),
            "architecture": architecture,
            "params": params,
            "flops": flops,
            "under_budget": params <= budget_params,
            "claimed_params": claims.params,
            "params_match": params == claims.params,
            "claimed_accuracy": claims.accuracy,
            "claim_basis": claims.accuracy_basis,
        })

    @classmethod
    def result(
        cls, spec: Row, accuracy: float, *, not_comparable: str | None, budget: str | None, epochs_run: int,
        training: Mapping[str, Any] | None = None, run_provenance: Mapping[str, Any], curve: Sequence[Any] = (),
        start: Mapping[str, Any] | None = None, time_budget: float | None = None, plan: Mapping[str, Any] | None = None,
    ) -> Row:
        """The row of a trained or evaluated recipe: its ``spec`` row, the measured ``accuracy`` (percent)
        and, only when ``not_comparable`` is ``None`` and there is a claim, its ``difference`` to the claim.

        ``training`` holds the trainer's keys (selected epoch, times, precision, TTA), ``run_provenance``
        the command, commit and device, ``start`` the accuracy before and right after compression of a
        recipe that starts from trained weights, ``time_budget`` and ``plan`` a time-budget run's plan.
        """
        claimed = spec.claimed_accuracy
        row = {
            **spec.data,
            "measured_accuracy": accuracy,
            "difference": None if not_comparable or claimed is None else accuracy - claimed,
            "no_difference_because": not_comparable,
            "budget": budget,
            "epochs_run": epochs_run,
            **(training or {}),
            **run_provenance,
            "curve": [list(point) for point in curve],
            **(start or {}),
        }
        if plan is not None:
            row["time_budget_min"] = time_budget
            row["plan"] = dict(plan)
        return cls.from_dict(row)


# the folder -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipeFolder:
    """The files of one recipe in a run folder (``RUN/<recipe>/``)."""

    path: Path

    @property
    def name(self) -> str:
        """The recipe's name (the sub-folder's)."""
        return self.path.name

    @property
    def row(self) -> Path:
        """``row.json``: the recipe's result row; its presence means the recipe is finished."""
        return self.path / ROW

    @property
    def result(self) -> Path:
        """``result.json``: what the trainer measured (checked against the row)."""
        return self.path / TRAINER_RESULT

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pt``: the trainer's resumable checkpoint."""
        return self.path / CHECKPOINT

    @property
    def model(self) -> Path:
        """``model.pt``: the final model (:func:`compress.save`)."""
        return self.path / MODEL

    @property
    def history(self) -> Path:
        """``history.json``: the trainer's per-epoch metrics."""
        return self.path / HISTORY

    def train_files(self) -> TrainFiles:
        """The paths the trainer writes to for this recipe."""
        return TrainFiles(self.checkpoint, self.history, self.model, self.result)

    @property
    def plan(self) -> Path:
        """``plan.json``: a time-budget run's probe and the length it fixed."""
        return self.path / PLAN

    @property
    def recipe_copy(self) -> Path:
        """``recipe.yaml``: a copy of the recipe file that was run."""
        return self.path / RECIPE_COPY

    @property
    def finished(self) -> bool:
        """Whether the recipe has a result row."""
        return self.row.is_file()

    @property
    def started(self) -> bool:
        """Whether the recipe has trained anything (a checkpoint or a finished row)."""
        return self.checkpoint.is_file() or self.row.is_file()

    def read_row(self) -> Row:
        """The finished recipe's row, checked: its numbers in their domains, and, where the trainer wrote its
        own ``result.json``, the accuracy, epochs and selected epoch the trainer measured (an edited row is
        refused with :class:`RunFolderError`)."""
        path = self.row
        data = read_json(path, "a finished recipe's row")
        try:
            row = Row.from_dict(data)
        except ValueError as e:
            raise RunFolderError(f"{path}: {e}; compress-bench never writes that, so the file was edited: "
                                 "delete it (and re-run) or restore it") from None
        trainer = self.result
        if trainer.is_file() and row.measured_accuracy is not None:
            measured = read_json(trainer, "the trainer's result")
            pairs = [("measured_accuracy", row.measured_accuracy, 100.0 * float(measured.get("test_acc", float("nan")))),
                     ("epochs_run", row.epochs_run, measured.get("epochs_run")),
                     ("selected_epoch", row.selected_epoch, measured.get("selected_epoch"))]
            for key, have, want in pairs:
                if have is None or want is None or not abs(float(have) - float(want)) <= 1e-9 * max(1.0, abs(float(want))):
                    raise RunFolderError(f"{path}: {key} {have} disagrees with what the trainer measured ({want} in "
                                         f"{trainer}): one of them was edited; delete the recipe's folder to train it again")
        return row

    def write_row(self, row: Row) -> Path:
        """Write ``row`` to ``row.json`` (atomically); the recipe counts as finished from then on."""
        return write_json(self.row, row.to_dict())


class RunFolder:
    """A ``compress-bench`` run folder: the paths of its files, its lock, its rows and ``results.json``.

    >>> run = RunFolder("runs/fast-004")
    >>> run.manifest.name, run.recipe("004").row.as_posix(), run.plot("params").name
    ('manifest.json', 'runs/fast-004/004/row.json', 'accuracy_vs_params.png')
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def manifest(self) -> Path:
        """``manifest.json``: the run's recipe set, budget and data."""
        return self.path / MANIFEST

    @property
    def results(self) -> Path:
        """``results.json``: every row (what the report is rendered from)."""
        return self.path / RESULTS

    @property
    def report(self) -> Path:
        """``report.md``."""
        return self.path / REPORT

    @property
    def lock_file(self) -> Path:
        """The lock file held while a process uses the folder (:func:`compress.files.lock_folder`)."""
        return self.path / LOCK

    def plot(self, key: str) -> Path:
        """The PNG of plot ``key``: ``params``, ``flops``, ``curves`` or ``latency``."""
        name = LATENCY_PLOT if key == "latency" else PLOTS.get(key)
        if name is None:
            raise ValueError(f"no plot {key!r}; plots are {', '.join([*PLOTS, 'latency'])}")
        return self.path / name

    def recipe(self, name: str) -> RecipeFolder:
        """The files of recipe ``name``."""
        return RecipeFolder(self.path / name)

    def finished(self) -> dict[str, RecipeFolder]:
        """Every recipe with a ``row.json``, by name, in name order."""
        return {p.parent.name: RecipeFolder(p.parent) for p in sorted(self.path.glob(f"*/{ROW}"))}

    @contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's lock for the block (created if needed); :class:`~compress.files.FolderBusyError`
        at once if another process holds it."""
        with lock_folder(self.path, "run folder"):
            yield self

    def read_manifest(self) -> dict[str, Any]:
        """The manifest (``{}`` when there is none yet); :class:`RunFolderError` if it cannot be read."""
        return read_json(self.manifest, "the run's manifest") if self.manifest.is_file() else {}

    def listed_order(self) -> list[Any]:
        """The recipe names in the order ``results.json`` lists them (``[]`` without one)."""
        listed = read_json(self.results, "the run's results").get("rows", []) if self.results.is_file() else []
        return [r.get("recipe") for r in listed if isinstance(r, dict)]

    def write_results(self, rows: Sequence[Row | Mapping[str, Any]] | None = None,
                      command: Sequence[str] | None = None) -> Path:
        """Write ``results.json`` from ``rows`` (default: every finished recipe's checked row) and the
        manifest; returns its path. A row of an older version without ``epoch_time_s`` gets it from its
        recipe's ``history.json`` (:func:`median_epoch_s`) where that is there; ``row.json`` is not changed."""
        if rows is None:
            rows = [_with_epoch_time(f) for f in self.finished().values()]
        manifest = self.read_manifest()
        results = {
            "format": RESULTS_FORMAT,
            "run": self.path.name,
            "budget": manifest.get("budget"),
            "epochs": manifest.get("epochs"),
            "max_steps_per_epoch": manifest.get("max_steps_per_epoch"),
            "time_budget_min": manifest.get("time_budget_min"),
            "overrides": manifest.get("overrides") or {},
            "data": manifest.get("data"),
            "written": provenance(argv=command),
            "rows": [r.to_dict() if isinstance(r, Row) else r for r in rows],
        }
        return write_json(self.results, results)


def _with_epoch_time(folder: RecipeFolder) -> Row:
    """``folder``'s row, with ``epoch_time_s`` from its history where the row (of an older version) lacks it."""
    row = folder.read_row()
    if row.get("epoch_time_s") is not None or not row.get("epochs_run") or not folder.history.is_file():
        return row
    try:
        history = json.loads(folder.history.read_text())
    except (OSError, ValueError):
        return row
    median = median_epoch_s(history) if isinstance(history, list) else None
    return row if median is None else Row.from_dict({**row.to_dict(), "epoch_time_s": median})


def measure_run(run_dir: str | os.PathLike, names: Sequence[str] = (), **kwargs: Any) -> list[dict[str, Any]]:
    """Measure the trained models of a ``compress-bench`` run folder and store the results in it.

    Each finished recipe's ``model.pt`` (all of them, or those in ``names``, plus the run's ``resnet18``
    if it has one, the reference) is measured by :func:`compress.deploy.measure` (``kwargs`` are passed
    on); its ``latency`` entries are written into the recipe's ``row.json`` (replacing earlier ones of
    the same backend) and ``results.json`` is rebuilt. Returns the updated rows. Render the report with
    :func:`compress.report.write_report`.
    """
    run = RunFolder(run_dir)
    finished = run.finished()
    if not finished:
        raise FileNotFoundError(f"{run.path} has no finished recipes (no */{ROW}): train "
                                f"them first with `compress-bench --out {run.path}`")
    unknown = [n for n in names if n not in finished]
    if unknown:
        raise ValueError(f"{run.path} has no finished recipe {unknown[0]!r}; finished: {', '.join(finished)}")
    chosen = list(names) or list(finished)
    if REFERENCE in finished and REFERENCE not in chosen:  # the run's own ResNet-18 is the reference
        chosen.append(REFERENCE)
    with run.locked():  # no training run writes its rows meanwhile (FolderBusyError if one does)
        stored = {n: read_json(f.row, "a finished recipe's row") for n, f in finished.items()}  # before measuring
        models = {n: load(finished[n].model) for n in chosen}
        measured = {r["recipe"]: r for r in measure(models, **kwargs)}
        rows = []
        for n, folder in finished.items():
            row = stored[n]
            if n in measured:
                row["latency"] = {**row.get("latency", {}), **measured[n]["latency"]}
                write_json(folder.row, row)
            rows.append(row)
        order = run.listed_order()
        rows.sort(key=lambda r: order.index(r["recipe"]) if r["recipe"] in order else len(order))
        run.write_results(rows)
    return rows
