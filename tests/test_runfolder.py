"""Run folders under mistakes and faults: checked before anything is written, one-line errors, a lock,
atomic files, no diverged number reported, and no failed run that poisons its folder (issue 13)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from compress import bench, files, report
from compress.cli import main

from recipe_text import tiny_recipe
from test_files import disk_full_for


def _tiny(name: str, lr: str) -> str:
    return tiny_recipe(name, extra="fast: {epochs: 1, batch_size: 16, amp: none, channels_last: false, "
                                   f"optimizer: {{lr: {lr}, decoupled: false}}, schedule: {{name: constant}}}}\n")


def _recipe(folder: Path, name: str = "tiny", lr: str = "0.05") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(_tiny(name, lr))
    return path


def _cmd(recipe: Path, out: Path, *extra: str, data: str = "synthetic:48:16") -> list[str]:
    return [str(recipe), "--out", str(out), "--data", data, "--device", "cpu", "--max-steps-per-epoch", "1",
            "--no-progress", *extra]


def _errors(text: str) -> list[str]:
    """The error lines of a command's output; there must be no traceback."""
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if line.startswith("error:")]


def _npz(path: Path, n_train: int = 32, n_test: int = 16, seed: int = 0, **change) -> Path:
    rng = np.random.default_rng(seed)
    arrays = dict(train_x=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), train_y=np.arange(n_train) % 10,
                  test_x=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), test_y=np.arange(n_test) % 10)
    np.savez(path, **{**arrays, **change})
    return path


def _strict_json(folder: Path) -> None:
    def refuse(token):
        raise AssertionError(f"{token} in a JSON file")

    for p in folder.rglob("*.json"):
        json.loads(p.read_text(), parse_constant=refuse)


