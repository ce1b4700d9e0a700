"""The PNG plots of a run: accuracy against params, FLOPs or measured latency, and the training curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..files import atomic_open
from ..recipes import BUDGET_PARAMS
from ._cells import _timing, _where_measured, latency_backend

__all__ = ["plot_accuracy", "accuracy_figure", "plot_curves", "curves_figure"]


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
