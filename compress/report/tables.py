"""The terminal tables (rich): the comparison, the dry run and the measured speed; numbers are never cut."""

from __future__ import annotations

from typing import Any, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..recipes import BUDGET_PARAMS
from ._cells import _columns, _diff_note, _epoch_time, _latency_cells, _pct, _time, _trained_start, latency_backend

__all__ = ["table", "dry_run_table", "latency_table", "MATCH_NOTE", "BUDGET_NOTE"]


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
    start, epoch_time = _trained_start(rows), _epoch_time(rows)
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
        *([("s/epoch", "s/\nepoch", _NUM)] if epoch_time else []),
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
        values = dict(_columns(row, backend, start, epoch_time))
        values["diff"] = values["diff"].removesuffix(" pp")
        if one_device:
            values["train time"] = _time(row.get("train_time_s"))
        cells.append([escape(values[key]) for key, _, _ in columns])
    # left out first when a terminal is too narrow even without the prose column: speeds before accuracy
    speeds = ("images/s", "train time", *(["s/epoch"] if epoch_time else []))
    optional = (*speeds, *[k for k, _, _ in reversed(columns[10 + epoch_time + 2 * start:])], "epochs", "FLOPs")
    return _fit(title, columns, cells, width, [_diff_note(rows)], optional=optional)


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


def latency_table(rows: Sequence[dict[str, Any]], title: str = "measured inference speed") -> Table:
    """The table of :func:`latency_markdown` as a rich Table (its note as the caption)."""
    head, cells, note = _latency_cells(rows)
    t = Table(title=title, title_justify="left", caption=note, caption_justify="left")
    for h in head or ["no latency measured"]:
        t.add_column(h, justify="left" if h in ("recipe", "backend") else "right", no_wrap=True)
    for row in cells:
        t.add_row(*(escape(c) for c in row))
    return t
