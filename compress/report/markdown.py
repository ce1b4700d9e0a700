"""``report.md``: where the numbers come from, the comparison table, the measured speed and the plots."""

from __future__ import annotations

from typing import Any, Sequence

from ..recipes import BUDGET_PARAMS
from ..runfolder import FEW_STEPS
from ._cells import _columns, _diff_note, _epoch_time, _latency_cells, _short_commit, _trained_start, latency_backend

__all__ = ["markdown", "latency_markdown"]


def latency_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: every measured backend of every row (median ± IQR at batch 1, images/s at the largest batch,
    speed-ups against ResNet-18 next to the FLOP reduction), then where and how it was measured."""
    head, cells, note = _latency_cells(rows)
    if not head:
        return note
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in ("recipe", "backend") else "---:" for h in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines + ["", note])


def markdown(results: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """``report.md``: provenance note, the comparison table, and the plots (relative links)."""
    rows = results["rows"]
    devices = sorted({str(r.get("device_name") or r["device"]) + _cpu_features(r) for r in rows if r.get("device")})
    commits = sorted({_short_commit(str(r["git_commit"])) for r in rows if r.get("git_commit")})
    dates = sorted(str(r["date"])[:10] for r in rows if r.get("date"))
    torches = sorted({str(r["torch"]) for r in rows if r.get("torch")})
    measured = [r for r in rows if r.get("measured_accuracy") is not None]
    evaluated = [r for r in measured if r.get("epochs_run") == 0]  # finetune: false
    data = results.get("data") or {}
    data_note = ""
    if data:  # "; data: CIFAR-10 (50,000 train / 10,000 test images, from `path`)"
        details = [f"{data['train']:,} train / {data['test']:,} test images"] if data.get("train") else []
        if details and data.get("source"):
            details.append(f"from `{data['source']}`")
        data_note = f"; data: {data.get('name')}" + (f" ({', '.join(details)})" if details else "")
    lines = [
        f"# compress-bench report: {results.get('run', '')}",
        "",
        "**Where the numbers come from.** *Measured* columns (accuracy, epochs, train time, "
        + ("s/epoch: the median wall time of an epoch, " if _epoch_time(rows) else "") + "images/s) were "
        f"produced by `compress-bench` in this run ({len(measured) - len(evaluated)} of {len(rows)} recipes trained"
        + (f", {len(evaluated)} only evaluated (published trained weights, no training)" if evaluated else "")
        + "; budget "
        f"`{results.get('budget')}`"
        + (f", epochs overridden to {results['epochs']} (the schedule laid over them)" if results.get("epochs") else "")
        + (f", at most {results['max_steps_per_epoch']} steps per epoch" if results.get("max_steps_per_epoch") else "")
        + (f", a time budget of {results['time_budget_min']:g} min per recipe (each recipe's epochs fixed by a probe "
           "of its speed at the start of the run, in its plan.json)" if results.get("time_budget_min") else "")
        + "".join(f", {k.replace('_', ' ')} overridden to {v}" for k, v in sorted((results.get("overrides") or {}).items()))
        + data_note
        + f"; device: {', '.join(devices) or 'n/a'}"
        + (f"; commit {', '.join(commits)}" if commits else "")
        + (f"; torch {', '.join(torches)}" if torches else "")
        + (f"; {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "") if dates else "")
        + "). The measured accuracy is the test accuracy of the final "
        "epoch, or of the best-validation epoch for recipes with a validation split. *Claimed* columns are "
        "copied from the reports and were not reproduced here; params and FLOPs are counted on the models we "
        "built (fvcore multiply-adds per 32x32 image, BN included).",
        "",
    ]
    backend = latency_backend(rows)
    if backend:
        lines[-1:] = ["", f"The *latency*, *inference img/s* and *speed-up* columns ({backend} backend) were measured by "
                      "`compress-bench latency` on the saved models, without training; a `-` means not measured. "
                      "Details under *Measured inference speed*.", ""]
    start = _trained_start(rows)
    epoch_time = _epoch_time(rows)
    cols = _columns(rows[0], backend, start, epoch_time) if rows else []
    lines.append("| " + " | ".join(h for h, _ in cols) + " |")
    lines.append("|" + "|".join("---" if h in ("recipe", "how the paper chose it") else "---:" for h, _ in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(v.replace("|", "\\|") for _, v in _columns(r, backend, start, epoch_time)) + " |")
    lines.append("")
    lines.append(f"Budget line: {BUDGET_PARAMS / 1e6:.0f} M parameters. {_diff_note(rows, '`diff`')}")
    if start:
        lines.append("Recipes that start from trained weights: *acc before compression* is the test accuracy of the "
                     "imported model, *acc after compression* that of the transformed one before any training, and "
                     "*measured* the one after fine-tuning (the same as after compression where the recipe is only "
                     "evaluated, 0 epochs).")
    lines += _setup_markdown(rows)
    if backend:
        lines += ["", "## Measured inference speed", "", latency_markdown(rows)]
    for key, caption in (("params", "Accuracy vs parameters"), ("flops", "Accuracy vs FLOPs"),
                         ("latency", "Accuracy vs measured latency"), ("curves", "Test accuracy per epoch")):
        if plots and key in plots:
            lines += ["", f"## {caption}", "", f"![{caption}]({plots[key]})"]
    lines.append("")
    return "\n".join(lines)


def _cpu_features(row: dict[str, Any]) -> str:
    """``", with AMX"`` / ``", no AMX"`` for a row measured on a CPU that recorded it (``""`` otherwise)."""
    amx = row["cpu"].get("amx") if isinstance(row.get("cpu"), dict) else None
    return "" if amx is None else ", with AMX" if amx else ", no AMX"


def _setup_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The *Training setup* section: each row's transforms, schedule, batch size and steps (``-`` where a
    row of an older run folder did not record them), and a warning for runs too short to mean anything."""
    if not rows:
        return []
    lines = ["", "## Training setup", "", "| recipe | transforms | epochs | batch | steps/epoch | optimizer steps | schedule |",
             "|---|---|---:|---:|---:|---:|---|"]
    short = []
    for r in rows:
        t = r.get("setup") or {}
        cell = lambda k: "-" if t.get(k) is None else f"{t[k]:,}"  # noqa: E731
        trained = r.get("epochs_run") != 0
        schedule = t.get("schedule") or ("only evaluated" if not trained else "-" if not t else "the recipe's own")
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in (
            str(r.get("recipe")), f"`{r.get('transforms', '-')}`", cell("epochs"), cell("batch_size"),
            cell("steps_per_epoch"), cell("optimizer_steps"), schedule)) + " |")
        if trained and t.get("optimizer_steps") is not None and t["optimizer_steps"] < FEW_STEPS:
            short.append(f"{r.get('recipe')} ({t['optimizer_steps']} steps)")
    if short:
        lines += ["", f"**Warning:** {', '.join(short)} trained for fewer than {FEW_STEPS} optimizer steps: "
                  "a smoke test, whose accuracy means nothing."]
    return lines