# finding 1 -----------------------------------------------------------------------------------------
def test_diverged_run_exits_nonzero_with_one_line_and_no_number(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r", lr="1.0e+6")
    out = tmp_path / "run"
    assert main(_cmd(recipe, out)) == 1
    (line,) = _errors(capsys.readouterr().out)
    assert line.startswith("error: tiny: training diverged:") and "Lower the learning rate" in line
    assert not (out / "tiny" / "row.json").exists() and not (out / "results.json").exists()
    _strict_json(out)
    # nothing had been trained: the corrected recipe runs in the same folder (it is not poisoned)
    _recipe(tmp_path / "r", lr="0.05")
    assert main(_cmd(recipe, out)) == 0
    row = json.loads((out / "tiny" / "row.json").read_text())
    assert 0 <= row["measured_accuracy"] <= 100
    _strict_json(out)


# finding 7 -----------------------------------------------------------------------------------------
def test_bad_inputs_write_nothing(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(_cmd(recipe, out, "--epochs", "0"))
    assert e.value.code == 2 and "--epochs: expected a positive integer, got 0" in capsys.readouterr().err
    cases = {
        "synthetic:0": "expected synthetic[:N_TRAIN[:N_TEST]] with image counts from 1 to 200,000",
        str(_npz(tmp_path / "eleven.npz", train_y=np.arange(32) % 11)): "the model predicts 10 classes but the data",
        str(_npz(tmp_path / "few.npz", classes=np.array(list("abcde")))): "labels span 0..9 but there are 5 classes",
        str(_npz(tmp_path / "lengths.npz", test_y=np.arange(15) % 10)): "test_y must be int64 of length 16",
        str(_npz(tmp_path / "gray.npz", train_x=np.zeros((32, 32, 32, 1), np.uint8),
                 test_x=np.zeros((16, 32, 32, 1), np.uint8))): "the images have 1 channel(s)",
        str(_npz(tmp_path / "notest.npz", n_test=0)): "has no test images",
    }
    for data, message in cases.items():
        assert main(_cmd(recipe, out, data=data)) == 2, data
        (line,) = _errors(capsys.readouterr().out)
        assert message in line, (message, line)
        assert not out.exists(), f"{data} left a run folder behind"
    (tmp_path / "r" / "tiny.yaml").write_text(_tiny("tiny", "0.05").replace("batch_size: 16", "batch_size: 0"))
    assert main(_cmd(recipe, out)) == 2
    assert "batch_size must be an integer >= 1, got 0" in _errors(capsys.readouterr().out)[0]
    assert not out.exists()


# finding 8 -----------------------------------------------------------------------------------------
def test_user_mistakes_about_the_folder_are_one_line_errors(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "binary.yaml").write_bytes(b"\x00\x9f\x92\x96")
    for cmd, message in [
        (_cmd(recipe, tmp_path / "a-file"), "is a file, not a folder; --out takes a run folder"),
        (_cmd(recipe, tmp_path / "a-file" / "run"), "cannot use"),
        (_cmd(tmp_path / "binary.yaml", tmp_path / "run"), "binary.yaml: not a text file"),
        ([str(recipe)] + _cmd(recipe, tmp_path / "run"), "recipe 'tiny' is given more than once"),
        (_cmd(recipe, tmp_path / "run") + ["--json", str(tmp_path)], "is a folder; it takes the path of a file"),
    ]:
        assert main(cmd) == 2, cmd
        (line,) = _errors(capsys.readouterr().out)
        assert message in line, (message, line)
    assert not (tmp_path / "run").exists()
    run = tmp_path / "corrupt"
    run.mkdir()
    (run / "manifest.json").write_text('{"format": "compress.run/1", "reci')
    assert main(_cmd(recipe, run)) == 2
    (line,) = _errors(capsys.readouterr().out)
    assert "manifest.json (the run's manifest) cannot be read" in line


def test_full_disk_is_named_and_the_folder_resumes(tmp_path, monkeypatch, capsys):
    recipe = _recipe(tmp_path / "r")
    out = tmp_path / "run"
    disk_full_for(monkeypatch, "checkpoint.pt")
    assert main(_cmd(recipe, out)) == 1
    (line,) = _errors(capsys.readouterr().out)
    assert f"cannot write {out / 'tiny' / 'checkpoint.pt'}: No space left on device" in line
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.undo()  # space again: the same command finishes the run
    assert main(_cmd(recipe, out)) == 0
    assert (out / "tiny" / "row.json").is_file()


# finding 9 -----------------------------------------------------------------------------------------
def test_a_second_process_on_the_folder_is_refused(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r")
    out = tmp_path / "run"
    with files.lock_folder(out):  # held through another open file: to flock, a separate process
        assert main(_cmd(recipe, out)) == 2
    (line,) = _errors(capsys.readouterr().out)
    assert f"run folder {out} is in use by another process" in line
    assert sorted(p.name for p in out.iterdir()) == [files.LOCK]  # nothing else written


def test_leftovers_of_a_kill_do_not_block_the_folder(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".manifest.json.ab12cd_9.tmp").write_text('{"half": ')  # a kill mid-write
    assert main(_cmd(recipe, out)) == 0
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert json.loads((out / "manifest.json").read_text())["recipes"].keys() == {"tiny"}


def test_report_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    import matplotlib.figure

    out = tmp_path / "run"
    out.mkdir()
    rows = [{"recipe": "a", "params": 1_000_000, "flops": 10_000_000, "measured_accuracy": 50.0,
             "claimed_accuracy": 60.0, "curve": [[1, 40.0], [2, 50.0]]}]
    files.write_json(out / "results.json", {"rows": rows, "budget": "fast"})
    assert main(["report", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in report.PLOTS.values()}
    real = matplotlib.figure.Figure.savefig

    def disk_fills_mid_plot(self, target, **kwargs):  # half the PNG reaches the disk, then it is full
        import io

        buf = io.BytesIO()
        real(self, buf, **{**kwargs, "format": "png"})
        if hasattr(target, "write"):
            target.write(buf.getvalue()[:200])
        else:
            Path(target).write_bytes(buf.getvalue()[:200])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_fills_mid_plot)
    assert main(["report", str(out)]) == 1
    (line,) = _errors(capsys.readouterr().out)
    assert "accuracy_vs_params.png: No space left on device" in line
    assert {name: (out / name).read_bytes() for name in report.PLOTS.values()} == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# finding 6 -----------------------------------------------------------------------------------------
def test_other_data_of_the_same_size_is_refused_and_a_moved_file_is_named(tmp_path, capsys):
    recipe = _recipe(tmp_path / "r")
    out = tmp_path / "run"
    first = _npz(tmp_path / "first.npz", seed=0)
    assert main(_cmd(recipe, out, data=str(first))) == 0
    same_size = _npz(tmp_path / "second.npz", seed=1)
    capsys.readouterr()
    assert main(_cmd(recipe, out, data=str(same_size))) == 2
    (line,) = _errors(capsys.readouterr().out)
    assert "this command gives different images of the same size: second (32 / 16)" in line
    moved = tmp_path / "moved.npz"
    moved.write_bytes(first.read_bytes())
    assert main(_cmd(recipe, out, data=str(moved))) == 0  # the same images from another place: fine
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["source"] == str(moved) and results["data"]["name"] == "moved"
    assert f"from `{moved}`" in (out / "report.md").read_text()


def test_run_api_checks_before_writing(tmp_path):
    from compress.data import synthetic
    from compress.recipes import load

    recipe = load(_recipe(tmp_path / "r"))
    with pytest.raises(bench.TrainingError, match="tiny: epochs must be an integer >= 1, got 0"):
        bench.run([recipe], tmp_path / "run", synthetic(32, 8), epochs=0, device="cpu", progress=False)
    with pytest.raises(bench.RecipeError, match="given more than once"):
        bench.run([recipe, recipe], tmp_path / "run", synthetic(32, 8), device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


# the run folder's type (RunFolder, Row, the comparable rule) ---------------------------------------
def test_run_folder_paths_are_the_files_a_run_writes(tmp_path, capsys):
    from compress.runfolder import RunFolder

    recipe = _recipe(tmp_path / "r")
    out = tmp_path / "run"
    assert main(_cmd(recipe, out)) == 0
    run = RunFolder(out)
    tiny = run.recipe("tiny")
    for path in (run.manifest, run.results, run.report, run.plot("params"), run.plot("flops"), run.plot("curves"),
                 tiny.row, tiny.result, tiny.checkpoint, tiny.model, tiny.history, tiny.recipe_copy):
        assert path.is_file(), path
    assert not tiny.plan.exists() and not run.plot("latency").exists()  # no time budget, no latency measured
    assert run.lock_file.is_file() and tiny.finished and tiny.started and tiny.name == "tiny"
    assert set(run.finished()) == {"tiny"} and run.listed_order() == ["tiny"]
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    named = {p.relative_to(out).as_posix() for p in (run.manifest, run.results, run.report, run.lock_file, tiny.row,
                                                      tiny.result, tiny.checkpoint, tiny.model, tiny.history,
                                                      tiny.recipe_copy, *(run.plot(k) for k in ("params", "flops", "curves")))}
    assert written == named  # every file of the folder has its name in RunFolder, and nothing else is written
    assert tiny.read_row().to_dict() == json.loads(tiny.row.read_text())
    with pytest.raises(ValueError, match="no plot 'x'"):
        run.plot("x")
    fresh = RunFolder(tmp_path / "new").recipe("a")
    assert not fresh.started and not fresh.finished


def test_row_round_trips_byte_for_byte_and_refuses_a_bad_number(tmp_path, capsys):
    from compress.runfolder import Row

    recipe = _recipe(tmp_path / "r")
    out = tmp_path / "run"
    assert main(_cmd(recipe, out)) == 0
    text = (out / "tiny" / "row.json").read_text()
    row = Row.from_dict(json.loads(text))
    assert row.recipe == "tiny" and row.epochs_run == 1 and 0 <= row.measured_accuracy <= 100
    assert row.difference is None and row.get("no_difference_because").startswith("trained on synthetic")
    rewritten = files.write_json(tmp_path / "again.json", row.to_dict()).read_text()
    assert rewritten == text  # the same keys in the same order: files of earlier versions pass through unchanged
    old = {"recipe": "old", "measured_accuracy": 90.0, "a key of a later version": [1, 2]}
    assert Row.from_dict(old).to_dict() == old and list(Row.from_dict(old).to_dict()) == list(old)
    copy = row.to_dict()
    copy["curve"].append([99, 1.0])
    assert row.to_dict()["curve"] != copy["curve"]  # a row is read-only: its dict is a copy
    with pytest.raises(ValueError, match="measured_accuracy is 101.0, outside 0..100"):
        Row.from_dict({"recipe": "x", "measured_accuracy": 101.0})
    with pytest.raises(ValueError, match="a row is a JSON object, got a list"):
        Row.from_dict([1, 2])


def test_result_rows_get_a_difference_only_where_the_one_rule_allows(tmp_path):
    from compress.recipes import load
    from compress.runfolder import Row, comparable

    recipe = load(_recipe(tmp_path / "r"))  # claims 50.0% (recipe_text's made-up claim)
    cifar = {"name": "CIFAR-10", "train": 50_000, "test": 10_000}
    assert comparable(recipe, "paper", cifar) is None
    assert comparable(recipe, "fast", cifar).startswith("the fast budget")
    assert comparable(recipe, "paper", {**cifar, "train": 5_000}) == "a subset of CIFAR-10 (5,000 train / 10,000 test images)"
    assert comparable(recipe, "paper", cifar, overrides={"seed": 3}) is None  # another seed is the same experiment
    assert comparable(recipe, "paper", cifar, overrides={"lr": 0.1}) == "overridden lr 0.1"
    assert comparable(recipe, "paper", cifar, max_steps_per_epoch=2).endswith("(a smoke run)")
    assert comparable(recipe, "paper", cifar, time_budget=15) == "a 15-minute time budget"
    # evaluated only (published weights, no training): the whole test set is enough, the budget does not matter
    assert comparable(recipe, None, {**cifar, "train": 5_000}, trained=False) is None
    assert comparable(recipe, None, {**cifar, "test": 500}, trained=False) == "evaluated on 500 of CIFAR-10's 10,000 test images"
    assert bench.comparable(recipe, "paper", cifar, epochs=recipe.train.epochs + 1) == (
        f"{recipe.train.epochs + 1} epochs instead of the paper's {recipe.train.epochs}")
    with pytest.raises(ValueError, match="unknown override"):
        bench.comparable(recipe, "paper", cifar, overrides={"momentum": 0.9})
    spec = Row.spec(recipe, architecture="x", params=10, flops=20, budget_params=5)
    assert (spec.get("under_budget"), spec.get("params_match"), spec.claimed_accuracy) == (False, False, 50.0)
    prov = {"device": "cpu"}
    ok = Row.result(spec, 52.5, not_comparable=None, budget="paper", epochs_run=3, run_provenance=prov)
    assert ok.difference == 2.5 and ok.get("no_difference_because") is None
    why = comparable(recipe, "fast", cifar)
    no = Row.result(spec, 52.5, not_comparable=why, budget="fast", epochs_run=3, run_provenance=prov)
    assert no.difference is None and no.get("no_difference_because") == why
    assert list(ok.to_dict())[:12] == [*spec.to_dict(), "measured_accuracy"]


def test_run_options_are_checked_and_the_old_keywords_still_work(tmp_path):
    from compress.data import synthetic
    from compress.recipes import load

    with pytest.raises(ValueError, match="budget must be 'fast' or 'paper'"):
        bench.RunOptions(budget="slow")
    with pytest.raises(ValueError, match="a time budget fixes the epochs itself"):
        bench.RunOptions(time_budget=1.0, epochs=2)
    with pytest.raises(ValueError, match="unknown override"):
        bench.RunOptions(overrides={"momentum": 0.9})
    given = {"lr": 0.05, "seed": None}
    options = bench.RunOptions(device="cpu", progress=False, log=lambda s: None, max_steps_per_epoch=1, overrides=given)
    assert options.overrides == {"lr": 0.05} and given == {"lr": 0.05, "seed": None}  # the caller's dict is kept
    recipe = load(_recipe(tmp_path / "r"))
    a = bench.run([recipe], tmp_path / "a", synthetic(48, 16), options)
    b = bench.run([recipe], tmp_path / "b", synthetic(48, 16), device="cpu", progress=False, log=lambda s: None,
                  max_steps_per_epoch=1, overrides=given)
    keep = ("measured_accuracy", "epochs_run", "curve", "params")
    assert [{k: r[k] for k in keep} for r in a] == [{k: r[k] for k in keep} for r in b]
    c = bench.run([recipe], tmp_path / "a", synthetic(48, 16), options, log=print)  # a keyword replaces the option
    assert c == a
    with pytest.raises(TypeError):
        bench.run([recipe], tmp_path / "c", synthetic(48, 16), no_such_option=1)


def test_deploy_measure_run_is_a_deprecated_alias(tmp_path):
    from compress import deploy, runfolder

    with pytest.warns(DeprecationWarning, match="moved to compress.runfolder.measure_run"):
        with pytest.raises(FileNotFoundError, match="has no finished recipes"):
            deploy.measure_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no \*/row.json"):
        runfolder.measure_run(tmp_path)
