"""Does a search's proxy rank architectures as a real training run does? Proxy against 10 epochs.

A search (``compress-bench search``) scores each trial by a short proxy: a few epochs on a subset,
validation accuracy on images carved from the training set. This script takes ``--trials`` (at least
6) of its finished trials spread evenly over the range of proxy accuracies (lowest, highest and evenly
ranked ones between), writes each as a recipe (the one the search writes for its best trial), trains
them all with the ``fast`` schedule for ``--epochs`` (10) on the whole of CIFAR-10 as one
``compress-bench`` run folder (it resumes), and reports each trial's proxy accuracy against its
final-epoch test accuracy with the Spearman rank correlation of the two.

Example (hours of CPU: run it in the background; a killed run resumes)::

    nohup python benchmarks/search_rank.py benchmarks/results/search-r18-5m --data /tmp/cifar10.npz \\
        --out /work/runs/search-rank --device cpu --no-progress &

``OUT/recipes/`` holds the trials' recipes, ``OUT/run/`` the run folder (checkpoints: never commit
those), ``OUT/rank.json`` and ``OUT/rank.md`` the result with the command, commit, CPU model (and
whether it has AMX) and torch version. Commit ``rank.json``, ``rank.md``, the recipes and the run
folder's ``results.json`` under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from compress.provenance import cpu_info, provenance

MIN_TRIALS = 6


def spread(records: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` finished trials evenly spread over the ranks of their proxy accuracies (lowest and highest
    included), in order of proxy accuracy; ``ValueError`` if fewer than ``n`` finished."""
    done = sorted((r for r in records if r.get("state") == "complete" and r.get("proxy_accuracy") is not None),
                  key=lambda r: (r["proxy_accuracy"], r["number"]))
    if n < 2 or len(done) < n:
        raise ValueError(f"asked for {n} trials spread over the range, the search has {len(done)} finished trials")
    picks = sorted({round(i * (len(done) - 1) / (n - 1)) for i in range(n)})
    return [done[i] for i in picks]


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``; tied values share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (the Pearson correlation of their ranks)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("spearman needs two sequences of the same length, at least 2")
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return float("nan") if var == 0 else cov / var


def trial_recipes(search_dir: Path, picked: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Each picked trial as a recipe file ``OUT/recipes/trial-<number>.yaml`` (built from ResNet-18 as
    the search's own best recipe is, trained with the ``fast`` schedule)."""
    from compress.recipes import from_mapping
    from compress.search.output import recipe_dict
    from compress.search.study import resolve_base

    trials = json.loads((search_dir / "trials.json").read_text())
    settings, study = trials["settings"], trials["study"]
    base = settings["base"]
    _, base_steps, _ = resolve_base(base.removeprefix("recipe ") if base.startswith("recipe ") else base)
    if base_steps is None:
        raise ValueError(f"the search's base ({base}) is no recipe built from ResNet-18: its trials cannot be written as recipes")
    folder = out / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for record in picked:
        name = f"trial-{record['number']}"
        doc = recipe_dict(name, record, base_steps, settings, study)
        from_mapping(doc, name)  # refused here rather than by compress-bench
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=110))
        paths.append(path)
    return paths


def result(picked: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Proxy against trained accuracy for every picked trial that has a row, with their Spearman correlation."""
    by_name = {r["recipe"]: r for r in rows}
    pairs = []
    for record in picked:
        row = by_name.get(f"trial-{record['number']}")
        if row is None or row.get("measured_accuracy") is None:
            continue
        pairs.append({
            "trial": record["number"], "architecture": record["architecture"], "params": record["params"],
            "flops": record["flops"], "proxy_accuracy": round(100 * record["proxy_accuracy"], 2),
            "test_accuracy": row["measured_accuracy"], "tta": row.get("tta"), "epochs": epochs,
            "epoch_time_s": (round(row["train_time_s"] / row["epochs_run"], 1)
                             if row.get("train_time_s") and row.get("epochs_run") else None),
        })
    rho = spearman([p["proxy_accuracy"] for p in pairs], [p["test_accuracy"] for p in pairs]) if len(pairs) >= 2 else None
    return {"trials": pairs, "spearman": rho, "n": len(pairs)}


def markdown(res: dict[str, Any], meta: dict[str, Any]) -> str:
    """``rank.md``: the table and the correlation."""
    lines = [f"# Search proxy against {meta['epochs']} epochs of the fast schedule", "",
             f"CPU: {meta['cpu']['model']} (AMX: {meta['cpu']['amx']}); torch {meta['torch']}; commit {meta['commit']}.",
             f"Command: `{meta['command']}`", "",
             "| trial | architecture | params | FLOPs | proxy (val acc) | test acc, final epoch | TTA |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for p in sorted(res["trials"], key=lambda p: p["proxy_accuracy"]):
        lines.append(f"| {p['trial']} | {p['architecture']} | {p['params']:,} | {p['flops'] / 1e6:.1f} M | "
                     f"{p['proxy_accuracy']:.2f}% | {p['test_accuracy']:.2f}% | {p['tta'] or '-'} |")
    rho = res["spearman"]
    lines += ["", f"Spearman rank correlation over {res['n']} trials: " + ("-" if rho is None else f"{rho:.3f}"), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("search", type=Path, help="a search's run folder (with trials.json)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", required=True, help="CIFAR-10 (.npz or folder), as for compress-bench")
    p.add_argument("--trials", type=int, default=MIN_TRIALS, help=f"trials to train (default {MIN_TRIALS})")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.trials < MIN_TRIALS:
        p.error(f"--trials must be at least {MIN_TRIALS} (a rank correlation over fewer says little)")
    trials = args.search / "trials.json"
    if not trials.is_file():
        p.error(f"{trials} not found: give a search's run folder")
    try:
        picked = spread(json.loads(trials.read_text())["trials"], args.trials)
        paths = trial_recipes(args.search, picked, args.out)
    except ValueError as e:
        p.error(str(e))
    cmd = [sys.executable, "-m", "compress.cli", "--recipes-dir", str(args.out / "recipes"), "--out", str(args.out / "run"),
           "--data", args.data, "--epochs", str(args.epochs)]
    cmd += (["--device", args.device] if args.device else []) + (["--no-progress"] if args.no_progress else [])
    subprocess.run(cmd + [path.stem for path in paths], check=True)
    rows = json.loads((args.out / "run" / "results.json").read_text())["rows"]
    res = result(picked, rows, args.epochs)
    prov = provenance(argv=sys.argv)
    meta = {"command": prov["command"], "commit": prov["git_commit"][:10], "cpu": cpu_info(), "torch": prov["torch"],
            "epochs": args.epochs}
    (args.out / "rank.json").write_text(json.dumps({**meta, **res}, indent=1))
    (args.out / "rank.md").write_text(markdown(res, meta))
    print(markdown(res, meta))


if __name__ == "__main__":
    main()
