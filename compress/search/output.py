"""What a search leaves in its run folder: ``trials.json``, ``best.json``, the best trial as a recipe, plots.

Everything is rebuilt from the study's storage, so any worker (or ``n_trials=0`` afterwards) writes
the same files, with every process's trials in them.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Sequence

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ..files import atomic_write, write_json
from ..recipes import FAST_TRAIN, from_mapping
from ..training import TrainConfig

__all__ = ["trial_record", "pareto_front", "best_record", "recipe_dict", "write_outputs", "safe_url", "TRIALS_FILE", "BEST_FILE"]

TRIALS_FILE = "trials.json"
BEST_FILE = "best.json"

_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
           TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as plain JSON values: state (``complete``, ``pruned`` after some epochs, ``rejected``
    untrained, ``failed``, ``running``, ``waiting``), choice, transform steps, costs and proxy accuracy."""
    a = trial.user_attrs
    state = "rejected" if "rejected" in a else _STATES.get(trial.state, trial.state.name.lower())
    time_s = a.get("time_s")
    if time_s is None and trial.datetime_start is not None and trial.datetime_complete is not None:
        time_s = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return {
        "number": trial.number,
        "state": state,
        "worker": a.get("worker"),
        "choice": a.get("choice", dict(trial.params)),
        "steps": a.get("steps"),
        "architecture": a.get("architecture"),
        "params": a.get("params"),
        "flops": a.get("flops"),
        "latency_ms": a.get("latency_ms"),
        "proxy_accuracy": a.get("proxy_accuracy"),
        "val_acc_per_epoch": a.get("val_acc_per_epoch", []),
        "epochs_run": a.get("epochs_run", 0),
        "pruned_at_epoch": a.get("pruned_at_epoch"),
        "rejected": a.get("rejected"),
        "retry_of": a.get("retry_of"),
        "time_s": time_s,
        "train_time_s": a.get("train_time_s"),
        "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
    }


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(cost, accuracy)`` that no other point beats (cost no higher and accuracy
    no lower, one of them strictly), in order of increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def best_record(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial of the highest proxy accuracy (fewer params on a tie); ``None`` if none finished."""
    done = [r for r in records if r["state"] == "complete" and r["proxy_accuracy"] is not None]
    return max(done, key=lambda r: (r["proxy_accuracy"], -r["params"]), default=None)


def recipe_dict(name: str, best: dict[str, Any], base_steps: list, settings: dict[str, Any], study: str,
                train: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe (as a mapping for YAML) that builds ``best``'s model from a fresh ResNet-18 and trains
    it with ``train`` (default :data:`compress.recipes.FAST_TRAIN`); it claims the exact param count
    and no accuracy (the search measured a validation proxy, not a test accuracy)."""
    proxy = settings["proxy"]
    steps = [[n, a] for n, a in base_steps] + list(best["steps"])
    train = _plain(dict(train if train is not None else FAST_TRAIN))
    TrainConfig.from_dict(train, "recipe train")  # refused here, not when the recipe is loaded
    acc = best["proxy_accuracy"]
    source = (
        f"Found by compress.search (study {study!r}, trial {best['number']} of a search over {settings['base']} "
        f"under the budget {_budget_text(settings['budget'])}).\n"
        f"Architecture: {best['architecture']}.\n"
        f"Proxy: {proxy['epochs']} epochs of the fast schedule on {proxy['train_images'] or 'all remaining'} training "
        f"images, scored on {proxy['val_images']} validation images carved from the training set (seed "
        f"{proxy['seed']}): {100 * acc:.2f}% validation accuracy. No test image was used by the search.\n"
        f"Params {best['params']:,}, FLOPs {best['flops']:,}"
        + (f", latency {best['latency_ms']:.3f} ms (batch {settings['budget']['latency_batch']}, "
           f"{settings['budget']['latency_device']})" if best.get("latency_ms") is not None else "") + ".\n"
    )
    return {
        "name": name,
        "title": f"compress.search best of study {study} (trial {best['number']})",
        "source": source,
        "model": [{n: _plain(a)} for n, a in steps],
        "train": train,
        "claims": {"params": int(best["params"]), "accuracy": None,
                   "accuracy_basis": f"none: the search's {100 * acc:.2f}% is a {proxy['epochs']}-epoch proxy's "
                                     "validation accuracy, not a test accuracy"},
    }


def _plain(v: Any) -> Any:
    """Tuples to lists, recursively (YAML's safe dumper writes lists, not Python tuples)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as ``|`` blocks, as the recipes in recipes/ are written."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def _budget_text(budget: dict[str, Any]) -> str:
    parts = []
    if budget.get("params") is not None:
        parts.append(f"{budget['params']:,} params")
    if budget.get("flops") is not None:
        parts.append(f"{budget['flops']:,} FLOPs")
    if budget.get("latency_ms") is not None:
        parts.append(f"{budget['latency_ms']:g} ms at batch {budget['latency_batch']} ({budget['latency_device']})")
    return ", ".join(parts) or "(none)"


def safe_url(url: str) -> str:
    """``url`` without a password (``user:secret@host`` -> ``user:***@host``)."""
    head, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return head + sep + rest


def write_outputs(
    study: optuna.Study, out: Path, settings: dict[str, Any], base_steps: list | None, recipe_name: str,
    recipe_train: dict[str, Any] | None, url: str, *, plots: bool = True,
) -> tuple[dict[str, Path], list[dict[str, Any]], dict[str, Any] | None]:
    """Write ``trials.json``, ``best.json``, the recipe (if ``base_steps`` is not ``None``) and, with
    ``plots``, the plots from the study's storage; returns (files by kind, trial records, best record)."""
    records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    best = best_record(records)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    files = {"trials": write_json(out / TRIALS_FILE, {
        "study": study.study_name, "storage": safe_url(url),
        "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings, "counts": counts, "best": None if best is None else best["number"], "trials": records,
    }, indent=1)}
    if best is None:
        return files, records, None
    files["best"] = write_json(out / BEST_FILE, best)
    if base_steps is not None:
        doc = recipe_dict(recipe_name, best, base_steps, settings, study.study_name, recipe_train)
        from_mapping(doc, f"the recipe of trial {best['number']}")  # what compress.recipes.load will check
        text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=110, default_flow_style=None)
        files["recipe"] = atomic_write(out / f"{recipe_name}.yaml", text)
    if plots:
        files.update(plot(records, settings["budget"], out))
    return files, records, best


