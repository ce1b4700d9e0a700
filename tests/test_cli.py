"""compress-bench: --help, the dry run over every bundled recipe, the no-GPU/no-data fallback, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress import recipes
from compress.cli import build_parser, main

from conftest import EXPECTED_PARAMS
from recipe_text import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = recipes.BUILTIN_RECIPES


def tiny_text(name: str) -> str:
    """A tiny recipe (ResNet at 1/8 width, cosine schedule) named ``name``."""
    return tiny_recipe(name, width="0.125", train=", schedule: {name: cosine}")


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, f"{action.dest} has no help"
    assert "report RUN_DIR" in text and "fast budget" in text


def test_dry_run_all_recipes(tmp_path, capsys):
    import time

    out = tmp_path / "dry.json"
    cpu = time.process_time()
    assert main(["--dry-run", "--recipes-dir", str(RECIPES), "--json", str(out)]) == 0
    cpu = time.process_time() - cpu
    # CPU seconds (all threads), not wall time, so a busy machine does not fail it: building and counting
    # all 8 recipes took 4-6 CPU s on the 2-core machine on one thread, 24 s on torch's two threads
    assert cpu < 15, f"the dry run took {cpu:.1f} CPU s"
    rows = json.loads(out.read_text())["rows"]
    assert len(recipes.recipe_paths(RECIPES)) == len(EXPECTED_PARAMS)
    # a recipe whose published weights are neither here nor downloadable is left out, saying so
    loaded = [recipes.load(p) for p in recipes.recipe_paths(RECIPES)]
    present = {r.name for r in loaded if r.weights is None or r.weights_path().is_file()}
    by_name = {r["recipe"]: r for r in rows}
    assert {n: r["params"] for n, r in by_name.items()} == {n: p for n, p in EXPECTED_PARAMS.items() if n in present}
    assert len(present) >= 8  # the recipes built from ResNet-18 alone never need a file
    assert all(r["params_match"] for r in rows)
    assert by_name["003"]["claimed_accuracy"] == 96.04 and by_name["003"]["claim_basis"]
    assert not by_name["resnet18"]["under_budget"] and by_name["004"]["under_budget"]
    assert all(r["flops"] > 0 for r in rows)
    text = capsys.readouterr().out
    assert "4,903,210" in text and "claimed" in text
    if len(present) < len(loaded):
        assert "skipping" in text and "cannot be downloaded" in text


def test_bare_command_falls_back_to_dry_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "tiny.yaml").write_text(tiny_text("tiny"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPRESS_DATA", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--recipes-dir", "r"]) == 0
    lines = capsys.readouterr().out.splitlines()
    reason = [ln for ln in lines if "showing the dry run instead" in ln]
    assert len(reason) == 1 and "no GPU and no dataset" in reason[0]
    assert not (tmp_path / "runs").exists()


def test_unknown_recipe_is_a_clear_error(capsys):
    assert main(["--dry-run", "--recipes-dir", str(RECIPES), "nope"]) == 2
    out = capsys.readouterr().out
    assert "no recipe 'nope'" in out and "003" in out


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(tiny_text("tiny"))
    code = main([str(tmp_path / "tiny.yaml"), "--device", "cpu", "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "error" in capsys.readouterr().out



def test_dry_run_reports_progress_and_builds_on_one_thread(monkeypatch):
    # Building is many batch-1 passes: on a busy 2-core CPU one thread is several times faster than two
    # (the 8-recipe dry run: 45 s -> 5 s), so the dry run counts on one thread and restores the caller's count.
    import yaml

    from compress import bench

    tiny = [recipes.from_mapping(yaml.safe_load(tiny_text(n))) for n in ("a", "b")]
    real, seen, calls = bench.count_flops, [], []
    monkeypatch.setattr(bench, "count_flops", lambda m: (seen.append(torch.get_num_threads()), real(m))[1])
    with bench.torch_threads(2):
        rows = bench.dry_run(tiny, on_recipe=lambda *a: calls.append(a))
        assert torch.get_num_threads() == 2
    assert seen == [1, 1] and [r["recipe"] for r in rows] == ["a", "b"]
    assert calls == [(0, 2, "a"), (1, 2, "b"), (2, 2, "")]
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        with bench.torch_threads(0):
            pass


# CLI habits ---------------------------------------------------------------------------------------
def _tiny_dir(tmp_path: Path) -> Path:
    d = tmp_path / "r"
    d.mkdir(exist_ok=True)
    (d / "tiny.yaml").write_text(tiny_text("tiny"))
    return d


def test_json_dash_prints_the_rows_to_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--dry-run", "--recipes-dir", str(_tiny_dir(tmp_path)), "--json", "-"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # stdout holds the JSON and nothing else
    assert payload["mode"] == "dry-run" and [r["recipe"] for r in payload["rows"]] == ["tiny"]
    assert "claimed" in captured.err and "match:" in captured.err  # the table went to stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("device, cuda, message", [
    ("gpu", False, "--device 'gpu' is not a device; accepted: cpu, cuda, cuda:N, mps"),
    ("cuda", False, "--device 'cuda': torch sees no CUDA GPU on this machine; use cpu"),
    ("cuda:3", True, "--device 'cuda:3': this machine has 1 CUDA device(s), cuda:0 to cuda:0"),
])
def test_device_is_checked_before_anything_is_written(tmp_path, monkeypatch, capsys, device, cuda, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    with pytest.raises(SystemExit) as e:
        main([str(_tiny_dir(tmp_path) / "tiny.yaml"), "--device", device, "--data", "synthetic:64:32", "--out", "run"])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no run folder, no data folder


def test_dataset_errors_name_the_cli_flag(tmp_path, capsys):
    code = main([str(_tiny_dir(tmp_path) / "tiny.yaml"), "--device", "cpu", "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "run")])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2 and "--download to fetch CIFAR-10" in out and "download=True" not in out
    assert not (tmp_path / "run").exists()


def test_failed_download_leaves_no_data_folder(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(root, train=True, download=False):  # what torchvision does offline: make the folder, then fail
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"")
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPRESS_DATA", raising=False)
    assert main([str(_tiny_dir(tmp_path) / "tiny.yaml"), "--device", "cpu", "--download", "--out", "run"]) == 2
    assert "could not download CIFAR-10" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()
    from compress import bench

    (tmp_path / "data").mkdir()  # an empty ./data is no dataset either
    assert bench.find_dataset() is None


def test_report_of_a_missing_folder_names_it(tmp_path, capsys):
    assert main(["report", str(tmp_path / "runs" / "nope")]) == 2
    assert f"no run folder {tmp_path / 'runs' / 'nope'}: it does not exist" in " ".join(capsys.readouterr().out.split())
    assert main(["report", str(tmp_path)]) == 2
    assert f"no results in {tmp_path}: it has no results.json yet" in " ".join(capsys.readouterr().out.split())


def test_fallback_line_mentions_device_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPRESS_DATA", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--recipes-dir", str(_tiny_dir(tmp_path)), "--data", "synthetic"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "showing the dry run instead" in ln]
    assert line == "compress-bench: no GPU (pass --device cpu to train on the CPU anyway); showing the dry run instead."


def _run_args(tmp_path: Path, *extra: str) -> list[str]:
    return [str(_tiny_dir(tmp_path) / "tiny.yaml"), "--device", "cpu", "--data", "synthetic:64:32", "--no-progress",
            "--out", str(tmp_path / "run"), "--max-steps-per-epoch", "2", *extra]


def test_overrides_are_recorded_and_a_resume_with_other_ones_is_refused(tmp_path, capsys):
    assert main(_run_args(tmp_path, "--batch-size", "8", "--lr", "0.05", "--seed", "3", "--threads", "1")) == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["overrides"] == {"batch_size": 8, "lr": 0.05, "seed": 3} and manifest["threads"] == 1
    config = torch.load(tmp_path / "run" / "tiny" / "checkpoint.pt", weights_only=True)["config"]
    assert (config["batch_size"], config["optimizer"]["lr"], config["seed"]) == (8, 0.05, 3)
    row = json.loads((tmp_path / "run" / "tiny" / "row.json").read_text())
    assert row["precision"]["threads"] == 1
    capsys.readouterr()
    assert main(_run_args(tmp_path, "--batch-size", "16", "--lr", "0.05", "--seed", "3")) == 2
    msg = " ".join(capsys.readouterr().out.split())
    assert "it was run with --batch-size 8 --lr 0.05 --seed 3, this command gives --batch-size 16 --lr 0.05 --seed 3" in msg
    with pytest.raises(SystemExit):
        main(_run_args(tmp_path, "--batch-size", "0"))
    assert "--batch-size: expected a positive integer, got 0" in capsys.readouterr().err


def test_train_and_test_images_take_a_subset(tmp_path, capsys):
    assert main(_run_args(tmp_path, "--train-images", "40", "--test-images", "16", "--epochs", "1")) == 0
    data = json.loads((tmp_path / "run" / "manifest.json").read_text())["data"]
    assert (data["train"], data["test"]) == (40, 16)
    assert "40 train / 16 test images" in (tmp_path / "run" / "report.md").read_text()
    capsys.readouterr()
    assert main(_run_args(tmp_path, "--train-images", "100", "--out", str(tmp_path / "other"))) == 2
    assert "--train-images 100: the dataset has 64 training images; give 1 to 64" in capsys.readouterr().out
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("command", ["run", "report", "export", "latency", "eval"])
def test_every_sub_command_has_its_own_help(command, capsys):
    from compress.cli import COMMANDS, _sub_parsers, build_command_parser

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: compress-bench {command} ")
    sub = _sub_parsers(build_command_parser())[command]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, f"{command}: {action.dest} has no help"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"compress-bench {COMMANDS[command].synopsis}" in capsys.readouterr().out  # listed in the main help


def test_run_sub_command_is_the_command_without_one(capsys):
    main_flags = {f for a in build_parser()._actions for f in a.option_strings}
    from compress.cli import _sub_parsers, build_command_parser

    run = _sub_parsers(build_command_parser())["run"]
    assert {f for a in run._actions for f in a.option_strings} == main_flags
    assert main(["run", "--dry-run", "--recipes-dir", str(RECIPES), "000"]) == 0
    with_run = capsys.readouterr().out
    assert main(["--dry-run", "--recipes-dir", str(RECIPES), "000"]) == 0
    assert capsys.readouterr().out == with_run and "000" in with_run


def test_a_sub_command_is_added_by_registering_it(capsys, monkeypatch):
    from compress import cli

    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))

    def add(p):
        p.add_argument("--n", type=int, default=1, help="how many")

    cli.register(cli.Command("hello", "hello [--n N]", "say hello", "Say hello N times.", add,
                             lambda args, parser, argv: print("hello " * args.n) or 0))
    assert main(["hello", "--n", "2"]) == 0 and capsys.readouterr().out.strip() == "hello hello"
    with pytest.raises(SystemExit):
        main(["hello", "--m"])
    assert "compress-bench hello: error: unrecognized arguments: --m" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "compress-bench hello [--n N]" in capsys.readouterr().out
    with pytest.raises(ValueError, match="already has a sub-command 'hello'"):
        cli.register(cli.Command("hello", "", "", "", add, lambda *a: 0))
