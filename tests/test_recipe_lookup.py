"""The built-in recipes ship inside the package (found after a regular install, from any folder), and a
user's own ./recipes adds to them instead of hiding them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from compress import recipes
from compress.cli import main
from recipe_text import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_builtin_recipes_are_inside_the_package():
    assert recipes.BUILTIN_RECIPES.parent == Path(recipes.__file__).resolve().parent
    assert {"003", "004", "resnet18"} <= {p.stem for p in recipes.recipe_paths(recipes.BUILTIN_RECIPES)}


def test_local_recipes_add_to_the_builtin_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPRESS_RECIPES", raising=False)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(tiny_recipe("mine"))
    names = [p.stem for p in recipes.recipe_paths()]
    assert "mine" in names and "004" in names and names == sorted(names)
    assert recipes.find("004") == recipes.BUILTIN_RECIPES / "004.yaml"
    assert recipes.find("mine") == tmp_path / "recipes" / "mine.yaml"
    out = tmp_path / "rows.json"
    assert main(["--dry-run", "recipes/mine.yaml", "004", "--json", str(out)]) == 0
    assert [r["recipe"] for r in json.loads(out.read_text())["rows"]] == ["mine", "004"]
    # one of the same name stands in for the built-in one; --recipes-dir is that folder only
    (tmp_path / "recipes" / "004.yaml").write_text(tiny_recipe("004"))
    assert recipes.find("004") == tmp_path / "recipes" / "004.yaml"
    assert [p.stem for p in recipes.recipe_paths()].count("004") == 1
    assert [p.stem for p in recipes.recipe_paths(tmp_path / "recipes")] == ["004", "mine"]


def test_a_regular_install_finds_the_recipes_from_any_folder(tmp_path):
    """The wheel `pip install .` would install holds the recipes, and `compress-bench` run from that install,
    in a folder without recipes, finds them (no editable install, no source checkout on the path)."""
    if shutil.which("pip") is None and subprocess.run([sys.executable, "-m", "pip", "--version"],
                                                       capture_output=True).returncode != 0:
        pytest.skip("pip is not available")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "benchmarks", "tests", "docs",
                                                              "__pycache__", "*.egg-info", "build"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1:]}")
    wheel, = (tmp_path / "dist").glob("compress-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    assert "compress/recipes_data/004.yaml" in names and "compress/recipes_data/report003-b2x2-c64-k3.yaml" in names
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("COMPRESS_RECIPES", "PYTHONPATH")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    run = subprocess.run([sys.executable, "-m", "compress", "--dry-run", "004", "--json", "-"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["rows"][0]["recipe"] == "004"
