"""The search loop: one Optuna study whose trials are transform candidates trained by the compress trainer.

Optuna does the searching (its samplers), the early stopping (its pruners, fed each epoch's validation
accuracy) and the bookkeeping (its storage: a SQLite file in the run folder by default, or any database
URL, so that several processes on several machines share one study; heartbeats mark the trials of a
killed process as failed and :class:`optuna.storages.RetryFailedTrialCallback` runs them again).

Why this module is long: one trial's life (build, budget check, training with per-epoch reports and
early stopping, retry after a killed worker) and the study around it (storage, its lock, settings that
must match between workers, progress) share the study's state; the space, the outputs and the command
line are already their own modules.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
import sqlalchemy
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..data import ImageData
from ..deploy import measure_latency
from ..metrics import count_flops, count_params
from ..models import ResNet, resnet18
from ..recipes import Recipe, find, from_mapping, load
from ..training import NonFiniteLossError, TrainConfig, train
from ..transforms import init_whitening
from .output import safe_url, write_outputs
from .space import Budget, Proxy, SearchSpace, Steps, build

try:
    import fcntl
except ImportError:  # Windows: no file locks; several workers there should use a database server
    fcntl = None  # type: ignore[assignment]

__all__ = ["search", "SearchResult", "OBJECTIVES", "STORAGE_FILE", "SETTINGS_KEY", "trained_trials", "default_storage"]

#: What a study may optimise, and in which direction: the proxy's validation accuracy, and costs.
OBJECTIVES = {"accuracy": "maximize", "params": "minimize", "flops": "minimize", "latency": "minimize"}
#: The default storage: this SQLite file in the run folder.
STORAGE_FILE = "study.db"
#: The study's user attribute that holds the search settings (checked by every worker that joins).
SETTINGS_KEY = "compress.search"
_TRIALS_DIR = "trials"


@dataclass
class SearchResult:
    """What :func:`search` returns: the Optuna study, one record per trial (as in ``trials.json``), the
    best trained trial's record (``None`` if none finished), and the files written in ``out``."""

    study: optuna.Study
    out: Path
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: dict[str, Path] = field(default_factory=dict)


