"""What flip test-time augmentation adds to a run folder's trained models.

A time-budgeted CPU run (``compress-bench --time-budget MIN``) reports each model's test accuracy with
flip TTA (the logits of each image and its mirror image averaged). This script evaluates every
``model.pt`` of a run folder twice with ``compress.evaluate`` under the precision its training used
(bf16 autocast on a CPU with native bf16): with ``tta_flip=True``, which should give the accuracy the
run reported (a check), and without, which is what the model scores without TTA. The difference is
what TTA is worth for that model.

Example::

    python benchmarks/tta_effect.py runs/cpu-15min --data /tmp/cifar10.npz

Writes ``benchmarks/results/tta-effect-<run folder name>.json`` and ``.md`` (``--out`` to change the
folder), rewritten after each model, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import compress
from compress import bench
from compress.files import atomic_write, write_json
from compress.provenance import provenance

ROOT = Path(__file__).resolve().parent.parent


def measure(model_path: Path, data, amp: str | None, device: str) -> dict:
    """Accuracy and loss of one saved model with and without flip TTA."""
    from compress.cli import _load_any  # the loader compress-bench eval uses: the model's training normalisation

    model, _ = _load_any(str(model_path), "auto")
    row = {}
    for tta in (False, True):
        t0 = time.perf_counter()
        r = compress.evaluate(model, data, device=device, amp=amp, tta_flip=tta, progress=False)
        row["tta" if tta else "plain"] = {"accuracy": r.accuracy, "loss": r.loss, "seconds": round(time.perf_counter() - t0, 1)}
    return row


def markdown(result: dict) -> str:
    lines = [
        f"# Flip test-time augmentation on the models of `{result['run']}`", "",
        f"`{result['command']}` (commit {result['git_commit'][:10]}, torch {result['torch']}, {result['date']}; "
        f"evaluated under `amp={result['amp']}` on {result['device_name']}, {result['test_images']:,} test images).", "",
        "| recipe | reported by the run (TTA) | re-measured with TTA | without TTA | TTA adds |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in result["models"].items():
        rep = row["reported"]
        lines.append(f"| {name} | {'-' if rep is None else f'{100 * rep:.2f}%'} | {100 * row['tta']['accuracy']:.2f}% | "
                     f"{100 * row['plain']['accuracy']:.2f}% | "
                     f"{100 * (row['tta']['accuracy'] - row['plain']['accuracy']):+.2f} pp |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a compress-bench run folder")
    p.add_argument("--data", required=True, help="the CIFAR-10 the run was trained on")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=("bf16", "none"), default="bf16", help="autocast of the evaluation (default bf16)")
    p.add_argument("--recipes", default=None, help="comma-separated recipe names (default: every finished one)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    names = args.recipes.split(",") if args.recipes else sorted(
        d.name for d in args.run.iterdir() if (d / "model.pt").is_file() and (d / "result.json").is_file())
    if not names:
        p.error(f"{args.run} holds no finished recipe (a folder with model.pt and result.json)")
    data = bench.resolve_data(args.data)
    amp = None if args.amp == "none" else args.amp
    stem = args.out / f"tta-effect-{args.run.resolve().name}"
    result = {**provenance(args.device), "run": str(args.run), "amp": args.amp, "test_images": int(data.test_y.shape[0]), "models": {}}
    torch.manual_seed(0)
    for name in names:
        reported = json.loads((args.run / name / "result.json").read_text()).get("test_acc")
        print(f"{name} ...", flush=True)
        result["models"][name] = {"reported": reported, **measure(args.run / name / "model.pt", data, amp, args.device)}
        row = result["models"][name]
        print(f"{name}: reported {reported}, with TTA {row['tta']['accuracy']:.4f}, without {row['plain']['accuracy']:.4f}",
              flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(stem.with_suffix(".json"), result)
        atomic_write(stem.with_suffix(".md"), markdown(result))
    print(f"written {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
