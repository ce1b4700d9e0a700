"""Final-epoch test accuracy after a given number of epochs, for recipes under a named schedule, on the CPU.

Each run is ``RECIPE:SCHEDULE:EPOCHS`` (optionally ``:-OPTION`` to take one option of the schedule out,
for an ablation, and ``:bN`` to train at batch size N instead of the schedule's): the recipe's model (``compress.recipes``) trained on the whole of CIFAR-10 with that
schedule laid over exactly that many epochs (a 2-epoch run is its own run, not the first two epochs
of a longer one). Schedules:

- ``fast``: today's ``compress.recipes.FAST_TRAIN`` (decoupled Nesterov SGD, linear warm-up/decay,
  label smoothing 0.2, translate + alternating flip, mirror + translate TTA);
- ``fast-v2``: ``fast`` with Lookahead on airbench's ramp (``compress.recipes.FAST_TRAIN_V2``). It was
  called ``fast`` until the evening of 2026-12-02: the runs named ``...:fast:...`` in
  ``benchmarks/results/train-curve-cpu-2026-12-02/`` made before then ran it (each run's ``config``
  says which), and ``...:fast:...:-lookahead`` there is today's ``fast``;
- ``fast-lookahead-buffers``: ``fast-v2`` with its Lookahead averaging and resetting BatchNorm's running
  statistics with the weights (airbench averages its whole state dict), for the comparison;
- ``fast-v1``: the ``fast`` schedule before those (``compress.recipes.FAST_TRAIN_V1``: one-cycle SGD,
  crop + flip, label smoothing 0.1, no TTA), for the comparison.

Options that ``-OPTION`` takes out of ``fast`` or ``fast-v2`` (each replaced by what plain training does):
``lookahead``, ``label_smoothing`` (0), ``alternating_flip`` (a fair coin per image), ``translate``
(crop with zero padding 4), ``tta`` (none), ``bias_lr`` (BatchNorm biases at the common rate),
``linear`` (one-cycle instead of the linear schedule). Taking out what the schedule does not have
(``fast:-lookahead``, ``fast:-bias_lr``) is refused.

Example (the issue's table; hours of CPU, run it in the background; it resumes)::

    nohup python benchmarks/train_curve.py --data /tmp/cifar10.npz --out /work/runs/train-curve \\
        004:fast:10 002b:fast:10 resnet18:fast:10 004:fast-v1:10 004:fast-v2:5:-label_smoothing ... &

Every run trains in ``OUT/<run>/`` (checkpoints, so a killed run resumes) and writes ``OUT/<run>/curve.json``:
command, commit, CPU model and whether it has AMX, torch version, TTA level, the per-epoch history with
wall time per epoch, and the final epoch's test accuracy. ``OUT/results.json`` and ``OUT/results.md``
collect the finished runs after each one. Commit those (never the checkpoints) under
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch

from compress import bench, recipes
from compress.files import atomic_write, write_json
from compress.metrics import count_flops, count_params
from compress.provenance import cpu_info, provenance
from compress.training import TrainConfig, train

SCHEDULES = {
    "fast": recipes.FAST_TRAIN,
    "fast-v2": recipes.FAST_TRAIN_V2,
    "fast-v1": recipes.FAST_TRAIN_V1,
    # fast-v2 with its Lookahead also averaging BatchNorm's running statistics (as airbench does)
    "fast-lookahead-buffers": {**recipes.FAST_TRAIN_V2, "lookahead": {**recipes.FAST_TRAIN_V2["lookahead"], "buffers": True}},
}

#: What taking each option out of the ``fast`` (or ``fast-v2``) schedule means (a function of its dict).
ABLATIONS = {
    "lookahead": lambda d: d.update(lookahead=None),
    "label_smoothing": lambda d: d.update(label_smoothing=0.0),
    "alternating_flip": lambda d: d.update(augment=[s if s["name"] != "alternating_flip" else
                                                    {"name": "hflip", "params": {"p": 0.5}} for s in d["augment"]]),
    "translate": lambda d: d.update(augment=[s if s["name"] != "translate" else
                                             {"name": "random_crop", "params": {"padding": 4}} for s in d["augment"]]),
    "tta": lambda d: d.update(tta="none"),
    "bias_lr": lambda d: d["optimizer"].update(bias_lr_scale=1.0),
    "linear": lambda d: d.update(schedule={"name": "onecycle", "pct_start": d["schedule"].get("pct_start", 0.25),
                                           "interval": "step"}),
}
#: The schedules that ``:-OPTION`` applies to.
ABLATED = ("fast", "fast-v2")


def parse_run(spec: str) -> tuple[str, str, int, str | None, int | None]:
    """``RECIPE:SCHEDULE:EPOCHS[:-OPTION][:bN]`` -> (recipe, schedule, epochs, option taken out or None,
    batch size or None)."""
    parts = spec.split(":")
    usage = f"bad run {spec!r}: expected RECIPE:SCHEDULE:EPOCHS[:-OPTION][:bN], schedules {', '.join(SCHEDULES)}"
    if not 3 <= len(parts) <= 5 or parts[1] not in SCHEDULES or not parts[2].isdigit() or int(parts[2]) < 1:
        raise SystemExit(usage)
    without = batch = None
    for extra in parts[3:]:
        if extra.startswith("b") and extra[1:].isdigit() and int(extra[1:]) >= 1 and batch is None:
            batch = int(extra[1:])
        elif extra.startswith("-") and extra[1:] in ABLATIONS and parts[1] in ABLATED and without is None:
            without = extra[1:]
        else:
            raise SystemExit(f"{usage}; ':-OPTION' takes one option out of the {' or '.join(ABLATED)} schedule: "
                             f"{', '.join(ABLATIONS)}")
    if without is not None and config_for(parts[1], 1, without) == config_for(parts[1], 1, None):
        raise SystemExit(f"bad run {spec!r}: the {parts[1]} schedule has no {without} to take out")
    return parts[0], parts[1], int(parts[2]), without, batch


def config_for(schedule: str, epochs: int, without: str | None, batch: int | None = None) -> TrainConfig:
    """The schedule's config laid over ``epochs`` epochs, with ``without`` taken out, at ``batch`` (if given)."""
    d = copy.deepcopy(SCHEDULES[schedule])
    if without is not None:
        ABLATIONS[without](d)
    if batch is not None:
        d["batch_size"] = batch
    return TrainConfig.from_dict(d, schedule).over_epochs(epochs)


