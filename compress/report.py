"""The comparison report of a run folder: a rich table, report.md, results.json and PNG plots.

Everything is rendered from ``results.json`` alone (see :mod:`compress.bench` for its rows), so a report
can be rebuilt, or written from a hand-made file. Numbers are kept apart by origin: ``measured_*``,
time and throughput come from our training; ``claimed_*`` are the reports' own statements.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from rich.markup import escape
from rich.table import Table

from .files import atomic_open, atomic_write
from .recipes import BUDGET_PARAMS

__all__ = [
    "load_results", "table", "dry_run_table", "markdown", "plot_accuracy", "accuracy_figure", "plot_curves", "curves_figure",
    "run_label", "write_report", "latency_backend", "latency_markdown", "latency_table",
]

PLOTS = {"params": "accuracy_vs_params.png", "flops": "accuracy_vs_flops.png", "curves": "training_curves.png"}
LATENCY_PLOT = "accuracy_vs_latency.png"  # written only when some row has a measured latency


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the one in the run folder ``path``); check it has ``rows``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run folder {path}: it does not exist (a run folder is what `compress-bench --out DIR` writes)")
    if path.is_dir():
        path = path / "results.json"
    elif path.name != "results.json":
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


#: Numbers a row holds, and the range each must be in (accuracies in percent).
_DOMAINS = {
    "measured_accuracy": (0.0, 100.0), "claimed_accuracy": (0.0, 100.0), "accuracy_before": (0.0, 100.0),
    "accuracy_compressed": (0.0, 100.0), "params": (0, float("inf")), "flops": (0, float("inf")),
    "train_time_s": (0.0, float("inf")), "images_per_s": (0.0, float("inf")), "epochs_run": (0, float("inf")),
}


def row_problem(row: dict[str, Any]) -> str | None:
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


# formatting ---------------------------------------------------------------------------------------
def _short_commit(commit: str) -> str:
    """The first 10 hex digits of a commit, keeping a ``-dirty`` mark."""
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:10] + dirty


def _m(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}%"


def _diff(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f} pp"


def _time(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


#: How a row's test-time augmentation is shown (rows written before it was recorded show ``-``).
_TTA = {"none": "none", "mirror": "mirror", "mirror_translate": "mirror+translate"}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _columns(row: dict[str, Any], latency: str | None = None, trained_start: bool = False) -> list[tuple[str, str]]:
    """The cells of one table row; ``latency`` names the backend of the measured-speed columns (none if None);
    ``trained_start`` adds the accuracy of recipes that start from trained weights, before compression and
    right after it (no training)."""
    epochs = row.get("epochs_run")
    if epochs is not None and row.get("selected_epoch") not in (None, epochs):
        epochs = f"{epochs} (best {row['selected_epoch']})"
    start = [
        ("acc before compression", _pct(row.get("accuracy_before"))),
        ("acc after compression", _pct(row.get("accuracy_compressed"))),
    ] if trained_start else []
    return [
        ("recipe", str(row.get("recipe", "?"))),
        ("params", _num(row.get("params"))),
        ("FLOPs", _m(row.get("flops"))),
        *start,
        ("measured acc (ours)", _pct(row.get("measured_accuracy"))),
        ("TTA", _TTA.get(row.get("tta"), "-") if row.get("measured_accuracy") is not None else "-"),
        ("claimed acc (paper)", _pct(row.get("claimed_accuracy"))),
        ("how the paper chose it", row.get("claim_basis") or "-"),
        ("diff", _diff(row.get("difference"))),
        ("epochs", "-" if epochs is None else str(epochs)),
        ("train time", _time(row.get("train_time_s")) + (f" ({row['device']})" if row.get("device") else "")),
        ("images/s", _num(row.get("images_per_s"))),
    ] + (_latency_columns(row, latency) if latency else [])


# terminal tables ------------------------------------------------------------------------------------
_PROSE = "how the paper chose it"
_MIN_PROSE = 20  # narrower than this, the prose column is left out instead of squashed
MATCH_NOTE = "match: the built model has exactly the parameter count the paper states."
BUDGET_NOTE = f"< 5M: at most {BUDGET_PARAMS:,} trainable parameters, the budget the reports worked under."


def _fit(
    title: str, columns: Sequence[tuple[str, str, dict[str, Any]]], rows: Sequence[Sequence[str]],
    width: int | None, notes: Sequence[str] = (), optional: Sequence[str] = (),
) -> Table:
    """A table whose numbers are never cut at ``width`` columns (``None``: no limit).

    ``columns`` are (key, header, rich column options); ``rows`` hold one escaped string per column.
    The prose column wraps; when it would get fewer than ``_MIN_PROSE`` characters it is left out, and
    then, while the table is still too wide, the ``optional`` columns in order; a caption says so.
    """
    from rich import box
    from rich.console import Console

    def build(keep: Sequence[str], dropped: Sequence[str]) -> Table:
        caption = list(notes)
        if dropped:
            caption.append(f"Left out at this width ({width} columns): {', '.join(dropped)}; "
                           "see report.md, --json or a wider terminal.")
        t = Table(title=title, title_justify="left", caption="\n".join(caption) or None, caption_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
        for key, header, opts in columns:
            if key in keep:
                t.add_column(header, **opts)
        for cells in rows:
            t.add_row(*(c for (key, _, _), c in zip(columns, cells) if key in keep))
        return t

    keys = [k for k, _, _ in columns]
    if width is None:
        return build(keys, [])
    console = Console(width=width)

    def natural(keep: Sequence[str]) -> int:  # the width the table takes without wrapping anything
        return build(keep, []).__rich_measure__(console, console.options.update_width(10_000)).maximum

    if _PROSE not in keys or width - natural([k for k in keys if k != _PROSE]) >= _MIN_PROSE + 2:
        return build(keys, [])
    keep, dropped = [k for k in keys if k != _PROSE], [_PROSE]
    for key in optional:
        if natural(keep) <= width:
            break
        keep.remove(key)
        dropped.append(key)
    return build(keep, dropped)


_NUM: dict[str, Any] = {"justify": "right", "no_wrap": True}  # a number column: never wrapped or cut


def table(rows: Sequence[dict[str, Any]], title: str = "compress-bench results", width: int | None = None) -> Table:
    """The comparison table (measured next to claimed) as a rich Table for a terminal of ``width`` columns.

    Numbers are never cut: the prose column ("how the paper chose it") wraps, or is left out when the
    terminal is too narrow for it (a caption says so). The device goes into the title when all rows share it.
    """
    if not rows:
        t = Table(title=title, title_justify="left")
        t.add_column("no rows")
        return t
    devices = {r.get("device") for r in rows if r.get("measured_accuracy") is not None}
    one_device = devices.pop() if len(devices) == 1 else None
    if one_device:
        title = f"{title}, on {one_device}"
    columns = [
        ("recipe", "recipe", {"no_wrap": True}),
        ("params", "params", _NUM),
        ("FLOPs", "FLOPs", _NUM),
    ]
    start = _trained_start(rows)
    if start:  # recipes that start from trained weights: accuracy before compression and right after it
        columns += [
            ("acc before compression", "acc before\ncompression", _NUM),
            ("acc after compression", "acc after\ncompression", _NUM),
        ]
    columns += [
        ("measured acc (ours)", "measured\n(ours)", {**_NUM, "style": "bold"}),
        ("claimed acc (paper)", "claimed\n(paper)", {**_NUM, "style": "dim"}),
        (_PROSE, _PROSE, {"max_width": 48, "style": "dim"}),
        ("diff", "diff\n(pp)", _NUM),
        ("epochs", "epochs", _NUM),
        ("train time", "train\ntime", _NUM),
        ("images/s", "img/s", _NUM),
    ]
    backend = latency_backend(rows)
    if backend:  # measured inference speed (compress-bench latency), only where measured
        columns += [
            (f"latency b1 ({backend})", f"latency\nb1 ({backend})", _NUM),
            (f"inference img/s b256 ({backend})", "img/s\nb256", _NUM),
            ("speed-up b1 / b256 vs ResNet-18", "speed-up vs\nResNet-18", _NUM),
            ("FLOP reduction", "FLOP\nreduction", _NUM),
        ]
    cells = []
    for row in rows:
        values = dict(_columns(row, backend, start))
        values["diff"] = values["diff"].removesuffix(" pp")
        if one_device:
            values["train time"] = _time(row.get("train_time_s"))
        cells.append([escape(values[key]) for key, _, _ in columns])
    # left out first when a terminal is too narrow even without the prose column: speeds before accuracy
    optional = ("images/s", "train time", *[k for k, _, _ in reversed(columns[10 + 2 * start:])], "epochs", "FLOPs")
    return _fit(title, columns, cells, width, [_diff_note(rows)], optional=optional)


def _trained_start(rows: Sequence[dict[str, Any]]) -> bool:
    return any("accuracy_before" in r for r in rows)


def _diff_note(rows: Sequence[dict[str, Any]], name: str = "diff") -> str:
    """What ``diff`` is, and why rows have none."""
    why = sorted({str(r["no_difference_because"]) for r in rows if r.get("no_difference_because")})
    note = f"{name}: measured - claimed, in percentage points, only for a run of the paper's own full schedule on the whole CIFAR-10"
    if any(r.get("epochs_run") == 0 and r.get("difference") is not None for r in rows):
        note += ", or for published trained weights evaluated as they are (no training) on the whole CIFAR-10 test set"
    if why:
        note += f" (none here: {'; '.join(why)})" if all(r.get("difference") is None for r in rows) else f" (some rows have none: {'; '.join(why)})"
    return note + "."


def dry_run_table(rows: Sequence[dict[str, Any]], width: int | None = None) -> Table:
    """The dry-run table: built params/FLOPs, the paper's claimed params and accuracy, the 5M budget.

    A caption explains ``match`` and ``< 5M``. At ``width`` columns numbers are never cut: the prose
    column wraps, or is left out when there is no room for it.
    """
    columns = [
        ("recipe", "recipe", {"no_wrap": True}),
        ("params", "params", _NUM),
        ("FLOPs", "FLOPs", _NUM),
        ("claimed params", "claimed\nparams", _NUM),
        ("match", "match", _NUM),
        ("claimed acc", "claimed\nacc", _NUM),
        (_PROSE, _PROSE, {"max_width": 48}),
        ("< 5M", "< 5M", _NUM),
    ]
    cells = [
        [escape(r["recipe"]), f"{r['params']:,}", f"{r['flops'] / 1e6:,.1f} M", f"{r['claimed_params']:,}",
         "yes" if r["params_match"] else "[red]NO[/red]", _pct(r.get("claimed_accuracy")),
         escape(r.get("claim_basis") or "-"), "yes" if r["under_budget"] else "no"]
        for r in rows
    ]
    return _fit("compress-bench --dry-run (built models; claims are the papers')", columns, cells, width,
                [MATCH_NOTE, BUDGET_NOTE])


# measured speed (rows with a "latency" entry, written by compress.deploy.measure) ------------------
_BACKEND_ORDER = ("eager", "onnxruntime", "compile")


def latency_backend(rows: Sequence[dict[str, Any]]) -> str | None:
    """The backend whose speed the main table and the latency plot show: the first of eager, onnxruntime,
    compile that some row has measured (``None`` if no row has a latency)."""
    measured = {b for r in rows for b in (r.get("latency") or {})}
    return next((b for b in _BACKEND_ORDER if b in measured), None)


def _timing(entry: dict[str, Any] | None, batch: int) -> dict[str, Any] | None:
    return next((t for t in (entry or {}).get("timings", []) if t["batch_size"] == batch), None)


def _speedup(entry: dict[str, Any] | None, batch: int) -> float | None:
    """ResNet-18's median time / this model's, both measured in the same session (``None`` if not measured)."""
    t = _timing(entry, batch)
    ref = ((entry or {}).get("reference") or {}).get("median_ms", {}).get(str(batch))
    return None if t is None or ref is None else ref / t["median_ms"]


def _flop_reduction(row: dict[str, Any], entry: dict[str, Any] | None) -> float | None:
    ref = ((entry or {}).get("reference") or {}).get("flops")
    return None if ref is None or not row.get("flops") else ref / row["flops"]


def _rate(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")


def _x_(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _ms(t: dict[str, Any] | None, spread: bool = False) -> str:
    if t is None:
        return "-"
    digits = 2 if t["median_ms"] < 10 else 1
    return f"{t['median_ms']:.{digits}f} ms" + (f" ± {t['iqr_ms']:.{digits}f}" if spread else "")


def _latency_columns(row: dict[str, Any], backend: str) -> list[tuple[str, str]]:
    entry = (row.get("latency") or {}).get(backend)
    b256 = _timing(entry, 256)
    return [
        (f"latency b1 ({backend})", _ms(_timing(entry, 1))),
        (f"inference img/s b256 ({backend})", _rate(None if b256 is None else b256["images_per_s"])),
        ("speed-up b1 / b256 vs ResNet-18", "-" if entry is None else f"{_x_(_speedup(entry, 1))} / {_x_(_speedup(entry, 256))}"),
        ("FLOP reduction", _x_(_flop_reduction(row, entry)) if entry is not None else "-"),
    ]


def _where_measured(rows: Sequence[dict[str, Any]], backend: str | None) -> str:
    names = sorted({str(e.get("device_name")) for r in rows for b, e in (r.get("latency") or {}).items()
                    if b == backend and e.get("device_name")})
    return f", {' / '.join(names)}" if names else ""


def _latency_cells(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], str]:
    """Header, cells and provenance note of the measured-speed table (one line per row and backend)."""
    entries = [(r, b, e) for r in rows for b in _BACKEND_ORDER for e in [(r.get("latency") or {}).get(b)] if e]
    if not entries:
        return [], [], "No latency measured (`compress-bench latency`)."
    big = max(t["batch_size"] for _, _, e in entries for t in e["timings"])
    head = ["recipe", "backend", "params", "FLOPs", "FLOP reduction", "latency b1 (median ± IQR)", "speed-up b1",
            f"img/s b{big}", f"speed-up b{big}", f"speed-up b{big} ÷ FLOP reduction"]
    cells = []
    for r, b, e in entries:
        red, fast = _flop_reduction(r, e), _speedup(e, big)
        tb = _timing(e, big)
        cells.append([str(r.get("recipe", "?")), b, _num(r.get("params")), _m(r.get("flops")), _x_(red),
                      _ms(_timing(e, 1), spread=True), _x_(_speedup(e, 1)),
                      _rate(None if tb is None else tb["images_per_s"]), _x_(fast),
                      "-" if red is None or fast is None else f"{fast / red:.2f}"])

    def each(key: str) -> str:
        return ", ".join(sorted({str(e[key]) for _, _, e in entries if e.get(key)}))

    dates = sorted({str(e["date"])[:10] for _, _, e in entries})
    repeats = ", ".join(sorted({str(t["repeats"]) for _, _, e in entries for t in e["timings"]}))
    commits = sorted({_short_commit(str(e["git_commit"])) for _, _, e in entries if e.get("git_commit")})
    note = (
        f"Measured on {each('device_name')}; torch {each('torch')}"
        + (f", onnxruntime {each('onnxruntime')}" if each("onnxruntime") else "")
        + f"; {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
        + f"; {repeats} timed repeats per batch size"
        + (f"; commit {', '.join(commits)}" if commits else "")
        + ". Latency is the median time of one forward pass (and its interquartile range) after warm-up; img/s "
        "is the batch size over the median time. Speed-ups are against a ResNet-18 measured with the same "
        "backend in the same session; FLOP reduction is ResNet-18's FLOPs over the model's. A last column "
        "below 1 means the model gains less time than its FLOP count promises."
    )
    return head, cells, note


def latency_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: every measured backend of every row (median ± IQR at batch 1, images/s at the largest batch,
    speed-ups against ResNet-18 next to the FLOP reduction), then where and how it was measured."""
    head, cells, note = _latency_cells(rows)
    if not head:
        return note
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in ("recipe", "backend") else "---:" for h in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines + ["", note])


