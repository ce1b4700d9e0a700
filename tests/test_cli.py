"""compress-bench: --help, the dry run over every bundled recipe, the no-GPU/no-data fallback, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress import recipes
from compress.cli import build_parser, main

from conftest import EXPECTED_PARAMS

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


TINY = """\
name: {name}
source: a tiny recipe for tests
model:
  - remove_stage: {{index: 3}}
  - scale_width: {{factor: 0.125}}
  - redistribute_blocks: {{blocks: [1, 1, 1]}}
train: {{epochs: 1, batch_size: 16, amp: none, channels_last: false, schedule: {{name: cosine}}}}
claims: {{params: 1, accuracy: 50.0, accuracy_basis: made up}}
"""


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
    out = tmp_path / "dry.json"
    assert main(["--dry-run", "--recipes-dir", str(RECIPES), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == len(recipes.recipe_paths(RECIPES)) == len(EXPECTED_PARAMS)
    by_name = {r["recipe"]: r for r in rows}
    assert {n: r["params"] for n, r in by_name.items()} == EXPECTED_PARAMS
    assert all(r["params_match"] for r in rows)
    assert by_name["003"]["claimed_accuracy"] == 96.04 and by_name["003"]["claim_basis"]
    assert not by_name["resnet18"]["under_budget"] and by_name["004"]["under_budget"]
    assert all(r["flops"] > 0 for r in rows)
    text = capsys.readouterr().out
    assert "4,903,210" in text and "claimed" in text


def test_bare_command_falls_back_to_dry_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "tiny.yaml").write_text(TINY.format(name="tiny"))
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
    (tmp_path / "tiny.yaml").write_text(TINY.format(name="tiny"))
    code = main([str(tmp_path / "tiny.yaml"), "--device", "cpu", "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "error" in capsys.readouterr().out



def test_dry_run_reports_progress_and_builds_on_one_thread(monkeypatch):
    # Building is many batch-1 passes: on a busy 2-core CPU one thread is several times faster than two
    # (the 8-recipe dry run: 45 s -> 5 s), so the dry run counts on one thread and restores the caller's count.
    import yaml

    from compress import bench

    tiny = [recipes.from_mapping(yaml.safe_load(TINY.format(name=n))) for n in ("a", "b")]
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
