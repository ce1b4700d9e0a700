"""Recipes that start from trained weights: path + sha256 checked, transforms applied to the imported model,
compress-bench's accuracy before compression, right after it and after fine-tuning (with distillation)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from compress import PruneConfig, bench, count_params, recipes, report
from compress import weights as published
from compress.data import synthetic
from compress.models import ResNetConfig, resnet_from_config
from compress.recipes import RecipeError

from conftest import SHARED_WEIGHTS, needs_shared

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small trained-looking checkpoint in the kuangliu layout ({'net': state dict, 'acc': ...})."""
    torch.manual_seed(0)
    model = resnet_from_config(ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))
    path = tmp_path_factory.mktemp("w") / "ckpt.pth"
    torch.save({"net": model.state_dict(), "acc": 10.0}, path)
    return path


def _recipe(folder: Path, ckpt: Path, name: str = "trained", **changes) -> Path:
    data = {
        "name": name,
        "source": "a test recipe starting from trained weights",
        "weights": {"path": str(Path("..") / ckpt.parent.name / ckpt.name), "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()},
        "model": [{"prune": {"ratios": 0.5}}],
        "train": {"epochs": 1, "batch_size": 16, "amp": "none", "channels_last": False, "eval_batch_size": 64,
                  "distill": {"temperature": 2.0, "weight": 0.5}},
        "fast": {"batch_size": 16, "amp": "none", "channels_last": False, "distill": {"temperature": 2.0, "weight": 0.5}},
        "claims": {"params": 1, "accuracy": None, "accuracy_basis": "none"},
    }
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_weights_are_checked_and_transformed(ckpt):
    r = recipes.load(_recipe(ckpt.parent.parent / "recipes", ckpt))
    assert r.weights_path().resolve() == ckpt.resolve()  # relative to the recipe file's folder
    start = r.initial_model()
    assert start.config.input_mean == (0.4914, 0.4822, 0.4465)  # the kuangliu layout's normalisation
    built = r.build()
    assert count_params(built) < count_params(start) and built.config.input_mean == start.config.input_mean
    assert r.transforms_summary().startswith("weights(ckpt.pth) -> prune(")
    other = recipes.load(_recipe(ckpt.parent.parent / "recipes", ckpt, name="other", model=[]))
    assert other.fingerprint() != r.fingerprint()


def test_prune_in_a_weights_recipe_uses_the_trained_defaults(ckpt):
    from compress import prune

    here = ckpt.parent.parent
    built = recipes.load(_recipe(here / "rt", ckpt)).build()
    start = recipes.load(_recipe(here / "rt", ckpt)).initial_model()
    expected = prune(start, PruneConfig.trained(), ratios=0.5)
    assert [p.shape for p in built.state_dict().values()] == [p.shape for p in expected.state_dict().values()]
    assert built.config.widths == start.config.widths  # residual streams kept whole
    untrained = recipes.load(_recipe(here / "ru", ckpt, model=[{"prune": {"ratios": 0.5, "trained": False}}])).build()
    assert untrained.config.widths == [w // 2 for w in start.config.widths]


def test_wrong_hash_or_missing_file(ckpt, tmp_path):
    path = _recipe(tmp_path / "r", ckpt, weights={"path": str(ckpt), "sha256": "0" * 64})
    with pytest.raises(RecipeError, match="is not the file the recipe names .*differs from 0000"):
        recipes.load(path).build()
    path = _recipe(tmp_path / "r", ckpt, weights={"path": "nope.pth", "sha256": "0" * 64})
    with pytest.raises(RecipeError, match=r"weights file .*nope\.pth not found"):
        recipes.load(path).build()
    path = _recipe(tmp_path / "r", ckpt, weights={"path": "x.pth", "sha256": "abc"})
    with pytest.raises(RecipeError, match="64 lowercase hex digits"):
        recipes.load(path)


def test_recipe_rules(ckpt, tmp_path):
    with pytest.raises(RecipeError, match="finetune: false needs weights"):
        recipes.load(_recipe(tmp_path, ckpt, weights=None, finetune=False, train=None, fast=None))
    with pytest.raises(RecipeError, match="train.distill needs a teacher"):
        recipes.load(_recipe(tmp_path, ckpt, weights=None, fast=None))
    with pytest.raises(RecipeError, match="missing required key 'train'"):
        recipes.load(_recipe(tmp_path, ckpt, train=None))
    only_eval = recipes.load(_recipe(tmp_path, ckpt, train=None, fast=None, finetune=False))
    assert not only_eval.finetune


def test_bench_reports_before_after_and_finetuned(ckpt, tmp_path):
    folder = ckpt.parent.parent / "recipes"
    trained = recipes.load(_recipe(folder, ckpt))
    evaluated = recipes.load(_recipe(folder, ckpt, name="evaluated", train=None, fast=None, finetune=False, model=[]))
    data = synthetic(64, 32)
    rows = bench.run([trained, evaluated], tmp_path / "run", data, budget="fast", epochs=1, max_steps_per_epoch=2,
                     device="cpu", progress=False, log=lambda s: None)
    by = {r["recipe"]: r for r in rows}
    t, e = by["trained"], by["evaluated"]
    assert t["accuracy_before"] == e["accuracy_before"] == e["accuracy_compressed"] == e["measured_accuracy"]
    assert t["params_before"] == e["params"] > t["params"] and t["epochs_run"] == 1 and e["epochs_run"] == 0
    assert (tmp_path / "run" / "trained" / "model.pt").is_file() and not (tmp_path / "run" / "evaluated" / "checkpoint.pt").exists()
    md = report.markdown(json.loads((tmp_path / "run" / "results.json").read_text()))
    assert "acc before compression" in md and "acc after compression" in md
    assert "1 of 2 recipes trained, 1 only evaluated" in md
    assert e["difference"] is None and "trained on synthetic" not in e["no_difference_because"]  # no claim here
    # re-running skips both
    again = bench.run([trained, evaluated], tmp_path / "run", data, budget="fast", epochs=1, max_steps_per_epoch=2,
                      device="cpu", progress=False, log=lambda s: None)
    assert again == rows


def test_bundled_evaluation_recipes_name_the_published_weights():
    names = [p.stem for p in recipes.recipe_paths(recipes.BUILTIN_RECIPES) if p.stem.startswith("report003-")]
    assert len(names) == 3
    for name in names:
        r = recipes.load(recipes.BUILTIN_RECIPES / f"{name}.yaml")
        entry = published.lookup(name)
        assert r.weights.name == name and r.weights.expected_sha256 == entry.sha256
        assert not r.finetune and r.claims.params == entry.params
        assert "../shared" not in (recipes.BUILTIN_RECIPES / f"{name}.yaml").read_text()
        if f"{name}.pth" in SHARED_WEIGHTS:
            assert r.weights_path().resolve() == SHARED_WEIGHTS[f"{name}.pth"]["path"].resolve()


def test_weights_found_by_name_in_compress_weights(ckpt, tmp_path, monkeypatch):
    path = _recipe(tmp_path / "r", ckpt, weights={"path": "elsewhere/ckpt.pth", "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()})
    monkeypatch.delenv("COMPRESS_WEIGHTS", raising=False)
    with pytest.raises(RecipeError, match="not found"):
        recipes.load(path).build()
    monkeypatch.setenv("COMPRESS_WEIGHTS", str(ckpt.parent))
    assert recipes.load(path).weights_path() == ckpt
    assert count_params(recipes.load(path).build()) > 0


def test_all_recipes_skip_those_whose_weights_are_missing(ckpt, tmp_path, monkeypatch, capsys):
    from compress.cli import main

    monkeypatch.delenv("COMPRESS_WEIGHTS", raising=False)
    _recipe(tmp_path / "r", ckpt, name="gone", weights={"path": "gone.pth", "sha256": "0" * 64})
    _recipe(tmp_path / "r", ckpt, name="here", weights={"path": str(ckpt), "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()})
    out = tmp_path / "dry.json"
    assert main(["--dry-run", "--recipes-dir", str(tmp_path / "r"), "--json", str(out)]) == 0
    assert [r["recipe"] for r in json.loads(out.read_text())["rows"]] == ["here"]
    assert "skipping gone: weights file not found" in capsys.readouterr().out
    assert main(["--dry-run", "--recipes-dir", str(tmp_path / "r"), "gone"]) == 2  # named: an error
    assert "not found" in capsys.readouterr().out


def test_time_budget_probes_a_distilled_recipe_with_its_teacher(ckpt, tmp_path):
    trained = recipes.load(_recipe(ckpt.parent.parent / "recipes", ckpt))
    assert trained.train_config("fast").distill is not None
    rows = bench.run([trained], tmp_path / "run", synthetic(64, 32), budget="fast", time_budget=0.05, device="cpu",
                     progress=False, log=lambda s: None)
    assert rows[0]["plan"]["epochs"] >= 1 and rows[0]["epochs_run"] == rows[0]["plan"]["epochs"]
    assert rows[0]["params_before"] > rows[0]["params"]


def test_an_evaluated_row_has_a_difference_only_on_the_whole_test_set(ckpt, tmp_path):
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    r = recipes.load(_recipe(tmp_path / "r", ckpt, name="claimed", weights={"path": str(ckpt), "sha256": sha}, train=None,
                             fast=None, finetune=False, model=[], claims={"params": 1, "accuracy": 50.0, "accuracy_basis": "test"}))
    model, start = r.build(), {"accuracy_compressed": 52.5}
    full = bench._evaluated_row(r, model, start, "cpu", None, {"name": "CIFAR-10", "train": 50_000, "test": 10_000})
    part = bench._evaluated_row(r, model, start, "cpu", None, {"name": "CIFAR-10", "train": 50_000, "test": 500})
    assert full["difference"] == 2.5 and full["no_difference_because"] is None and full["epochs_run"] == 0
    assert part["difference"] is None and "500 of CIFAR-10's 10,000 test images" in part["no_difference_because"]
    assert "published trained weights evaluated as they are" in report.markdown({"rows": [full], "budget": "fast"})
    assert "published trained weights evaluated" not in report.markdown({"rows": [part], "budget": "fast"})