def default_storage(out: str | os.PathLike) -> str:
    """The storage URL of a run folder: ``sqlite:///OUT/study.db`` (absolute path)."""
    return f"sqlite:///{(Path(out).resolve() / STORAGE_FILE).as_posix()}"


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that were trained (finished, or pruned after some epochs), not those rejected untrained."""
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states) if "rejected" not in t.user_attrs]


def search(
    base: nn.Module | Recipe | str = "resnet18",
    space: SearchSpace | None = None,
    budget: Budget | None = None,
    *,
    data: ImageData,
    out: str | os.PathLike,
    n_trials: int = 30,
    timeout_s: float | None = None,
    proxy: Proxy | None = None,
    objectives: Sequence[str] = ("accuracy",),
    storage: str | None = None,
    study_name: str = "search",
    sampler: optuna.samplers.BaseSampler | str = "tpe",
    pruner: optuna.pruners.BasePruner | str = "median",
    seed: int | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    heartbeat_s: int = 60,
    max_retry: int = 3,
    recipe_name: str = "search-best",
    recipe_train: dict[str, Any] | None = None,
    max_rejected_in_a_row: int = 500,
) -> SearchResult:
    """Search the transforms of ``base`` for the most accurate model within ``budget``; returns a :class:`SearchResult`.

    ``base`` is a compress ResNet, a recipe (without weights), a recipe name, or ``"resnet18"``. Each
    trial samples a candidate from ``space`` (:meth:`SearchSpace.sample`), builds it, counts its params
    and FLOPs and measures its latency; a candidate over ``budget`` (or one the transforms refuse) is
    rejected before any training (an Optuna trial pruned at step 0, ``user_attrs["rejected"]`` says why).
    The others are trained by :func:`compress.training.train` as ``proxy`` says, on ``data``'s training
    set only (a validation split is carved from it: ``data``'s test images are never used), and score
    their last epoch's validation accuracy. With one objective (``("accuracy",)``) every epoch is reported to
    the trial and ``pruner`` stops weak trials early; more objectives (``"params"``, ``"flops"``,
    ``"latency"``, minimised) make a multi-objective study, without pruning.

    The study lives in ``storage`` (default :func:`default_storage`: ``OUT/study.db``), named
    ``study_name``; any process started with the same storage, study and settings joins it (each takes
    its own trials; a different space, budget, proxy or data is refused). The search stops once
    ``n_trials`` candidates have been trained (rejected ones do not count; each process also stops after
    ``timeout_s`` seconds); trials running in other processes then still finish. A killed process
    loses no finished trial: they are in the storage; its running trial is marked failed once its
    heartbeat (every ``heartbeat_s`` s) is older than twice that, and is run again (up to ``max_retry``
    times), from its last epoch checkpoint when it is on this machine. ``n_trials=0`` only writes the outputs.

    Writes in ``out``: ``trials.json`` (every trial of the study: choice, transform steps, params,
    FLOPs, latency, proxy accuracy per epoch, time), ``best.json``, the best trial as recipe
    ``<recipe_name>.yaml`` (trained with :data:`compress.recipes.FAST_TRAIN`, or ``recipe_train``; only
    when ``base`` is ResNet-18 or a recipe, since recipes start from a fresh ResNet-18) and the plots
    ``accuracy_vs_params.png`` and ``accuracy_vs_latency.png``. ``seed`` seeds the sampler (``None``: a
    different sequence per process, which several workers need). ``base`` and ``data`` are not changed.
    """
    space = space if space is not None else SearchSpace()
    budget = budget if budget is not None else Budget()
    proxy = proxy if proxy is not None else Proxy()
    objectives = _check_objectives(objectives)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0:
        raise ValueError(f"n_trials must be an integer >= 0, got {n_trials!r}")
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
    if isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, int) or heartbeat_s < 1:
        raise ValueError(f"heartbeat_s must be a whole number of seconds >= 1, got {heartbeat_s!r}")
    if not isinstance(data, ImageData):
        raise TypeError(f"data must be a compress.data.ImageData, got {type(data).__name__}")
    if recipe_train is not None:
        TrainConfig.from_dict(dict(recipe_train), "recipe_train")
    from_mapping({"name": recipe_name, "source": "", "model": [], "claims": {"params": 1}, "train": {}},
                 "recipe_name")  # a name the recipe file can have (RecipeError otherwise), before any training
    model, base_steps, base_label = resolve_base(base)
    space.check(model.config)
    if model.config.num_classes != data.num_classes:
        raise ValueError(f"the base model has {model.config.num_classes} classes but the data has {data.num_classes}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proxy_data = proxy.data(data)
    config = proxy.config()
    url = storage if storage is not None else default_storage(out)
    settings = {
        "base": base_label, "base_config": model.config.to_dict(), "space": space.to_dict(), "budget": budget.to_dict(),
        "proxy": proxy.to_dict(), "objectives": list(objectives), "data": proxy_data.fingerprint(),
    }
    with _quiet_optuna(), _opening(url):  # one process at a time creates the tables, the study, its settings
        study = optuna.create_study(
            storage=_rdb_storage(url, heartbeat_s, max_retry), study_name=study_name, load_if_exists=True,
            directions=[OBJECTIVES[o] for o in objectives], sampler=_sampler(sampler, seed, len(objectives)),
            pruner=_pruner(pruner, len(objectives)),
        )
        _check_settings(study, settings, url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # trials of a killed process: failed, and queued again
    say = log or (lambda s: None)
    done = len(trained_trials(study))
    outputs = (study, out, settings, base_steps, recipe_name, recipe_train, url)
    if n_trials > done:
        say(f"study {study_name!r} in {safe_url(url)}: {done} of {n_trials} trials trained so far")
        bar = _Progress(progress, n_trials, done, say)
        objective = _Objective(model, space, budget, proxy_data, config, objectives, trial_folders(out, study_name),
                               device, bar.status)
        stop = _Stop(n_trials, max_rejected_in_a_row, bar, lambda _study: write_outputs(*outputs, plots=False))
        try:
            with warnings.catch_warnings(), _quiet_optuna():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, n_trials=None, timeout=timeout_s, callbacks=[stop],
                               catch=(NonFiniteLossError, torch.cuda.OutOfMemoryError))  # a failed trial, not the end
        finally:
            bar.close()
    files, records, best = write_outputs(*outputs)
    return SearchResult(study, out, records, best, files)


# --- pieces ---------------------------------------------------------------------------------------

def trial_folders(out: str | os.PathLike, study_name: str) -> Path:
    """Where the trials of study ``study_name`` keep their training folders: ``OUT/trials/STUDY/``
    (one sub-folder per trial number; trial numbers are per study)."""
    return Path(out) / _TRIALS_DIR / re.sub(r"[^A-Za-z0-9._+-]", "_", study_name)


def resolve_base(base: nn.Module | Recipe | str) -> tuple[ResNet, Steps | None, str]:
    """The base model, the recipe steps that give it from a fresh ResNet-18 (``None``: it is no such
    model), and a label for it. A recipe name or path is loaded; a recipe with weights is refused."""
    if isinstance(base, str) and base == "resnet18":
        return resnet18(), [], "resnet18"
    if isinstance(base, (str, os.PathLike)):
        base = load(find(base))
    if isinstance(base, Recipe):
        if base.weights is not None:
            raise ValueError(f"recipe {base.name!r} starts from trained weights; search a recipe built from a fresh "
                             "ResNet-18 (or pass the model itself)")
        torch.manual_seed(0)
        model = base.build()
        return model, [(name, dict(args)) for name, args in base.model], f"recipe {base.name}"
    if not isinstance(base, ResNet):
        raise TypeError(f"base must be a compress ResNet, a recipe or a recipe name, got {type(base).__name__}")
    plain = resnet18().config
    steps = [] if base.config == plain else None
    return base, steps, "resnet18" if steps == [] else f"ResNet ({base.config.describe()})"


def _check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    if isinstance(objectives, str):
        objectives = (objectives,)
    objectives = tuple(objectives)
    if not objectives or objectives[0] != "accuracy" or any(o not in OBJECTIVES for o in objectives) \
            or len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives must be 'accuracy' followed by any of params, flops, latency (each once), "
                         f"got {list(objectives)!r}")
    return objectives


def _rdb_storage(url: str, heartbeat_s: int, max_retry: int) -> optuna.storages.RDBStorage:
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):  # several processes on one file: wait for the lock rather than fail at once
        engine["connect_args"] = {"timeout": 60}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = _retry_callback_class()(max_retry=max_retry)
    new = callback.__class__.__name__ == "RetryHeartbeatStaleTrialCallback"
    retry = {"heartbeat_stale_trial_callback" if new else "failed_trial_callback": callback}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s, **retry,
                )
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors for bad URLs, drivers, servers
            if isinstance(e, sqlalchemy.exc.SQLAlchemyError) and attempt < 2:  # e.g. two workers creating the
                time.sleep(1.0)                                                  # tables of a new database at once
                continue
            raise ValueError(f"cannot open the study storage {safe_url(url)}: {str(e).splitlines()[0]}") from e
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _opening(url: str) -> Iterator[None]:
    """For a SQLite file: an exclusive lock (``FILE.lock``, waited for) while this process opens the study,
    so that workers started together do not create its tables twice. Other databases: nothing (they
    are retried instead, :func:`_rdb_storage`)."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or fcntl is None or path.startswith(":memory:"):
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        yield


def _retry_callback_class() -> type:
    """Optuna's callback that re-queues the trials of a dead process (renamed in optuna 4.9)."""
    return getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


def _sampler(sampler: optuna.samplers.BaseSampler | str, seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # liar: parallel workers spread out
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise ValueError(f"sampler must be an optuna sampler or one of tpe, random, nsga2; got {sampler!r}")


def _pruner(pruner: optuna.pruners.BasePruner | str, n_objectives: int) -> optuna.pruners.BasePruner:
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "none" or n_objectives > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    raise ValueError(f"pruner must be an optuna pruner or one of median, hyperband, none; got {pruner!r}")


def _check_settings(study: optuna.Study, settings: dict[str, Any], url: str) -> None:
    """Record the settings in a new study; refuse to join a study started with other ones."""
    have = study.user_attrs.get(SETTINGS_KEY)
    if have is None:
        study.set_user_attr(SETTINGS_KEY, settings)
        return
    want = json.loads(json.dumps(settings))
    for key in want:
        if have.get(key) != want[key]:
            raise ValueError(f"study {study.study_name!r} in {safe_url(url)} was started with another {key} "
                             f"({json.dumps(have.get(key))[:120]}); join it with the same settings, or use another "
                             "--study or --out")


class _quiet_optuna:
    """Optuna's own per-trial INFO lines off while the search shows its own progress (restored after)."""

    def __enter__(self) -> None:
        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        optuna.logging.set_verbosity(self.level)


class _Rejected(Exception):
    """A candidate that is over budget or that the transforms refuse: never trained."""


class _PruneNow(Exception):
    """Raised from the trainer's ``on_epoch`` to stop the training of a trial the pruner stopped."""


class _EpochReporter:
    """The trainer's ``on_epoch``: reports each finished epoch's validation accuracy to the trial and,
    when Optuna's pruner says the trial should stop (before its last epoch), stops the training
    (:class:`_PruneNow`)."""

    def __init__(self, trial: optuna.Trial, epochs: int, status: Callable[[str], None]) -> None:
        self.trial, self.epochs, self.status = trial, epochs, status
        self.reported = 0
        self.pruned_at: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        self.report(rows)
        last = int(rows[-1]["epoch"])
        if last < self.epochs and self.trial.should_prune():
            self.pruned_at = last
            raise _PruneNow()

    def report(self, rows: list[dict[str, Any]]) -> None:
        """Report the rows not reported yet."""
        for row in rows[self.reported:]:
            self.trial.report(float(row["test_acc"]), int(row["epoch"]))
            self.reported += 1
            if row["epoch"] < self.epochs:
                self.status(f"trial {self.trial.number}: epoch {row['epoch'] + 1}/{self.epochs} "
                            f"(epoch {row['epoch']}: {row['test_acc']:.4f} val acc)")


class _Objective:
    """One trial: sample, build, count, check the budget, train the proxy, report."""

    def __init__(self, base: ResNet, space: SearchSpace, budget: Budget, data: ImageData, config: Any,
                 objectives: tuple[str, ...], folders: Path, device: str | None, status: Callable[[str], None]) -> None:
        self.base, self.space, self.budget, self.data, self.config = base, space, budget, data, config
        self.objectives, self.folders, self.device, self.status = objectives, folders, device, status
        self.seed = config.seed

    def __call__(self, trial: optuna.Trial) -> Any:
        t0 = time.perf_counter()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        self.status(f"trial {trial.number}: building and measuring")
        choice = self.space.sample(trial)
        steps = self.space.steps(choice, self.base.config)
        trial.set_user_attr("choice", choice)
        trial.set_user_attr("steps", [[n, a] for n, a in steps])
        try:
            costs = self._costs(trial, steps)
        except _Rejected as e:
            trial.set_user_attr("rejected", str(e))
            trial.set_user_attr("time_s", time.perf_counter() - t0)
            raise optuna.TrialPruned(f"rejected before training: {e}") from None
        model, params, flops, latency = costs
        retry_of = _retry_of(trial)
        folder = self.folders / str(retry_of if retry_of is not None else trial.number)
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        single = len(self.objectives) == 1
        self.status(f"trial {trial.number}: training {params / 1e6:.2f}M params, epoch 1/{self.config.epochs}")
        try:
            result, pruned_at, reported = self._train(trial, model, folder, single, resume=retry_of is not None)
        finally:
            for name in ("checkpoint.pt", "model.pt"):  # the numbers are in the storage; weights are not kept
                (folder / name).unlink(missing_ok=True)
            trial.set_user_attr("time_s", time.perf_counter() - t0)
        if pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", pruned_at)
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at}")
        values = {"accuracy": result.test_acc, "params": params, "flops": flops, "latency": latency}
        trial.set_user_attr("proxy_accuracy", result.test_acc)
        return values["accuracy"] if single else tuple(float(values[o]) for o in self.objectives)

    def _costs(self, trial: optuna.Trial, steps: Steps) -> tuple[nn.Module, int, int, float | None]:
        """Build the candidate, count params and FLOPs, measure latency; raise _Rejected if over budget."""
        try:
            model = build(self.base, steps, self.seed)
        except (ValueError, TypeError) as e:
            raise _Rejected(f"the transforms refuse it: {e}") from e
        params, flops = count_params(model), count_flops(model)
        trial.set_user_attr("architecture", model.config.describe())
        trial.set_user_attr("params", params)
        trial.set_user_attr("flops", flops)
        latency = None
        why = self.budget.over(params, flops)
        if why is None:
            latency = self._latency(model)
            trial.set_user_attr("latency_ms", latency)
            why = self.budget.over(params, flops, latency)
        if hasattr(trial, "set_constraint"):  # optuna >= 5: samplers learn where the budget ends
            for key, value in self.budget.slack(params, flops, latency).items():
                trial.set_constraint(key, value)
        else:
            trial.set_user_attr("slack", self.budget.slack(params, flops, latency))
        if why is not None:
            raise _Rejected(why)
        return model, params, flops, latency

    def _latency(self, model: nn.Module) -> float:
        b = self.budget
        result = measure_latency(model, batch_sizes=(b.latency_batch,), device=b.latency_device, repeats=b.latency_repeats,
                           warmup=2, min_block_s=b.latency_min_block_s)
        return float(result.timings[0].median_ms)

    def _train(self, trial: optuna.Trial, model: nn.Module, folder: Path, single: bool,
               resume: bool) -> tuple[Any, int | None, int]:
        """Train the proxy into ``folder`` (a retried trial resumes the checkpoint of the trial it re-runs, if
        it is there; anything else starts afresh); returns (result, pruned epoch, epochs reported)."""
        if getattr(model, "whiten", None) is not None:  # as compress-bench does: whitening from the training images
            model = init_whitening(model, self.data, normalization=(self.config.normalize.mean, self.config.normalize.std))
        folder.mkdir(parents=True, exist_ok=True)
        resume = resume and (folder / "checkpoint.pt").is_file()
        kwargs = dict(out_dir=folder, resume=resume, device=self.device, progress=False, checkpoint_every_s=None)
        if not single:
            result = train(model, self.data, self.config, **kwargs)
            self._record(trial, result.history, result)
            return result, None, 0
        reporter = _EpochReporter(trial, self.config.epochs, self.status)
        try:
            result = train(model, self.data, self.config, on_epoch=reporter, **kwargs)
        except _PruneNow:
            rows = json.loads((folder / "history.json").read_text())[: reporter.pruned_at]
            self._record(trial, rows, None)
            return None, reporter.pruned_at, reporter.reported
        reporter.report(result.history)  # a trial that had finished before a retry: its stored history
        self._record(trial, result.history, result)
        return result, None, reporter.reported

    @staticmethod
    def _record(trial: optuna.Trial, rows: list[dict[str, Any]], result: Any) -> None:
        trial.set_user_attr("val_acc_per_epoch", [float(r["test_acc"]) for r in rows])
        trial.set_user_attr("epochs_run", len(rows))
        trial.set_user_attr("train_time_s", float(sum(r["epoch_time_s"] for r in rows)))
        if result is not None:
            trial.set_user_attr("images_per_s", float(result.images_per_s))


def _retry_of(trial: optuna.Trial) -> int | None:
    """The number of the failed trial this one re-runs (the storage's retry callback), else None."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number == trial.number:
            return _retry_callback_class().retried_trial_number(t)
    return None


class _Stop:
    """Optuna callback: stop this process once the study holds ``n_trials`` trained trials (or the space
    keeps giving over-budget candidates); keeps the progress display, the log and (``write(study)``)
    ``trials.json`` up to date after every trial."""

    def __init__(self, n_trials: int, max_rejected_in_a_row: int, bar: "_Progress",
                 write: Callable[[optuna.Study], Any]) -> None:
        self.n_trials, self.max_rejected, self.bar, self.write = n_trials, max_rejected_in_a_row, bar, write
        self.rejected_in_a_row = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trained = trained_trials(study)
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if "rejected" in trial.user_attrs else 0
        best = max((t for t in trained if t.state == TrialState.COMPLETE), default=None,
                   key=lambda t: t.user_attrs.get("proxy_accuracy", 0.0))
        self.bar.update(len(trained), best, trial)
        if "rejected" not in trial.user_attrs:
            self.write(study)
        if len(trained) >= self.n_trials:
            study.stop()
        elif self.rejected_in_a_row >= self.max_rejected:
            self.bar.note(f"stopping: {self.rejected_in_a_row} candidates in a row were over budget or refused; "
                     "widen the budget or narrow the space")
            study.stop()


def _describe(trial: FrozenTrial) -> str:
    a = trial.user_attrs
    cost = f"{a.get('params', 0) / 1e6:.2f}M params, {a.get('flops', 0) / 1e6:.0f} MFLOPs"
    if a.get("latency_ms") is not None:
        cost += f", {a['latency_ms']:.2f} ms"
    if "rejected" in a:
        return f"trial {trial.number}: rejected ({a['rejected']})"
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number}: pruned after epoch {a.get('pruned_at_epoch')} ({cost}, {a.get('time_s', 0):.0f} s)"
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}: {a['proxy_accuracy']:.4f} val acc ({cost}, {a.get('time_s', 0):.0f} s)"
    return f"trial {trial.number}: {trial.state.name.lower()}"


class _Progress:
    """The search's rich progress line: trained trials of the planned ones (all processes of the study),
    rejected candidates, best validation accuracy so far and an ETA. The ETA is the trials still to train
    divided by the rate at which the study's trained count has grown since this process started (so
    other workers count), shown once a trial has finished here."""

    def __init__(self, enabled: bool, planned: int, done: int, say: Callable[[str], None]) -> None:
        self.planned, self.done0, self.t0, self.rejected, self.say = planned, done, time.perf_counter(), 0, say
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                              TextColumn("{task.fields[now]}"))
            self.task = self.p.add_task("search", total=planned, completed=done, stats="best -", eta="ETA -:--:--",
                                        now="")
            self.p.start()

    def status(self, text: str) -> None:
        """What this process is doing now (the last column; rich's update is thread-safe)."""
        if self.p is not None:
            self.p.update(self.task, now=text)

    def eta(self, done: int) -> str:
        """``ETA h:mm:ss`` for the trials left at the rate since this process started."""
        gained, spent = done - self.done0, time.perf_counter() - self.t0
        if gained <= 0:
            return "ETA -:--:--"
        left = max(0, self.planned - done) * spent / gained
        m, s = divmod(int(round(left)), 60)
        return f"ETA {m // 60}:{m % 60:02d}:{s:02d}"

    def update(self, done: int, best: FrozenTrial | None, trial: FrozenTrial) -> None:
        self.rejected += "rejected" in trial.user_attrs
        line = _describe(trial)
        stats = f"{self.rejected} rejected, best " + (
            f"{best.user_attrs['proxy_accuracy']:.4f} (trial {best.number})" if best is not None else "-")
        if self.p is not None:
            if "rejected" not in trial.user_attrs:
                self.p.console.print(line, highlight=False, markup=False)
            self.p.update(self.task, completed=min(done, self.planned), stats=stats, eta=self.eta(done))
        else:
            self.say(f"{line}; {done}/{self.planned} trained, {stats}, {self.eta(done)}")

    def note(self, text: str) -> None:
        """One line above the bar (or to the log without one)."""
        if self.p is not None:
            self.p.console.print(text, highlight=False, markup=False)
        else:
            self.say(text)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()

