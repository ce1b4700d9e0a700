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
    "load_results", "table", "dry_run_table", "markdown", "plot_accuracy", "plot_curves", "curves_figure", "write_report",
]

PLOTS = {"params": "accuracy_vs_params.png", "flops": "accuracy_vs_flops.png", "curves": "training_curves.png"}


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the one in the run folder ``path``); check it has ``rows``."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}: run `compress-bench --out {path.parent}` first")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: expected an object with a 'rows' list")
    return data


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


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _columns(row: dict[str, Any]) -> list[tuple[str, str]]:
    epochs = row.get("epochs_run")
    if epochs is not None and row.get("selected_epoch") not in (None, epochs):
        epochs = f"{epochs} (best {row['selected_epoch']})"
    return [
        ("recipe", str(row.get("recipe", "?"))),
        ("params", _num(row.get("params"))),
        ("FLOPs", _m(row.get("flops"))),
        ("measured acc (ours)", _pct(row.get("measured_accuracy"))),
        ("claimed acc (paper)", _pct(row.get("claimed_accuracy"))),
        ("how the paper chose it", row.get("claim_basis") or "-"),
        ("diff", _diff(row.get("difference"))),
        ("epochs", "-" if epochs is None else str(epochs)),
        ("train time", _time(row.get("train_time_s")) + (f" ({row['device']})" if row.get("device") else "")),
        ("images/s", _num(row.get("images_per_s"))),
    ]


def table(rows: Sequence[dict[str, Any]], title: str = "compress-bench results") -> Table:
    """The comparison table (measured next to claimed) as a rich Table."""
    t = Table(title=title, title_justify="left")
    if not rows:
        t.add_column("no rows")
        return t
    for header, _ in _columns(rows[0]):
        wrap = header == "how the paper chose it"
        t.add_column(header, justify="left" if header in ("recipe", "how the paper chose it") else "right",
                     max_width=40 if wrap else None, no_wrap=not wrap,
                     style="bold" if header.startswith("measured") else ("dim" if header.startswith(("claimed", "how")) else None))
    for row in rows:
        t.add_row(*(escape(v) for _, v in _columns(row)))
    return t


def dry_run_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The dry-run table: built params/FLOPs, the paper's claimed params and accuracy, the 5M budget."""
    t = Table(title="compress-bench --dry-run (built models; claims are the papers')", title_justify="left")
    for col in ("recipe", "params", "FLOPs", "claimed params", "match", "claimed acc", "how the paper chose it", "< 5M"):
        wrap = col == "how the paper chose it"
        t.add_column(col, justify="left" if col in ("recipe", "how the paper chose it") else "right",
                     max_width=44 if wrap else None, no_wrap=not wrap)
    for r in rows:
        t.add_row(
            escape(r["recipe"]), f"{r['params']:,}", f"{r['flops'] / 1e6:,.1f} M", f"{r['claimed_params']:,}",
            "yes" if r["params_match"] else "[red]NO[/red]", _pct(r.get("claimed_accuracy")),
            escape(r.get("claim_basis") or "-"), "yes" if r["under_budget"] else "no",
        )
    return t


def markdown(results: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """``report.md``: provenance note, the comparison table, and the plots (relative links)."""
    rows = results["rows"]
    devices = sorted({str(r.get("device_name") or r["device"]) for r in rows if r.get("device")})
    commits = sorted({_short_commit(str(r["git_commit"])) for r in rows if r.get("git_commit")})
    dates = sorted(str(r["date"])[:10] for r in rows if r.get("date"))
    torches = sorted({str(r["torch"]) for r in rows if r.get("torch")})
    measured = [r for r in rows if r.get("measured_accuracy") is not None]
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
        f"produced by `compress-bench` in this run ({len(measured)} of {len(rows)} recipes trained; budget "
        f"`{results.get('budget')}`"
        + (f", epochs overridden to {results['epochs']}" if results.get("epochs") else "")
        + (f", at most {results['max_steps_per_epoch']} steps per epoch" if results.get("max_steps_per_epoch") else "")
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
    cols = _columns(rows[0]) if rows else []
    lines.append("| " + " | ".join(h for h, _ in cols) + " |")
    lines.append("|" + "|".join("---" if h in ("recipe", "how the paper chose it") else "---:" for h, _ in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(v.replace("|", "\\|") for _, v in _columns(r)) + " |")
    lines.append("")
    lines.append(f"Budget line: {BUDGET_PARAMS / 1e6:.0f} M parameters. `diff` = measured - claimed, in percentage points.")
    for key, caption in (("params", "Accuracy vs parameters"), ("flops", "Accuracy vs FLOPs"), ("curves", "Test accuracy per epoch")):
        if plots and key in plots:
            lines += ["", f"## {caption}", "", f"![{caption}]({plots[key]})"]
    lines.append("")
    return "\n".join(lines)


# plots --------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(
    rows: Sequence[dict[str, Any]], x: str, path: str | os.PathLike, *, title: str = "", dataset: str = "CIFAR-10"
) -> Path:
    """Accuracy vs ``x`` (``params`` or ``flops``): filled = measured on ``dataset``, hollow = the paper's
    claim (on CIFAR-10).

    On the params plot the 5M budget is a vertical line. Each recipe has its own colour and label.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    cmap = plt.get_cmap("tab10")
    labels, points = [], []
    for i, r in enumerate(rows):
        if r.get(x) is None:
            continue
        color = cmap(i % 10)
        xv = r[x] / 1e6
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
    ax.legend(loc="best", fontsize=9)
    ax.set_xlabel("parameters (M)" if x == "params" else "FLOPs per 32x32 image (M multiply-adds)")
    ax.set_ylabel(f"{dataset} test accuracy (%)" if dataset == "CIFAR-10"
                  else f"test accuracy (%): measured on {dataset}, claims on CIFAR-10")
    ax.set_title(title or f"Accuracy vs {'parameters' if x == 'params' else 'FLOPs'}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = _savefig(fig, path)
    plt.close(fig)
    return path


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


def write_report(run_dir: str | os.PathLike, *, console: Any = None) -> Path:
    """Render ``run_dir/results.json`` into ``report.md`` and the PNG plots; print the table. Returns report.md."""
    run_dir = Path(run_dir)
    if run_dir.is_file():  # a results.json given directly
        run_dir = run_dir.parent
    results = load_results(run_dir)
    rows = results["rows"]
    budget = results.get("budget") or "?"
    dataset = (results.get("data") or {}).get("name") or "CIFAR-10"
    where = f"budget: {budget}" + ("" if dataset == "CIFAR-10" else f", data: {dataset}")
    plots: dict[str, str] = {}
    plot_accuracy(rows, "params", run_dir / PLOTS["params"], title=f"Accuracy vs parameters ({where})", dataset=dataset)
    plots["params"] = PLOTS["params"]
    plot_accuracy(rows, "flops", run_dir / PLOTS["flops"], title=f"Accuracy vs FLOPs ({where})", dataset=dataset)
    plots["flops"] = PLOTS["flops"]
    if plot_curves(rows, run_dir / PLOTS["curves"], title=f"Test accuracy per epoch (measured, {where})"):
        plots["curves"] = PLOTS["curves"]
    report = atomic_write(run_dir / "report.md", markdown(results, plots))
    if console is None:
        from rich.console import Console

        console = Console()
    console.print(table(rows, title=f"compress-bench {results.get('run', '')} ({where}): measured vs claimed"))
    console.print(f"report: {report}")
    return report
