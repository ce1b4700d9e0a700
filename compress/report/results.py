"""Reading a run's ``results.json`` (checked row by row) and naming what the run was."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..runfolder import RESULTS, row_problem

__all__ = ["load_results", "run_label", "row_problem"]


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the one in the run folder ``path``); check it has ``rows``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run folder {path}: it does not exist (a run folder is what `compress-bench --out DIR` writes)")
    if path.is_dir():
        path = path / RESULTS
    elif path.name != RESULTS:
        raise ValueError(f"{path} is a file, not a run folder; give the folder `compress-bench --out DIR` wrote "
                         "(or its results.json)")
    if not path.is_file():
        raise FileNotFoundError(f"no results in {path.parent}: it has no results.json yet; "
                                f"run `compress-bench --out {path.parent}` (or re-run its command) first")

    def no_nan(name: str) -> None:  # compress never writes NaN/Infinity: such a file was edited, not measured
        raise ValueError(f"it holds {name}, which is not a measurement")

    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_nan)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read as compress-bench results ({' '.join(str(e).split())}); it is written "
                         "atomically, so something else changed it: re-run the command that wrote it") from e
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: expected an object with a 'rows' list")
    bad = next((i for i, r in enumerate(data["rows"]) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: rows[{bad}] is a {type(data['rows'][bad]).__name__}, expected an object (one recipe's row)")
    for i, row in enumerate(data["rows"]):
        if (problem := row_problem(row)) is not None:
            raise ValueError(f"{path}: rows[{i}] ({str(row.get('recipe', '?'))[:40]}): {problem}")
    return data


def run_label(results: dict[str, Any]) -> str:
    """What a run was, for titles: budget, epochs actually run, step cap, time budget and data when not
    the whole CIFAR-10, e.g. ``budget fast, 2 epochs, at most 5 steps per epoch, data: synthetic``."""
    rows = results.get("rows") or []
    parts = [f"budget {results.get('budget') or '?'}"]
    if results.get("time_budget_min"):
        parts.append(f"{results['time_budget_min']:g} min time budget")
    ran = sorted({int(r["epochs_run"]) for r in rows if r.get("epochs_run") is not None})
    if ran:
        parts.append(f"{ran[0]} epoch{'s' if ran[-1] != 1 else ''}" if len(ran) == 1 else f"{ran[0]}-{ran[-1]} epochs")
    if results.get("max_steps_per_epoch"):
        parts.append(f"at most {results['max_steps_per_epoch']} steps per epoch")
    overrides = results.get("overrides") or {}
    parts += [f"{k.replace('_', ' ')} {v}" for k, v in sorted(overrides.items())]
    data = results.get("data") or {}
    name = data.get("name") or "CIFAR-10"
    if name != "CIFAR-10":
        parts.append(f"data: {name}")
    elif data.get("train") and (data.get("train"), data.get("test")) != (50_000, 10_000):
        parts.append(f"{data['train']:,} train / {data['test']:,} test images")
    return ", ".join(parts)