def plot(records: Sequence[dict[str, Any]], budget: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """``accuracy_vs_params.png`` and ``accuracy_vs_latency.png`` in ``out``: every finished trial, the
    pruned ones at their last reported epoch, the Pareto front and the budget line; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    done = [r for r in records if r["state"] == "complete"]
    pruned = [r for r in records if r["state"] == "pruned" and r["val_acc_per_epoch"]]
    files = {}
    for key, label, scale, limit, name in (
        ("params", "trainable parameters (millions)", 1e-6, budget.get("params"), "accuracy_vs_params"),
        ("latency_ms", f"latency, ms per batch of {budget.get('latency_batch')} ({budget.get('latency_device')})", 1.0,
         budget.get("latency_ms"), "accuracy_vs_latency"),
    ):
        pts = [(r[key] * scale, 100 * r["proxy_accuracy"]) for r in done if r[key] is not None]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        if pts:
            ax.scatter(*zip(*pts), s=22, color="tab:blue", label=f"finished trials ({len(pts)})", zorder=3)
            front = [pts[i] for i in pareto_front(pts)]
            ax.step(*zip(*front), where="post", color="tab:green", lw=1.5, marker="o", mfc="none", ms=9,
                    label=f"Pareto front ({len(front)})", zorder=2)
            for (x, y), r in zip(pts, [r for r in done if r[key] is not None]):
                if (x, y) in front:
                    ax.annotate(str(r["number"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        pp = [(r[key] * scale, 100 * r["val_acc_per_epoch"][-1]) for r in pruned if r[key] is not None]
        if pp:
            ax.scatter(*zip(*pp), s=18, marker="x", color="tab:gray", label=f"pruned, at their last epoch ({len(pp)})")
        if limit is not None:
            ax.axvline(limit * scale, color="tab:red", ls="--", lw=1, label="budget")
        ax.set_xlabel(label)
        ax.set_ylabel("proxy validation accuracy (%)")
        ax.set_title(f"compress.search: accuracy against {key.split('_')[0]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        files[name] = out / f"{name}.png"
        fig.savefig(files[name], dpi=110)
        plt.close(fig)
    return files
