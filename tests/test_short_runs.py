"""Short runs that tell the truth: the header and the report say when the fast schedule replaced a recipe's
own training, show batch size, steps per epoch and transforms, and warn about runs too short to mean anything;
the committed run folders still render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compress import bench, recipes, report
from compress.cli import main
from compress.data import synthetic
from recipe_text import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(p.parent for p in (ROOT / "benchmarks" / "results").glob("*/results.json")  # run folders only
                   if "rows" in json.loads(p.read_text()))


def test_a_fast_smoke_run_says_what_it_ran_and_that_it_means_nothing(tmp_path):
    (tmp_path / "r").mkdir()
    path = tmp_path / "r" / "tiny.yaml"
    path.write_text(tiny_recipe("tiny", epochs=30))
    recipe = recipes.load(path)
    said = []
    rows = bench.run([recipe], tmp_path / "run", synthetic(512, 32), budget="fast", epochs=1, max_steps_per_epoch=2,
                     device="cpu", progress=False, log=said.append)
    header = next(s for s in said if s.startswith("tiny: training"))
    assert "the fast schedule replaces the recipe's own train: section (30 epochs at batch 16" in header
    assert "1 epochs x 2 steps at batch" in header
    assert any(s.startswith("warning: tiny trains for only 2 optimizer steps") for s in said)
    t = rows[0]["setup"]
    assert t["steps_per_epoch"] == 2 and t["optimizer_steps"] == 2 and t["epochs"] == 1 and t["batch_size"] >= 1
    md = (tmp_path / "run" / "report.md").read_text() if (tmp_path / "run" / "report.md").exists() else \
        report.markdown(json.loads((tmp_path / "run" / "results.json").read_text()))
    assert "## Training setup" in md and recipe.transforms_summary() in md
    assert "the fast schedule replaces" in md and "**Warning:** tiny (2 steps)" in md


def test_the_recipes_own_schedule_is_not_flagged(tmp_path):
    (tmp_path / "r").mkdir()
    path = tmp_path / "r" / "tiny.yaml"
    path.write_text(tiny_recipe("tiny"))
    said = []
    bench.run([recipes.load(path)], tmp_path / "run", synthetic(64, 32), budget="paper", epochs=1,
              max_steps_per_epoch=2, device="cpu", progress=False, log=said.append)
    header = next(s for s in said if s.startswith("tiny: training"))
    assert "replaces" not in header and "at batch 16" in header


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_run_folders_still_render(folder, tmp_path):
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    assert main(["report", str(copy)]) == 0
    md = (copy / "report.md").read_text()
    assert "## Training setup" in md