def run_one(spec: str, data: Any, out: Path, argv: list[str], progress: bool) -> dict[str, Any]:
    """Train one run (resuming its folder) and return its record."""
    name, schedule, epochs, without, batch = parse_run(spec)
    recipe = recipes.load(recipes.find(name))
    model = recipe.build()
    config = config_for(schedule, epochs, without, batch)
    folder = out / spec.replace(":", "_")
    t0 = time.perf_counter()
    result = train(model, data, config, out_dir=folder, resume=True, device="cpu", progress=progress)
    record = {
        "run": spec, "recipe": name, "schedule": schedule, "epochs": epochs, "without": without,
        "batch_size": config.batch_size,
        "params": count_params(model), "flops": count_flops(model),
        "test_acc_final_epoch": 100.0 * result.test_acc, "tta": result.tta,
        "selected_epoch": result.selected_epoch, "epochs_run": result.epochs_run,
        "epoch_time_s": [round(h["epoch_time_s"], 1) for h in result.history],
        "train_time_s": result.train_time_s, "images_per_s": result.images_per_s,
        "history": result.history, "precision": result.precision, "config": config.to_dict(),
        "data": bench.describe_data(data), "cpu": cpu_info(), **provenance("cpu", argv), "wall_this_process_s": round(time.perf_counter() - t0, 1),
    }
    write_json(folder / "curve.json", record, indent=1)
    return record


def markdown(records: list[dict[str, Any]]) -> str:
    """The finished runs as one table."""
    data = sorted({f"{r['data']['name']} ({r['data']['train']:,} train / {r['data']['test']:,} test images)" for r in records})
    lines = ["# Final-epoch test accuracy by schedule and epochs (CPU, one seed)", "",
             f"Data: {', '.join(data)}. `benchmarks/train_curve.py`; each row is its own run, its schedule laid "
             "over exactly its epochs; the accuracy is the last epoch's, on the whole test set, with the TTA shown.", "",
             "| run | params | batch | epochs | final-epoch test acc | TTA | same model without TTA | s/epoch (median) "
             "| CPU (AMX) | commit |",
             "|---|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for r in records:
        times = sorted(r["epoch_time_s"])
        median = times[len(times) // 2] if times else float("nan")
        cpu = f"{r['cpu']['model']} ({'AMX' if r['cpu']['amx'] else 'no AMX'})"
        last = r["history"][-1]
        plain = f"{100 * last['test_acc']:.2f}%" if "test_acc_tta" in last or r["tta"] == "none" else "-"
        lines.append(f"| {r['run']} | {r['params']:,} | {r['config']['batch_size']} | {r['epochs']} | "
                     f"{r['test_acc_final_epoch']:.2f}% | {r['tta']} | "
                     f"{plain} | {median:.0f} | {cpu} | {r['git_commit'][:10]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="RECIPE:SCHEDULE:EPOCHS[:-OPTION]")
    p.add_argument("--data", required=True, help="CIFAR-10 (.npz, batches folder, ...; synthetic:N:M for a smoke run)")
    p.add_argument("--out", required=True, help="run folder (resumes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report", action="store_true",
                   help="only re-render OUT/results.json and results.md from the runs' curve.json files (no training)")
    args = p.parse_args(argv[1:])
    if args.report:
        write_results(Path(args.out), [r for spec in args.runs if (r := _finished(Path(args.out), spec)) is not None])
        return 0
    for spec in args.runs:
        parse_run(spec)  # every spec checked before hours of training
    if args.threads:
        torch.set_num_threads(args.threads)
    data = bench.resolve_data(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for spec in args.runs:
        records.append(run_one(spec, data, out, argv, not args.no_progress))
        write_results(out, records)
        print(f"{spec}: {records[-1]['test_acc_final_epoch']:.2f}% after {records[-1]['epochs']} epochs "
              f"(TTA {records[-1]['tta']})", flush=True)
    return 0


def _finished(out: Path, spec: str) -> dict[str, Any] | None:
    """The record ``run_one`` wrote for ``spec``, or None while it has not finished."""
    import json

    path = out / spec.replace(":", "_") / "curve.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_results(out: Path, records: list[dict[str, Any]]) -> None:
    """``OUT/results.json`` and ``OUT/results.md`` of the finished runs."""
    write_json(out / "results.json", {"runs": records}, indent=1)
    atomic_write(out / "results.md", markdown(records))


if __name__ == "__main__":
    raise SystemExit(main())
