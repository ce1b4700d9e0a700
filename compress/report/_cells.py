"""The cells of the comparison and latency tables, shared by the terminal tables and report.md."""

from __future__ import annotations

from typing import Any, Sequence

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


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _columns(row: dict[str, Any], latency: str | None = None, trained_start: bool = False,
             epoch_time: bool = False) -> list[tuple[str, str]]:
    """The cells of one table row; ``latency`` names the backend of the measured-speed columns (none if None);
    ``trained_start`` adds the accuracy of recipes that start from trained weights, before compression and
    right after it (no training); ``epoch_time`` the median wall time of an epoch."""
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
        *([("s/epoch", _seconds(row.get("epoch_time_s")))] if epoch_time else []),
        ("images/s", _num(row.get("images_per_s"))),
    ] + (_latency_columns(row, latency) if latency else [])


def _trained_start(rows: Sequence[dict[str, Any]]) -> bool:
    return any("accuracy_before" in r for r in rows)


def _epoch_time(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether any row has the median wall time of an epoch (rows of older versions do not)."""
    return any(r.get("epoch_time_s") is not None for r in rows)


def _diff_note(rows: Sequence[dict[str, Any]], name: str = "diff") -> str:
    """What ``diff`` is, and why rows have none."""
    why = sorted({str(r["no_difference_because"]) for r in rows if r.get("no_difference_because")})
    note = f"{name}: measured - claimed, in percentage points, only for a run of the paper's own full schedule on the whole CIFAR-10"
    if any(r.get("epochs_run") == 0 and r.get("difference") is not None for r in rows):
        note += ", or for published trained weights evaluated as they are (no training) on the whole CIFAR-10 test set"
    if why:
        note += f" (none here: {'; '.join(why)})" if all(r.get("difference") is None for r in rows) else f" (some rows have none: {'; '.join(why)})"
    return note + "."


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
