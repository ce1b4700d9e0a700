"""Run folders and the comparison report, on CPU with tiny models and synthetic data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import pytest
import torch

import compress
from compress import bench, report
from compress.cli import main

from recipe_text import tiny_recipe

FAST = "fast: {epochs: 2, batch_size: 16, amp: none, channels_last: false, schedule: {name: cosine}}\n"


def _tiny(name: str, width: str, accuracy: str) -> str:
    return tiny_recipe(name, width=width, epochs=3, accuracy=accuracy, extra=FAST)


RUN_FILES = ["manifest.json", "results.json", "report.md", *report.PLOTS.values()]
RECIPE_FILES = ["recipe.yaml", "history.json", "checkpoint.pt", "model.pt", "row.json"]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "tiny-a.yaml").write_text(_tiny("tiny-a", width="0.125", accuracy="60.0"))
    (d / "tiny-b.yaml").write_text(_tiny("tiny-b", width="0.0625", accuracy="null"))
    return d


def _args(recipes_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--recipes-dir", str(recipes_dir), "--out", str(out), "--data", "synthetic:64:32", "--device", "cpu",
            "--max-steps-per-epoch", "2", "--no-progress", *extra]


def _check_png(path: Path) -> None:
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 400 and img.shape[1] >= 600


def test_two_recipe_run_writes_everything_and_skips_on_rerun(tiny, tmp_path, capsys):
    out = tmp_path / "runs" / "smoke"
    assert main(_args(tiny, out)) == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    for recipe in ("tiny-a", "tiny-b"):
        for name in RECIPE_FILES:
            assert (out / recipe / name).is_file(), f"{recipe}/{name}"
        model = compress.load(out / recipe / "model.pt")
        row = json.loads((out / recipe / "row.json").read_text())
        assert compress.count_params(model) == row["params"]
        assert row["epochs_run"] == 2 and len(row["curve"]) == 2 and row["device"] == "cpu"
        assert 0.0 <= row["measured_accuracy"] <= 100.0
        # provenance of every measurement: commit, device name, torch, date, command
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", row["git_commit"]), row["git_commit"]
        assert row["device_name"].startswith("CPU") and row["torch"] == torch.__version__
        assert row["date"].startswith("20") and "--max-steps-per-epoch" in row["command"]
    results = report.load_results(out)
    assert [r["recipe"] for r in results["rows"]] == ["tiny-a", "tiny-b"] and results["budget"] == "fast"
    a, b = results["rows"]
    # a synthetic (and fast, and step-capped) run is never set against a paper's full-schedule claim
    assert a["difference"] is None and a["no_difference_because"] == "trained on synthetic, not CIFAR-10"
    assert b["difference"] is None and b["no_difference_because"] == "the paper claims no accuracy"
    md = (out / "report.md").read_text()
    assert f"commit {report._short_commit(a['git_commit'])}" in md and f"torch {torch.__version__}" in md
    assert "measured acc (ours)" in md and "claimed acc (paper)" in md and "made up" in md
    from compress.provenance import cpu_info

    amx = cpu_info()["amx"]  # every CPU row says whether its CPU has AMX, and the report says it
    assert a["cpu"]["amx"] == amx and (("with AMX" if amx else "no AMX") in md if amx is not None else "AMX" not in md)
    for png in report.PLOTS.values():
        assert f"]({png})" in md
        _check_png(out / png)
    assert "measured vs claimed" in " ".join(capsys.readouterr().out.split())  # the title, however it wraps

    # the same command again: both recipes are skipped, nothing is retrained
    mtime = (out / "tiny-a" / "model.pt").stat().st_mtime_ns
    assert main(_args(tiny, out)) == 0
    assert capsys.readouterr().out.count("already finished, skipping") == 2
    assert (out / "tiny-a" / "model.pt").stat().st_mtime_ns == mtime

    # `compress-bench report` re-renders from results.json
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()


def test_interrupted_run_resumes(tiny, tmp_path, monkeypatch, capsys):
    import compress.training as training
    import compress.training.trainer as trainer

    out = tmp_path / "run"
    real_save, real_train = trainer._save_checkpoint, training.train
    saves = []

    def save_then_die(path, state):  # the process "dies" right after the first epoch's checkpoint
        real_save(path, state)
        saves.append(state["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_die)
    assert main(_args(tiny, out, "tiny-a")) == 130  # Ctrl-C (or timeout --signal=INT): one line, no traceback
    said = " ".join(capsys.readouterr().out.split())
    ckpt = out / "tiny-a" / "checkpoint.pt"
    assert f"interrupted; kept in {out}: no recipe had finished; tiny-a: checkpoint after epoch 1 of 2 ({ckpt}, written" in said
    assert "Run the same command again to resume." in said
    assert saves == [1] and (out / "tiny-a" / "checkpoint.pt").is_file()
    assert not (out / "tiny-a" / "row.json").exists()

    monkeypatch.setattr(trainer, "_save_checkpoint", real_save)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["resume"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    capsys.readouterr()
    assert main(_args(tiny, out, "tiny-a")) == 0
    assert calls == [True] and "resuming" in capsys.readouterr().out
    history = json.loads((out / "tiny-a" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads((out / "tiny-a" / "row.json").read_text())["epochs_run"] == 2


def test_run_folder_of_another_recipe_set_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tiny, out, "tiny-a", "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(_args(tiny, out, "tiny-a", "tiny-b", "--epochs", "1")) == 2
    msg = capsys.readouterr().out
    assert "written by a different run" in msg and "tiny-a, tiny-b" in msg and "new --out" in msg
    assert not (out / "tiny-b").exists()
    # a different budget in the same folder is refused as well
    assert main(_args(tiny, out, "tiny-a", "--epochs", "1", "--budget", "paper")) == 2
    assert "budget='fast'" in capsys.readouterr().out
    # ... and so is other data: accuracies on two datasets are never mixed in one report
    other = [a if a != "synthetic:64:32" else "synthetic:96:32" for a in _args(tiny, out, "tiny-a", "--epochs", "1")]
    assert main(other) == 2
    msg = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "trained on synthetic (64 train / 32 test images), this command gives synthetic (96 / 32)" in msg
    assert "data: synthetic (64 train / 32 test images" in (out / "report.md").read_text()


def test_edited_recipe_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tiny, out, "tiny-a", "--epochs", "1")) == 0
    text = (tiny / "tiny-a.yaml").read_text().replace("factor: 0.125", "factor: 0.25")
    (tiny / "tiny-a.yaml").write_text(text)
    capsys.readouterr()
    assert main(_args(tiny, out, "tiny-a", "--epochs", "1")) == 2
    assert "tiny-a changed since the run started" in capsys.readouterr().out


def _hand_made_rows() -> list[dict]:
    rows = []
    for i, (name, params, flops, meas, claim) in enumerate([
        ("000", 4_903_210, 367_100_000, 94.6, 94.0),
        ("003", 4_697_742, 800_800_000, 95.1, 96.04),
        ("004", 1_050_202, 155_400_000, None, 90.14),
        ("resnet18", 11_173_962, 556_700_000, 95.3, None),
    ]):
        row = {"recipe": name, "params": params, "flops": flops, "claimed_accuracy": claim,
               "claim_basis": "hand-made", "measured_accuracy": meas}
        if meas is not None:
            row.update(difference=None if claim is None else meas - claim, epochs_run=20, selected_epoch=20,
                       train_time_s=95.0 + i, images_per_s=10_000.0, device="cuda:0", tta="mirror_translate",
                       curve=[[e, meas * (1 - 0.5 / e)] for e in range(1, 21)])
        rows.append(row)
    return rows


def test_report_from_hand_made_results(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"run": "hand", "budget": "fast", "rows": _hand_made_rows()}))
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert ("| 003 | 4,697,742 | 800.80 M | 95.10% | mirror+translate | 96.04% | hand-made | -0.94 pp | 20 | "
            "96 s (cuda:0) | 10,000 |") in md  # the TTA level stands next to the accuracy it made
    assert "| 004 | 1,050,202 | 155.40 M | - | - | 90.14% |" in md  # not measured: no number is invented
    assert "3 of 4 recipes trained" in md
    for png in report.PLOTS.values():
        _check_png(tmp_path / png)
    out = capsys.readouterr().out
    assert "95.10%" in out and "-0.94" in out and "diff (pp)" not in out  # a two-line header: "diff" over "(pp)"


def test_report_without_results_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().out


def test_collect_rebuilds_results_from_rows(tmp_path):
    for row in _hand_made_rows()[:2]:
        (tmp_path / row["recipe"]).mkdir()
        (tmp_path / row["recipe"] / bench.RESULT).write_text(json.dumps(row))
    path = bench.collect(tmp_path)
    assert [r["recipe"] for r in json.loads(path.read_text())["rows"]] == ["000", "003"]


@pytest.mark.parametrize("epochs, panels", [(1, 1), (3, 1), (20, 2)])
def test_curves_have_whole_epoch_ticks_and_zoom_only_long_runs(epochs, panels):
    rows = [{"recipe": name, "curve": [[e, 50 + e + k] for e in range(1, epochs + 1)]} for k, name in enumerate("ab")]
    fig = report.curves_figure(rows)
    try:
        assert len(fig.axes) == panels
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert fig.axes[0].get_xlim() == (0.5, epochs + 0.5)
    finally:
        report._plt().close(fig)
    assert report.curves_figure([{"recipe": "a"}]) is None


def _wide_rows() -> list[dict]:
    """The widest values a real run gives: long names, 8-digit params, a best epoch, minutes, a diff."""
    rows = _hand_made_rows()
    rows[1].update(recipe="ours-l1-prune", params=11_173_962, epochs_run=150, selected_epoch=142, train_time_s=1990.0,
                   difference=-80.14, claim_basis="maximum test accuracy over the 200 epochs, as the report says")
    return rows


def _render(renderable, width: int) -> str:
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", [100, 110, 120])
def test_tables_keep_every_number_whole_at_terminal_widths(width):
    rows = _wide_rows()
    text = _render(report.table(rows, width=width), width)
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
    for value in ("ours-l1-prune", "11,173,962", "4,903,210", "800.80 M", "95.10%", "96.04%", "-80.14",
                  "150 (best 142)", "33.2 min", "10,000"):
        assert value in text, value
    dropped = "Left out at this width" in text  # the prose column: dropped when narrow, never squashed
    assert dropped == (width < 120) and ("maximum test accuracy" in text) != dropped
    assert "diff: measured - claimed" in " ".join(text.split())

    dry = [{"recipe": r["recipe"], "params": r["params"], "flops": r["flops"], "claimed_params": r["params"],
            "params_match": True, "claimed_accuracy": r["claimed_accuracy"], "claim_basis": r["claim_basis"],
            "under_budget": r["params"] <= 5_000_000} for r in rows]
    text = " ".join(_render(report.dry_run_table(dry, width=width), width).split())
    assert "…" not in text and "how the paper chose it" in text and "11,173,962" in text and "800.8 M" in text
    assert report.MATCH_NOTE in text and report.BUDGET_NOTE in text  # `match` and `< 5M` explained

    from test_deploy import _latency_rows  # with the four measured-speed columns: columns go, numbers stay whole

    text = _render(report.table(_latency_rows(), width=width), width)
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
    assert all(v in text for v in ("11,173,962", "556.65 M", "94.50%", "10.0 ms", "2.00x / 1.25x"))


def test_accuracy_plot_legend_covers_no_marker():
    fig = report.accuracy_figure(_wide_rows(), "params", title="t")
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1  # outside the axes, on the right
        for collection in ax.collections:
            for x, y in ax.transData.transform(collection.get_offsets()):
                assert not legend.contains(x, y)
    finally:
        report._plt().close(fig)


def test_titles_say_the_budget_and_the_epochs_actually_run(tiny, tmp_path):
    assert main(_args(tiny, tmp_path / "run", "tiny-a", "--epochs", "1", "--train-images", "48")) == 0
    label = report.run_label(report.load_results(tmp_path / "run"))
    assert label == "budget fast, 1 epoch, at most 2 steps per epoch, data: synthetic"
    md = (tmp_path / "run" / "report.md").read_text()
    assert "synthetic (48 train / 32 test images" in md
    assert report.run_label({"budget": "paper", "rows": [{"epochs_run": 3}, {"epochs_run": 5}], "overrides": {"lr": 0.1},
                             "data": {"name": "CIFAR-10", "train": 5000, "test": 10000}}) == \
        "budget paper, 3-5 epochs, lr 0.1, 5,000 train / 10,000 test images"


def test_seconds_per_epoch_is_the_median_and_old_rows_get_it_from_their_history(tmp_path):
    from compress.runfolder import RunFolder
    from compress.training.outputs import median_epoch_s

    assert median_epoch_s([{"epoch_time_s": t} for t in (1538, 798, 399, 390, 401)]) == 401.0  # pauses don't move it
    assert median_epoch_s([{"epoch_time_s": 10}, {"epoch_time_s": 20}]) == 15.0 and median_epoch_s([{}]) is None
    folder = RunFolder(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "compress.run/1", "recipes": {"old": "x"}, "budget": "fast"}))
    recipe = folder.recipe("old")
    recipe.path.mkdir()
    row = {"recipe": "old", "params": 10, "flops": 100, "measured_accuracy": 50.0, "epochs_run": 3, "train_time_s": 3000.0}
    recipe.row.write_text(json.dumps(row))
    recipe.history.write_text(json.dumps([{"epoch": e, "epoch_time_s": t} for e, t in ((1, 2000.0), (2, 500.0), (3, 510.0))]))
    results = json.loads(folder.write_results().read_text())
    assert results["rows"][0]["epoch_time_s"] == 510.0 and "epoch_time_s" not in json.loads(recipe.row.read_text())
    md = report.markdown(results)
    assert "| s/epoch |" in md and "| 510 |" in md
    assert "| s/epoch |" not in report.markdown({"rows": [row]})  # no row has it: no column
