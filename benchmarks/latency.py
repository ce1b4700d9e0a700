"""Measured inference speed of every recipe on this machine's CPU, and what ``round_to`` changes.

For each backend (eager PyTorch, ``torch.compile``, ONNX Runtime) it measures, with
``compress.deploy.measure`` (median and IQR over timed repeats after warm-up, fixed threads):

1. every recipe's model, built fresh from the built-in recipes (speed does not depend on the weights);
2. ResNet-18 L1-pruned to the same parameter budget three times: ``round_to`` none, 8 and 16 (channel
   counts left as the budget search finds them, or rounded to multiples of 8 / 16), to see whether
   rounded widths close the gap between the FLOP reduction and the measured speed-up.

Every speed-up is against a ResNet-18 measured with the same backend in the same session. Needs a quiet
machine: the load average before and after is recorded, and a warning is printed above 0.5.

Examples::

    python benchmarks/latency.py                                      # the full table (long: see benchmarks/README.md)
    python benchmarks/latency.py --recipes 004 --round-to none,16 --repeats 2 --batch-sizes 1,8 --tag smoke

Writes ``benchmarks/results/latency-cpu-<date>[-TAG].json`` and ``.md``, rewritten after each backend. The
same command again (same day and tag) skips the backends already in the file, so an interrupted run
resumes, and ``--backends compile`` later adds a backend to an earlier file of the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import compress
from compress import deploy, report
from compress.provenance import provenance
from compress.recipes import BUILTIN_RECIPES, find, load

ROOT = Path(__file__).resolve().parent.parent


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _round_to(text: str) -> list[int | None]:
    return [None if v.strip() == "none" else int(v) for v in text.split(",") if v.strip()]


def _widths(model: torch.nn.Module) -> str:
    cfg = model.config
    return f"stem {cfg.stem_width}, stages " + "/".join(str(w) for w in cfg.widths)


def build_models(recipes: list[str], round_to: list[int | None], budget: int) -> tuple[dict, dict]:
    """``({name: model}, {name: extra row fields})`` for the recipes and the round_to variants."""
    models, extra = {}, {}
    for name in recipes:
        recipe = load(find(name, BUILTIN_RECIPES))
        torch.manual_seed(recipe.train.seed)
        models[recipe.name] = recipe.build()
        extra[recipe.name] = {"group": "recipe"}
    if round_to:
        torch.manual_seed(0)
        base = compress.resnet18()
        for r in round_to:
            name = f"prune-{budget / 1e6:g}M-round{r or 'none'}"
            t0 = time.perf_counter()
            models[name] = compress.prune(base, target_params=budget, importance="l1", round_to=r)
            extra[name] = {"group": "round_to", "round_to": r, "widths": _widths(models[name]),
                           "prune_s": round(time.perf_counter() - t0, 1)}
    return models, extra


def markdown(out: dict) -> str:
    """The result file's markdown: how it was measured, the recipes' table, the round_to table."""
    rows, st = out["rows"], out["settings"]
    recipes = [r for r in rows if r["group"] == "recipe"]
    rounded = [r for r in rows if r["group"] == "round_to"]
    lines = ["# Measured inference speed on the CPU", "",
             f"Backends measured: {', '.join(out['backends_done'])}; batch sizes {', '.join(map(str, st['batch_sizes']))}; "
             f"{st['threads']} threads; {st['repeats']} timed repeats after {st['warmup']} warm-up calls per batch size.", ""]
    for run in out["runs"]:
        load = f"load average (1 min) {run['load_average_before'][0]:.2f} before"
        if run.get("load_average_after"):
            load += f", {run['load_average_after'][0]:.2f} after"
        lines.append(f"- `{run['command']}`: {', '.join(run.get('backends', [])) or 'nothing finished'}; "
                     f"commit {run['git_commit']}; {run['device_name']}; torch {run['torch']}; {run['date']}; "
                     f"{run.get('elapsed_s', 0):.0f} s; {load}")
    lines += ["", "## Recipes", "", report.latency_markdown(recipes)]
    if rounded:
        lines += [
            "",
            f"## `round_to`: ResNet-18 L1-pruned to {st['round_budget']:,} parameters",
            "",
            "| model | round_to | widths | params | FLOPs |",
            "|---|---:|---|---:|---:|",
            *[f"| {r['recipe']} | {r['round_to'] or 'none'} | {r['widths']} | {r['params']:,} | {r['flops'] / 1e6:.2f} M |"
              for r in rounded],
            "",
            report.latency_markdown(rounded),
        ]
    return "\n".join(lines) + "\n"

def main(argv: list[str] | None = None) -> dict:
    """Measure, write the JSON and markdown files, return the JSON object."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=None, help="comma-separated recipe names (default: every built-in recipe)")
    p.add_argument("--backends", default=",".join(deploy.BACKENDS), help="comma-separated, default: all three")
    p.add_argument("--batch-sizes", default="1,256")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: the core count)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--round-to", default="none,8,16", help="round_to variants of the pruned ResNet-18 ('' for none)")
    p.add_argument("--round-budget", type=int, default=4_900_000, help="their parameter budget")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="", help="appended to the file names")
    args = p.parse_args(argv)

    backends = [b for b in args.backends.split(",") if b]
    bad = [b for b in backends if b not in deploy.BACKENDS]
    if bad:
        p.error(f"unknown backends {bad}; choose from {', '.join(deploy.BACKENDS)}")
    recipes = [r for r in args.recipes.split(",") if r] if args.recipes else [q.stem for q in sorted(BUILTIN_RECIPES.glob("*.yaml"))]
    settings = {"recipes": recipes, "round_to": args.round_to, "round_budget": args.round_budget,
                "batch_sizes": list(_ints(args.batch_sizes)), "threads": args.threads, "repeats": args.repeats,
                "warmup": args.warmup}
    run = provenance("cpu", ["python", *sys.argv] if argv is None else ["benchmarks/latency.py", *argv])
    run["load_average_before"] = list(os.getloadavg())
    stem = f"latency-cpu-{run['date'][:10]}" + (f"-{args.tag}" if args.tag else "")
    path = Path(args.out) / f"{stem}.json"
    out: dict = {"benchmark": "latency", "settings": settings, "backends_done": [], "runs": [], "rows": []}
    if path.is_file():  # resume, or add backends to an earlier run of the same settings
        out = json.loads(path.read_text())
        if out.get("settings") != settings:
            p.error(f"{path} was written with other settings ({out.get('settings')}); pass another --tag")
        skipped = [b for b in backends if b in out["backends_done"]]
        if skipped:
            print(f"{path}: {', '.join(skipped)} already measured, skipping", flush=True)
        backends = [b for b in backends if b not in out["backends_done"]]
    if not backends:
        return out
    if run["load_average_before"][0] > 0.5:
        print(f"warning: load average {run['load_average_before'][0]:.2f}: the machine is not quiet, timings "
              "will be noisy", flush=True)
    out["runs"].append(run)
    models, extra = build_models(recipes, _round_to(args.round_to), args.round_budget)
    rows = {r["recipe"]: r for r in out["rows"]}
    t0 = time.perf_counter()
    for backend in backends:
        measured = deploy.measure(models, backends=(backend,), batch_sizes=settings["batch_sizes"],
                                  threads=args.threads, repeats=args.repeats, warmup=args.warmup,
                                  log=lambda s: print(f"[{time.perf_counter() - t0:7.0f} s] {s}", flush=True))
        for row in measured:
            merged = rows.setdefault(row["recipe"], {**row, **extra[row["recipe"]], "latency": {}})
            merged["latency"].update(row["latency"])
        out["backends_done"].append(backend)
        out["rows"] = list(rows.values())
        run["backends"] = run.get("backends", []) + [backend]
        run["load_average_after"] = list(os.getloadavg())
        run["elapsed_s"] = round(time.perf_counter() - t0, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
        path.with_suffix(".md").write_text(markdown(out))
        print(f"{backend} done after {run['elapsed_s']:.0f} s: wrote {path} and {path.with_suffix('.md').name}", flush=True)
    return out

if __name__ == "__main__":
    main()