def latency_table(rows: Sequence[dict[str, Any]], title: str = "measured inference speed") -> Table:
    """The table of :func:`latency_markdown` as a rich Table (its note as the caption)."""
    head, cells, note = _latency_cells(rows)
    t = Table(title=title, title_justify="left", caption=note, caption_justify="left")
    for h in head or ["no latency measured"]:
        t.add_column(h, justify="left" if h in ("recipe", "backend") else "right", no_wrap=True)
    for row in cells:
        t.add_row(*(escape(c) for c in row))
    return t


def markdown(results: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """``report.md``: provenance note, the comparison table, and the plots (relative links)."""
    rows = results["rows"]
    devices = sorted({str(r.get("device_name") or r["device"]) for r in rows if r.get("device")})
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
        "**Where the numbers come from.** *Measured* columns (accuracy, epochs, train time, images/s) were "
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
    cols = _columns(rows[0], backend, start) if rows else []
    lines.append("| " + " | ".join(h for h, _ in cols) + " |")
    lines.append("|" + "|".join("---" if h in ("recipe", "how the paper chose it") else "---:" for h, _ in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(v.replace("|", "\\|") for _, v in _columns(r, backend, start)) + " |")
    lines.append("")
    lines.append(f"Budget line: {BUDGET_PARAMS / 1e6:.0f} M parameters. {_diff_note(rows, '`diff`')}")
    if start:
        lines.append("Recipes that start from trained weights: *acc before compression* is the test accuracy of the "
                     "imported model, *acc after compression* that of the transformed one before any training, and "
                     "*measured* the one after fine-tuning (the same as after compression where the recipe is only "
                     "evaluated, 0 epochs).")
    if backend:
        lines += ["", "## Measured inference speed", "", latency_markdown(rows)]
    for key, caption in (("params", "Accuracy vs parameters"), ("flops", "Accuracy vs FLOPs"),
                         ("latency", "Accuracy vs measured latency"), ("curves", "Test accuracy per epoch")):
        if plots and key in plots:
            lines += ["", f"## {caption}", "", f"![{caption}]({plots[key]})"]
    lines.append("")
    return "\n".join(lines)


# plots --------------------------------------------------------------------------------------------
def _plot_x(row: dict[str, Any], x: str, backend: str | None) -> float | None:
    """The x value of ``row`` on a plot: M params, M FLOPs, or the measured batch-1 latency in ms."""
    if x == "latency":
        t = _timing((row.get("latency") or {}).get(backend or ""), 1)
        return None if t is None else t["median_ms"]
    return None if row.get(x) is None else row[x] / 1e6


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(
    rows: Sequence[dict[str, Any]], x: str, path: str | os.PathLike, *, title: str = "", dataset: str = "CIFAR-10"
) -> Path:
    """Accuracy vs ``x`` (``params``, ``flops`` or ``latency``, the measured batch-1 latency of
    :func:`latency_backend`): filled = measured on ``dataset``, hollow = the paper's claim (on CIFAR-10).

    On the params plot the 5M budget is a vertical line. Each recipe has its own colour and label; the
    legend sits outside the axes, so it covers no marker.
    """
    fig = accuracy_figure(rows, x, title=title, dataset=dataset)
    path = _savefig(fig, path)
    _plt().close(fig)
    return path


def accuracy_figure(rows: Sequence[dict[str, Any]], x: str, *, title: str = "", dataset: str = "CIFAR-10") -> Any:
    """The matplotlib figure that :func:`plot_accuracy` saves."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
    cmap = plt.get_cmap("tab10")
    labels, points = [], []
    backend = latency_backend(rows) if x == "latency" else None
    for i, r in enumerate(rows):
        xv = _plot_x(r, x, backend)
        if xv is None:
            continue
        color = cmap(i % 10)
        meas, claim = r.get("measured_accuracy"), r.get("claimed_accuracy")
        if claim is not None:
            ax.scatter([xv], [claim], s=90, facecolors="none", edgecolors=[color], linewidths=1.8, zorder=3)
        if meas is not None:
            ax.scatter([xv], [meas], s=70, color=[color], zorder=4)
        if meas is not None and claim is not None:
            ax.plot([xv, xv], [meas, claim], color=color, lw=0.9, ls=":", zorder=2)
        ys = [v for v in (meas, claim) if v is not None]
        points += [(xv, y) for y in ys]
        if ys:
            labels.append((r["recipe"], xv, max(ys), color))
    ax.margins(x=0.12, y=0.12)
    _place_labels(ax, labels, points)
    if x == "params":
        ax.axvline(BUDGET_PARAMS / 1e6, color="crimson", ls="--", lw=1.2)
        ax.text(BUDGET_PARAMS / 1e6, 0.02, " 5M budget", color="crimson", fontsize=9, transform=ax.get_xaxis_transform())
    ax.scatter([], [], s=70, color="gray", label="measured (ours)")
    ax.scatter([], [], s=90, facecolors="none", edgecolors="gray", linewidths=1.8, label="claimed (paper)")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.set_xlabel({"params": "parameters (M)", "flops": "FLOPs per 32x32 image (M multiply-adds)"}.get(
        x, f"measured latency, batch 1 (ms, {backend}{_where_measured(rows, backend)})"))
    ax.set_ylabel(f"{dataset} test accuracy (%)" if dataset == "CIFAR-10"
                  else f"test accuracy (%): measured on {dataset}, claims on CIFAR-10")
    ax.set_title(title or f"Accuracy vs {({'params': 'parameters', 'flops': 'FLOPs'}).get(x, 'measured latency')}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _savefig(fig: Any, path: str | os.PathLike) -> Path:
    """Save ``fig`` to ``path`` atomically (a full disk keeps the old plot); the format is the suffix's."""
    path = Path(path)
    with atomic_open(path) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png")
    return path


def _place_labels(ax: Any, labels: list[tuple[str, float, float, Any]], points: list[tuple[float, float]]) -> None:
    """Annotate points with their names, trying several sides so a label covers no other label or marker."""
    ax.autoscale_view()
    px_per_pt = ax.figure.dpi / 72
    offsets = [(6, 3), (6, -12), (-6, 3), (-6, -12), (8, 14), (8, -22), (-8, 14), (-8, -22), (12, -5), (-12, -5)]
    boxes = []  # (x0, y0, x1, y1) in display pixels: markers first, then placed labels
    for xv, yv in points:
        qx, qy = ax.transData.transform((xv, yv))
        boxes.append((qx - 7, qy - 7, qx + 7, qy + 7))

    def free(b: tuple[float, float, float, float]) -> bool:
        return all(b[2] < o[0] or b[0] > o[2] or b[3] < o[1] or b[1] > o[3] for o in boxes)

    for text, xv, yv, color in sorted(labels, key=lambda t: (t[1], -t[2])):
        px, py = ax.transData.transform((xv, yv))
        width, height = 5.6 * len(text) * px_per_pt, 9 * px_per_pt
        for dx, dy in offsets:
            x0 = px + dx * px_per_pt - (width if dx < 0 else 0)
            box = (x0, py + dy * px_per_pt, x0 + width, py + dy * px_per_pt + height)
            if free(box):
                break
        else:
            dx, dy = offsets[0]
            x0 = px + dx * px_per_pt
            box = (x0, py + dy * px_per_pt, x0 + width, py + dy * px_per_pt + height)
        boxes.append(box)
        ax.annotate(text, (xv, yv), xytext=(dx, dy), textcoords="offset points", fontsize=9, color=color,
                    ha="right" if dx < 0 else "left", va="bottom")


_ZOOM_FROM = 6  # epochs; shorter runs get one panel, a zoom of 1-3 epochs shows nothing


def plot_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path | None:
    """Test accuracy per epoch of every recipe that has a ``curve``, on one figure (``None`` if none).

    Left: all epochs. Right (runs of at least ``_ZOOM_FROM`` epochs): the second half of training,
    zoomed in, where the recipes differ. Epoch axes have whole-number ticks.
    """
    fig = curves_figure(rows, title=title)
    if fig is None:
        return None
    path = _savefig(fig, path)
    _plt().close(fig)
    return path


def curves_figure(rows: Sequence[dict[str, Any]], *, title: str = "") -> Any:
    """The matplotlib figure that :func:`plot_curves` saves (``None`` if no row has a ``curve``)."""
    curves = [(i, r) for i, r in enumerate(rows) if r.get("curve")]
    if not curves:
        return None
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    last = max(e for _, r in curves for e, _ in r["curve"])
    zoomed = last >= _ZOOM_FROM
    fig, axes = plt.subplots(1, 2 if zoomed else 1, figsize=(14 if zoomed else 8, 5.5), dpi=120, squeeze=False)
    full, zoom = axes[0][0], axes[0][-1] if zoomed else None
    cmap = plt.get_cmap("tab10")
    late: list[float] = []
    for i, r in curves:
        epochs = [e for e, _ in r["curve"]]
        accs = [a for _, a in r["curve"]]
        style = dict(marker="o" if len(epochs) < 30 else None, ms=3, color=cmap(i % 10), label=r["recipe"])
        full.plot(epochs, accs, **style)
        tail = [(e, a) for e, a in zip(epochs, accs) if e >= last / 2]
        if zoom is not None and tail:
            zoom.plot([e for e, _ in tail], [a for _, a in tail], **style)
            late += [a for _, a in tail]
    panels = [(full, (0.5, last + 0.5), "all epochs")]
    if zoom is not None:
        first = max(1, int(last / 2))
        panels.append((zoom, (first - 0.5, last + 0.5), f"epochs {first}-{last}, zoomed"))
        if late:
            lo, hi = min(late), max(late)
            pad = max(0.5, 0.08 * (hi - lo))
            zoom.set_ylim(lo - pad, hi + pad)
    for ax, xlim, sub in panels:
        ax.set_xlim(*xlim)  # a short run would otherwise get fractional epoch ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%), measured")
        ax.set_title(sub, fontsize=10)
        ax.grid(alpha=0.3)
    panels[-1][0].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(title or "Training curves (measured)")
    fig.tight_layout()
    return fig


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


def write_report(run_dir: str | os.PathLike, *, console: Any = None) -> Path:
    """Render ``run_dir/results.json`` into ``report.md`` and the PNG plots; print the table. Returns report.md.

    Plot titles and the table title say what the run was (:func:`run_label`); the table fits the
    console's width.
    """
    results = load_results(run_dir)
    run_dir = Path(run_dir)
    if run_dir.is_file():  # a results.json given directly
        run_dir = run_dir.parent
    rows = results["rows"]
    dataset = (results.get("data") or {}).get("name") or "CIFAR-10"
    where = run_label(results)
    plots: dict[str, str] = {}
    plot_accuracy(rows, "params", run_dir / PLOTS["params"], title=f"Accuracy vs parameters ({where})", dataset=dataset)
    plots["params"] = PLOTS["params"]
    plot_accuracy(rows, "flops", run_dir / PLOTS["flops"], title=f"Accuracy vs FLOPs ({where})", dataset=dataset)
    plots["flops"] = PLOTS["flops"]
    if plot_curves(rows, run_dir / PLOTS["curves"], title=f"Test accuracy per epoch (measured, {where})"):
        plots["curves"] = PLOTS["curves"]
    if latency_backend(rows):
        plot_accuracy(rows, "latency", run_dir / LATENCY_PLOT, title=f"Accuracy vs measured latency ({where})",
                      dataset=dataset)
        plots["latency"] = LATENCY_PLOT
    report = atomic_write(run_dir / "report.md", markdown(results, plots))
    if console is None:
        from rich.console import Console

        console = Console()
    console.print(table(rows, title=f"compress-bench {results.get('run', '')} ({where}): measured vs claimed",
                        width=console.width))
    console.print(f"report: {report}", highlight=False, markup=False)
    return report
