"""The comparison report of a run folder: a rich table, report.md, results.json and PNG plots.

Everything is rendered from ``results.json`` alone (see :class:`compress.runfolder.Row` for its rows), so a
report can be rebuilt, or written from a hand-made file. Numbers are kept apart by origin: ``measured_*``,
time and throughput come from our training; ``claimed_*`` are the reports' own statements.

The package: :mod:`.results` reads ``results.json``, :mod:`.tables` renders the terminal tables,
:mod:`.markdown` writes ``report.md`` and :mod:`.plots` the PNGs (the cells the tables and report.md
share are in :mod:`._cells`); every public name is importable from ``compress.report``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from ..files import atomic_write
from ..runfolder import LATENCY_PLOT, PLOTS, RunFolder, row_problem  # noqa: F401 - kept importable from here
from ._cells import _short_commit, latency_backend  # noqa: F401 - _short_commit: kept importable from here
from .markdown import latency_markdown, markdown
from .plots import _plt, accuracy_figure, curves_figure, plot_accuracy, plot_curves  # noqa: F401 - _plt, likewise
from .results import load_results, run_label
from .tables import BUDGET_NOTE, MATCH_NOTE, dry_run_table, latency_table, table  # noqa: F401 - the notes, likewise

__all__ = [
    "load_results", "table", "dry_run_table", "markdown", "plot_accuracy", "accuracy_figure", "plot_curves", "curves_figure",
    "run_label", "write_report", "latency_backend", "latency_markdown", "latency_table",
]


def write_report(run_dir: str | os.PathLike, *, console: Any = None) -> Path:
    """Render ``run_dir/results.json`` into ``report.md`` and the PNG plots; print the table. Returns report.md.

    Plot titles and the table title say what the run was (:func:`run_label`); the table fits the
    console's width.
    """
    results = load_results(run_dir)
    run_dir = Path(run_dir)
    if run_dir.is_file():  # a results.json given directly
        run_dir = run_dir.parent
    folder = RunFolder(run_dir)
    rows = results["rows"]
    dataset = (results.get("data") or {}).get("name") or "CIFAR-10"
    where = run_label(results)
    plots: dict[str, str] = {}
    plot_accuracy(rows, "params", folder.plot("params"), title=f"Accuracy vs parameters ({where})", dataset=dataset)
    plots["params"] = folder.plot("params").name
    plot_accuracy(rows, "flops", folder.plot("flops"), title=f"Accuracy vs FLOPs ({where})", dataset=dataset)
    plots["flops"] = folder.plot("flops").name
    if plot_curves(rows, folder.plot("curves"), title=f"Test accuracy per epoch (measured, {where})"):
        plots["curves"] = folder.plot("curves").name
    if latency_backend(rows):
        plot_accuracy(rows, "latency", folder.plot("latency"), title=f"Accuracy vs measured latency ({where})",
                      dataset=dataset)
        plots["latency"] = folder.plot("latency").name
    report = atomic_write(folder.report, markdown(results, plots))
    if console is None:
        console = Console()
    console.print(table(rows, title=f"compress-bench {results.get('run', '')} ({where}): measured vs claimed",
                        width=console.width))
    console.print(f"report: {report}", highlight=False, markup=False)
    return report
